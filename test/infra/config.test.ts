/**
 * Configuration: the example file is valid; a bad configuration fails with a ConfigError that
 * names the field; model selection and feature switches are checked against what exists.
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { buildApp } from '../../infra/build-app.js';
import { ConfigError, loadConfigFile, mergeConfig, parseConfig } from '../../infra/config.js';
import { readManifests, selectModels } from '../../infra/models.js';
import { BASE_CONFIG, config } from './helpers.js';

const EXAMPLE = fileURLToPath(new URL('../../infra/config.json', import.meta.url));

function errorOf(fn: () => unknown): Error {
  try {
    fn();
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected an error');
}

describe('configuration', () => {
  it('accepts the example infra/config.json and fills the documented defaults', () => {
    const c = loadConfigFile(EXAMPLE);
    expect(c.fhir.auth.mode).toBe('smart-backend-services');
    expect(c.models.endpointMode).toBe('per-model');
    expect(c.vpc).toEqual({ mode: 'none' });
    expect(c.logRetentionDays).toBe(365);
    expect(c.notify.throttle).toEqual({ rateLimit: 50, burstLimit: 100 });
  });

  it.each([
    [{ fhir: { baseUrl: 'http://fhir.example.org' } }, 'fhir.baseUrl'],
    [{ fhir: { auth: { mode: 'basic' } } }, 'fhir.auth.mode'],
    [{ fhir: { auth: { mode: 'sigv4', datastoreArn: 'arn:aws:s3:::nope' } } }, 'fhir.auth.datastoreArn'],
    [{ alarms: { email: 'not-an-email' } }, 'alarms.email'],
    [{ logRetentionDays: 1 }, 'logRetentionDays'],
    [{ vpc: { mode: 'peered' } }, 'vpc.mode'],
    [
      { vpc: { mode: 'import', vpcId: 'vpc-0abc', availabilityZones: ['a'], privateSubnetIds: [] } },
      'vpc.availabilityZones',
    ],
    [{ models: { endpointMode: 'serverless' } }, 'models.endpointMode'],
    [{ models: { instanceTypes: { 'pbc-gru': 'g5.xlarge' } } }, 'models.instanceTypes.pbc-gru'],
    [{ models: { minInstances: 3, maxInstances: 2 } }, 'models.maxInstances'],
    [{ partnerApi: { enabled: true, issuers: [] } }, 'partnerApi.issuers'],
    [
      { partnerApi: { issuers: [{ id: 'Bad Id', issuer: 'https://x.example', audiences: ['a'] }] } },
      'partnerApi.issuers.0.id',
    ],
    [{ sweeps: { enabled: true, schedules: [] } }, 'sweeps.schedules'],
    [{ notify: { enabled: true, subscriptions: [] } }, 'notify.subscriptions'],
    [
      { notify: { subscriptions: [{ id: 'obs', issuer: 'x', jwksUrl: 'http://fhir.example.org/jwks' }] } },
      'notify.subscriptions.0.jwksUrl',
    ],
    [
      {
        partnerApi: {
          issuers: [{ id: 'ehr', issuer: 'https://x.example', audiences: ['a'], jwksUri: 'not a url' }],
        },
      },
      'partnerApi.issuers.0.jwksUri',
    ],
    [{ sweeps: { schedules: [{ name: 'n', expression: '0 3 * * *' }] } }, 'sweeps.schedules.0.expression'],
    [{ env: { account: '123', region: 'us-east-1' } }, 'env.account'],
  ])('names the field of a bad value: %j → %s', (patch, field) => {
    const err = errorOf(() => parseConfig(mergeConfig(structuredClone(BASE_CONFIG), patch)));
    expect(err).toBeInstanceOf(ConfigError);
    expect(err.message).toContain(`${field}:`);
  });

  it('reports every bad field at once', () => {
    const err = errorOf(() => parseConfig({ fhir: { baseUrl: 'ftp://x' } }));
    expect(err.message).toMatch(/fhir\.baseUrl: .*fhir\.auth: .*alarms: /);
  });

  it('names the file and the field when reading a configuration file with overrides', () => {
    const dir = mkdtempSync(join(tmpdir(), 'fa-config-'));
    const file = join(dir, 'config.json');
    writeFileSync(file, JSON.stringify(BASE_CONFIG));
    expect(loadConfigFile(file, '{"alarms":{"email":"x@example.org"}}').alarms.email).toBe('x@example.org');
    const err = errorOf(() => loadConfigFile(file, { models: { dataCapturePercent: 101 } }));
    expect(err.message).toContain(file);
    expect(err.message).toContain('models.dataCapturePercent:');
    expect(errorOf(() => loadConfigFile(join(dir, 'missing.json'))).message).toContain('cannot read');
    expect(errorOf(() => loadConfigFile(file, '{not json')).message).toContain('"overrides" is not JSON');
  });

  it('rejects model ids that have no manifest, naming the field', () => {
    const manifests = readManifests();
    expect(manifests.map((m) => m.id)).toContain('diabetes-gbm');
    expect(
      errorOf(() => selectModels(config({ models: { include: ['no-such-model'] } }), manifests)).message,
    ).toContain('models.include:');
    expect(
      errorOf(() =>
        selectModels(config({ models: { instanceTypes: { 'no-such-model': 'ml.g5.xlarge' } } }), manifests),
      ).message,
    ).toContain('models.instanceTypes.no-such-model:');
  });

  it('reads every manifest, applying instance-type overrides', () => {
    const manifests = readManifests();
    const served = selectModels(
      config({ models: { instanceTypes: { 'diabetes-gbm': 'ml.g5.2xlarge' } } }),
      manifests,
    );
    expect(served).toHaveLength(manifests.length);
    const gbm = served.find((m) => m.id === 'diabetes-gbm');
    expect(gbm).toMatchObject({ instanceType: 'ml.g5.2xlarge', gpu: true, tritonModelName: 'diabetes-gbm' });
  });

  it('refuses a feature whose function does not exist yet, naming the switch', () => {
    const err = errorOf(() =>
      buildApp(config({ partnerApi: { enabled: false }, sweeps: { enabled: false } }), {
        entries: { notify: 'no-such-function' },
      }),
    );
    expect(err).toBeInstanceOf(ConfigError);
    expect(err.message).toMatch(/^notify\.enabled: functions\/no-such-function\/handler\.ts does not exist/);
  });
});
