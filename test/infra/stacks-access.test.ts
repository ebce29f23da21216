/**
 * The full app, synthesized once (as in stacks.test.ts): least-privilege IAM over every
 * identity policy, and the two APIs (notify, partner) with their WAF, authorizers and access logs.
 */
import { Match, type Template } from 'aws-cdk-lib/assertions';
import { beforeAll, describe, expect, it } from 'vitest';
import { FORBIDDEN_ACCESS_LOG_VARIABLES } from '../../infra/constructs/access-log.js';
import { MANAGED_RULE_GROUPS } from '../../infra/constructs/waf.js';
import { build, config, resourcesOf, type Built } from './helpers.js';

let app: Built;
let all: Template[];

beforeAll(() => {
  app = build(config());
  all = [app.templates.data, app.templates.serving, app.templates.pipeline];
});

type Statement = { Effect: string; Action: string | string[]; Resource: unknown; Condition?: unknown };

/** Every statement of every identity policy (AWS::IAM::Policy and inline role policies). */
function identityStatements(): { policy: string; statement: Statement }[] {
  const out: { policy: string; statement: Statement }[] = [];
  for (const [id, p] of resourcesOf(all, 'AWS::IAM::Policy')) {
    for (const s of (p.PolicyDocument as { Statement: Statement[] }).Statement)
      out.push({ policy: id, statement: s });
  }
  for (const [id, r] of resourcesOf(all, 'AWS::IAM::Role')) {
    for (const pol of (r.Policies as { PolicyDocument: { Statement: Statement[] } }[] | undefined) ?? []) {
      for (const s of pol.PolicyDocument.Statement) out.push({ policy: id, statement: s });
    }
  }
  return out;
}
const actionsOf = (s: Statement): string[] => (Array.isArray(s.Action) ? s.Action : [s.Action]);
const resourcesOfStatement = (s: Statement): unknown[] =>
  Array.isArray(s.Resource) ? (s.Resource as unknown[]) : [s.Resource];

/**
 * Actions AWS only grants on "*": no resource-level permissions exist for them.
 * - xray: tracing (Lambda, Step Functions); cloudwatch:PutMetricData (narrowed by namespace);
 * - ecr:GetAuthorizationToken (SageMaker pulling the Triton image);
 * - logs:*Delivery*, *ResourcePolic*, DescribeLogGroups: Step Functions vended log delivery.
 */
const WILDCARD_ALLOWED = new Set([
  'xray:PutTraceSegments',
  'xray:PutTelemetryRecords',
  'xray:GetSamplingRules',
  'xray:GetSamplingTargets',
  'cloudwatch:PutMetricData',
  'ecr:GetAuthorizationToken',
  'logs:CreateLogDelivery',
  'logs:GetLogDelivery',
  'logs:UpdateLogDelivery',
  'logs:DeleteLogDelivery',
  'logs:ListLogDeliveries',
  'logs:PutResourcePolicy',
  'logs:DescribeResourcePolicies',
  'logs:DescribeLogGroups',
]);

describe('IAM: least privilege', () => {
  it('grants "*" resources only for the actions AWS offers no resource scope for', () => {
    const wildcard = identityStatements().filter(({ statement }) =>
      resourcesOfStatement(statement).some((r) => r === '*'),
    );
    const actions = new Set(wildcard.flatMap(({ statement }) => actionsOf(statement)));
    expect([...actions].filter((a) => !WILDCARD_ALLOWED.has(a))).toEqual([]);
    expect(actions.has('ecr:GetAuthorizationToken')).toBe(true);
  });

  it('never grants a service-wide action', () => {
    for (const { statement } of identityStatements()) {
      for (const a of actionsOf(statement)) expect(a).not.toMatch(/^[a-z0-9-]+:\*$|^\*$/);
    }
  });

  it('scopes sagemaker:InvokeEndpoint to the endpoint ARNs of the configured models', () => {
    const invoke = identityStatements().filter(({ statement }) =>
      actionsOf(statement).includes('sagemaker:InvokeEndpoint'),
    );
    // resource-event, partner-api and the sweep worker invoke endpoints; notify does not.
    expect(new Set(invoke.map((i) => i.policy.replace(/ServiceRoleDefaultPolicy.*/, '')))).toEqual(
      new Set(['ResourceEventFunction', 'PartnerApiFunction', 'PopulationSweepFunction']),
    );
    for (const { statement } of invoke) {
      const arns = resourcesOfStatement(statement).map((r) => JSON.stringify(r));
      expect(arns).toHaveLength(app.models.length);
      for (const m of app.models)
        expect(arns.some((a) => a.includes(`:endpoint/fhir-analytics-${m.id}`))).toBe(true);
    }
  });

  it('lets the SageMaker role read only the model repository prefix and write only the capture prefix', () => {
    const role = identityStatements().filter(({ policy }) => policy.startsWith('EndpointsExecutionRole'));
    const s3 = role.filter(({ statement }) => actionsOf(statement).some((a) => a.startsWith('s3:')));
    const objectResources = s3
      .flatMap(({ statement }) => resourcesOfStatement(statement))
      .map((r) => JSON.stringify(r));
    expect(objectResources.filter((r) => r.includes('/'))).toEqual(
      expect.arrayContaining([
        expect.stringContaining('/triton/*'),
        expect.stringContaining('/data-capture/*'),
      ]),
    );
    expect(objectResources.filter((r) => r.includes('"/*"'))).toEqual([]);
  });
});

