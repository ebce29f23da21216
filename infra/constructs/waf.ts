/**
 * A regional WAFv2 web ACL with AWS managed rule groups and a per-IP rate limit, logging to a
 * KMS-encrypted log group with the query string and the Authorization header redacted.
 */
import { RemovalPolicy, Stack } from 'aws-cdk-lib';
import type { IKey } from 'aws-cdk-lib/aws-kms';
import { LogGroup, type RetentionDays } from 'aws-cdk-lib/aws-logs';
import { CfnLoggingConfiguration, CfnWebACL, CfnWebACLAssociation } from 'aws-cdk-lib/aws-wafv2';
import { Construct } from 'constructs';

export interface RegionalWafProps {
  /** Requests per 5 minutes per client IP before blocking. Default 2000. */
  readonly rateLimitPer5Min?: number;
  readonly logKey: IKey;
  readonly logRetention: RetentionDays;
  /** ARNs to protect (API Gateway REST stages, ALBs…). */
  readonly associate: readonly string[];
}

/** AWS managed rule groups, with rules counted rather than blocked where they break FHIR traffic. */
export const MANAGED_RULE_GROUPS: readonly { name: string; countOnly?: string[] }[] = [
  // Notification bundles with full resources exceed the 8 KB body limit of SizeRestrictions_BODY.
  { name: 'AWSManagedRulesCommonRuleSet', countOnly: ['SizeRestrictions_BODY'] },
  { name: 'AWSManagedRulesKnownBadInputsRuleSet' },
  { name: 'AWSManagedRulesAmazonIpReputationList' },
];

export class RegionalWaf extends Construct {
  readonly webAcl: CfnWebACL;

  constructor(scope: Construct, id: string, props: RegionalWafProps) {
    super(scope, id);
    const metric = (name: string) => ({
      cloudWatchMetricsEnabled: true,
      sampledRequestsEnabled: false,
      metricName: `${Stack.of(this).stackName}-${id}-${name}`.replace(/[^A-Za-z0-9-]/g, '').slice(0, 128),
    });
    const rules: CfnWebACL.RuleProperty[] = MANAGED_RULE_GROUPS.map((g, priority) => ({
      name: g.name,
      priority,
      overrideAction: { none: {} },
      statement: {
        managedRuleGroupStatement: {
          vendorName: 'AWS',
          name: g.name,
          ...(g.countOnly
            ? { ruleActionOverrides: g.countOnly.map((name) => ({ name, actionToUse: { count: {} } })) }
            : {}),
        },
      },
      visibilityConfig: metric(g.name),
    }));
    rules.push({
      name: 'RatePerIp',
      priority: rules.length,
      action: { block: {} },
      statement: { rateBasedStatement: { limit: props.rateLimitPer5Min ?? 2000, aggregateKeyType: 'IP' } },
      visibilityConfig: metric('RatePerIp'),
    });
    this.webAcl = new CfnWebACL(this, 'WebAcl', {
      scope: 'REGIONAL',
      defaultAction: { allow: {} },
      rules,
      visibilityConfig: metric('WebAcl'),
    });
    props.associate.forEach((resourceArn, n) => {
      new CfnWebACLAssociation(this, `Association${n}`, { resourceArn, webAclArn: this.webAcl.attrArn });
    });
    // WAF requires the log group name to start with aws-waf-logs-.
    const logs = new LogGroup(this, 'Logs', {
      logGroupName: `aws-waf-logs-${Stack.of(this).stackName}-${id}`.slice(0, 512),
      encryptionKey: props.logKey,
      retention: props.logRetention,
      removalPolicy: RemovalPolicy.RETAIN,
    });
    new CfnLoggingConfiguration(this, 'Logging', {
      resourceArn: this.webAcl.attrArn,
      logDestinationConfigs: [logs.logGroupArn],
      redactedFields: [{ queryString: {} }, { singleHeader: { Name: 'authorization' } }],
    });
  }
}
