/**
 * cdk-nag HIPAA Security on the whole app. `cdk synth` fails on any unacknowledged finding
 * (the v3 pack is a CDK policy-validation plugin); tests call `nagReport(app)` for the same
 * findings as data. Every acknowledgement sits on the narrowest construct, with its reason.
 */
import { Validations, type App } from 'aws-cdk-lib';
import { HIPAASecurityChecks } from 'cdk-nag';
import type { IConstruct } from 'constructs';

export interface NagFinding {
  readonly rule: string;
  readonly severity: string;
  readonly paths: readonly string[];
}

/** Registers the HIPAA pack; acknowledged rules are written into template metadata for audit. */
export function addHipaaChecks(app: App): void {
  Validations.of(app).addPlugins(
    new HIPAASecurityChecks(app, { verbose: true, writeSuppressionsToCloudFormation: true }),
  );
}

/** The unacknowledged HIPAA findings of a construct tree (empty when compliant). */
export function nagFindings(scope: IConstruct): NagFinding[] {
  const report = new HIPAASecurityChecks(undefined, { verbose: true }).validateScope(scope);
  return report.violations.map((v) => ({
    rule: v.ruleName,
    severity: v.severity ?? 'error',
    paths: v.violatingResources.map((r) => r.constructPath ?? r.resourceLogicalId ?? '?'),
  }));
}

/** Every acknowledgement recorded in a construct tree: `{ path, rule, reason }`. */
export function acknowledgements(scope: IConstruct): { path: string; rule: string; reason: string }[] {
  const out: { path: string; rule: string; reason: string }[] = [];
  for (const c of scope.node.findAll()) {
    for (const entry of c.node.metadata) {
      if (entry.type !== Validations.ACKNOWLEDGED_RULES_METADATA_KEY || !entry.data) continue;
      for (const [rule, reason] of Object.entries(entry.data as Record<string, string>)) {
        out.push({ path: c.node.path, rule: rule.replace(/^annotation::/i, ''), reason });
      }
    }
  }
  return out;
}