describe('APIs', () => {
  it('notify: regional REST API, POST /notify, tracing, ERROR logging without data traces, throttled', () => {
    const p = app.templates.pipeline;
    p.hasResourceProperties('AWS::ApiGateway::RestApi', { EndpointConfiguration: { Types: ['REGIONAL'] } });
    p.hasResourceProperties('AWS::ApiGateway::Method', { HttpMethod: 'POST', AuthorizationType: 'NONE' });
    p.hasResourceProperties('AWS::ApiGateway::Stage', {
      TracingEnabled: true,
      MethodSettings: [
        Match.objectLike({
          LoggingLevel: 'ERROR',
          DataTraceEnabled: false,
          HttpMethod: '*',
          ResourcePath: '/*',
        }),
      ],
    });
  });

  it('notify: WAF with the AWS managed rule groups and a rate limit, logging with redaction', () => {
    const p = app.templates.pipeline;
    const [[, acl]] = resourcesOf([p], 'AWS::WAFv2::WebACL') as [
      [string, { Rules: { Name: string }[]; Scope: string }],
    ];
    expect(acl.Scope).toBe('REGIONAL');
    expect(acl.Rules.map((r) => r.Name)).toEqual([...MANAGED_RULE_GROUPS.map((g) => g.name), 'RatePerIp']);
    p.resourceCountIs('AWS::WAFv2::WebACLAssociation', 1);
    p.hasResourceProperties('AWS::WAFv2::LoggingConfiguration', {
      RedactedFields: [{ QueryString: {} }, { SingleHeader: { Name: 'authorization' } }],
    });
  });

  it('partner API: CDS Hooks routes verified by the function, REST routes behind one JWT authorizer per issuer', () => {
    const p = app.templates.pipeline;
    const auths = resourcesOf([p], 'AWS::ApiGatewayV2::Authorizer');
    expect(auths.map(([, a]) => (a.JwtConfiguration as { Issuer: string }).Issuer).sort()).toEqual([
      'https://ehr-a.example.org',
      'https://ehr-b.example.org/oauth',
    ]);
    for (const [, a] of auths) expect(a.AuthorizerType).toBe('JWT');
    const routes = resourcesOf([p], 'AWS::ApiGatewayV2::Route');
    const open = [
      'GET /cds-services',
      'POST /cds-services/{proxy+}',
      'GET /openapi.json',
      'GET /v1/models/{id}/card',
    ];
    const authorized = ['ehr-a', 'ehr-b'].flatMap((i) => [`GET /${i}/v1/{proxy+}`, `POST /${i}/v1/{proxy+}`]);
    expect(routes.map(([, r]) => r.RouteKey).sort()).toEqual([...open, ...authorized].sort());
    for (const [, r] of routes) {
      expect(r.AuthorizationType).toBe(authorized.includes(r.RouteKey as string) ? 'JWT' : 'NONE');
    }
  });

  it('access logs carry request id, route template, status and latency only', () => {
    const formats = [
      ...resourcesOf(all, 'AWS::ApiGateway::Stage').map(
        ([, s]) => (s.AccessLogSetting as { Format: string }).Format,
      ),
      ...resourcesOf(all, 'AWS::ApiGatewayV2::Stage').map(
        ([, s]) => (s.AccessLogSettings as { Format: string }).Format,
      ),
    ];
    expect(formats).toHaveLength(2);
    for (const f of formats) {
      expect(Object.keys(JSON.parse(f) as object)).toEqual([
        'requestId',
        'route',
        'status',
        'latencyMs',
        'integrationLatencyMs',
      ]);
      for (const v of FORBIDDEN_ACCESS_LOG_VARIABLES) expect(f).not.toContain(v);
    }
  });
});
