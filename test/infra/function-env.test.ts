/**
 * The environment infra gives the functions is the one they read: every variable name set on
 * resource-event, notify and partner-api is a name of `shared/config.ts` (`ENV`), and the
 * functions' own loaders accept the values (CloudFormation references replaced by values of
 * their shape). Also: the FHIR credentials grant is GetSecretValue on the one secret only.
 *
 * The sweep functions are checked in sweep.test.ts: they also read shared/sweep/config.ts.
 */
import { describe, expect, it } from 'vitest';
import { ENV, fhirAuthMode, loadConfig } from '../../shared/config.js';
import { createJsonAuthStore } from '../../shared/notify/auth.js';
import { partnerSettings } from '../../shared/partner/index.js';
import { build, config, NO_BUNDLING, resourcesOf, TEST_MODELS, type Built } from './helpers.js';

/** Read by Node.js itself, not by our code. */
const RUNTIME_NAMES = new Set(['NODE_OPTIONS']);
const FUNCTIONS = ['ResourceEventFunction', 'NotifyFunction', 'PartnerApiFunction'];
const SECRET_ARN = 'arn:aws:secretsmanager:us-east-1:123456789012:secret:FhirCredentials-AbCdEf';

/** A value of the right shape for a CloudFormation reference, by variable name. */
const SAMPLE: Record<string, string> = {
  QUEUE_URL: 'https://sqs.us-east-1.amazonaws.com/123456789012/events.fifo',
  EVENT_STATE_TABLE: 'FhirAnalyticsData-EventState',
  FHIR_CREDENTIALS_SECRET_ARN: SECRET_ARN,
  NOTIFY_AUDIENCE: 'https://abc123.execute-api.us-east-1.amazonaws.com/v1/notify',
  PARTNER_PUBLIC_BASE_URL: 'https://def456.execute-api.us-east-1.amazonaws.com/v1',
};

function environments(app: Built): Map<string, Record<string, unknown>> {
  const out = new Map<string, Record<string, unknown>>();
  for (const [id, fn] of resourcesOf([app.templates.pipeline], 'AWS::Lambda::Function')) {
    const name = FUNCTIONS.find((f) => id.startsWith(f));
    if (name) out.set(name, (fn.Environment as { Variables: Record<string, unknown> }).Variables);
  }
  return out;
}

function asEnv(vars: Record<string, unknown>): Record<string, string> {
  return Object.fromEntries(
    Object.entries(vars).map(([k, v]) => [k, typeof v === 'string' ? v : (SAMPLE[k] ?? `unresolved ${k}`)]),
  );
}

describe.each([
  [
    'SMART Backend Services, per-model endpoints',
    'smart-backend-services',
    { fhir: { auth: { tokenUrl: 'https://auth.example.org/token' } } },
  ],
  [
    'SigV4 (HealthLake), one multi-model endpoint',
    'sigv4',
    {
      models: { endpointMode: 'multi-model' },
      fhir: {
        baseUrl: 'https://healthlake.us-east-1.amazonaws.com/datastore/abc123/r4',
        auth: {
          mode: 'sigv4',
          datastoreArn: 'arn:aws:healthlake:us-east-1:123456789012:datastore/fhir/abc123',
        },
      },
    },
  ],
])('function environment: %s', (_name, mode, overrides) => {
  const app = build(config(overrides), { models: TEST_MODELS, appProps: NO_BUNDLING });
  const envs = environments(app);

  it('sets only names the functions read', () => {
    expect([...envs.keys()].sort()).toEqual([...FUNCTIONS].sort());
    for (const [fn, vars] of envs) {
      const unread = Object.keys(vars).filter((k) => !(k in ENV) && !RUNTIME_NAMES.has(k));
      expect({ fn, unread }).toEqual({ fn, unread: [] });
    }
  });

  it('gives values the functions accept', async () => {
    for (const [fn, vars] of envs) {
      const env = asEnv(vars);
      expect(
        Object.values(env).filter((v) => v.startsWith('unresolved')),
        fn,
      ).toEqual([]);
      const cfg = loadConfig(env);
      expect(fhirAuthMode(cfg)).toBe(mode);
      if (fn === 'NotifyFunction') {
        expect(() => createJsonAuthStore(cfg.NOTIFY_SUBSCRIPTIONS)).not.toThrow();
        const registration = await createJsonAuthStore(cfg.NOTIFY_SUBSCRIPTIONS).get('obs');
        expect(registration?.jwt).toMatchObject({
          issuer: 'https://fhir.example.org',
          jwksUrl: 'https://fhir.example.org/jwks',
        });
      }
      if (fn === 'PartnerApiFunction') {
        const settings = partnerSettings(cfg);
        expect(settings.oauthIssuers.map((i) => i.jwksUri)).toEqual([
          'https://ehr-a.example.org/jwks',
          'https://ehr-b.example.org/oauth/keys',
        ]);
        expect(settings.cdsIssuers).toHaveLength(1);
        expect(settings.fhirServerAllowList).toEqual([cfg.FHIR_BASE_URL]);
      }
    }
  });
});

describe('FHIR credentials grant', () => {
  it('is secretsmanager:GetSecretValue on the one secret (and its key through Secrets Manager) only', () => {
    const app = build(config(), { models: TEST_MODELS, appProps: NO_BUNDLING });
    const statements = resourcesOf([app.templates.pipeline], 'AWS::IAM::Policy').flatMap(
      ([, p]) =>
        (p.PolicyDocument as { Statement: { Action: string | string[]; Resource: unknown }[] }).Statement,
    );
    const secretStatements = statements.filter((s) => JSON.stringify(s.Action).includes('secretsmanager:'));
    // resource-event, notify, partner-api and the sweep's start, poll, search, stage, plan, item
    // and finish each read it.
    expect(secretStatements).toHaveLength(10);
    for (const s of secretStatements) {
      expect(s.Action).toBe('secretsmanager:GetSecretValue');
      expect(JSON.stringify(s.Resource)).toMatch(/FhirCredentials/);
      expect(Array.isArray(s.Resource)).toBe(false);
    }
    for (const [, vars] of environments(app)) expect(vars.FHIR_CREDENTIALS_SECRET_ARN).toBeDefined();
  });
});
