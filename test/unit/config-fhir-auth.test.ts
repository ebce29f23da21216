/**
 * The FHIR auth settings of shared/config.ts: defaults, the settings each mode requires (a
 * ConfigError naming every missing variable), and the provider each mode builds.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { ConfigError, ENV, fhirAuthMode, loadConfig } from '../../shared/config.js';
import { FhirAuthError } from '../../shared/fhir/auth.js';
import { createFhirAuth } from '../../shared/fhir/auth-config.js';
import { createSigV4Auth } from '../../shared/fhir/sigv4.js';

const BASE = { FHIR_BASE_URL: 'https://fhir.example.org/r4' };
const ARN = 'arn:aws:secretsmanager:eu-west-1:123456789012:secret:fhir-client-AbCdEf';

function errorOf(env: Record<string, string>): ConfigError {
  try {
    loadConfig(env);
  } catch (err) {
    return err as ConfigError;
  }
  throw new Error('expected a ConfigError');
}

describe('FHIR auth configuration', () => {
  it('defaults to none, or bearer when a token is given', () => {
    expect(fhirAuthMode(loadConfig(BASE))).toBe('none');
    expect(fhirAuthMode(loadConfig({ ...BASE, FHIR_BEARER_TOKEN: 'dev-token' }))).toBe('bearer');
    expect(createFhirAuth(loadConfig(BASE)).mode).toBe('none');
  });

  it('names every variable SMART Backend Services mode lacks', () => {
    const err = errorOf({ ...BASE, FHIR_AUTH_MODE: 'smart-backend-services' });
    expect(err).toBeInstanceOf(ConfigError);
    for (const name of ['FHIR_CLIENT_ID', 'FHIR_SCOPES', 'FHIR_CREDENTIALS_SECRET_ARN']) {
      expect(err.message).toContain(`${name}: required by FHIR_AUTH_MODE=smart-backend-services`);
    }
  });

  it('refuses an unknown mode, a secret id that is not an ARN and a token URL that is not a URL', () => {
    expect(errorOf({ ...BASE, FHIR_AUTH_MODE: 'basic' }).message).toContain('FHIR_AUTH_MODE');
    const err = errorOf({
      ...BASE,
      FHIR_AUTH_MODE: 'smart-backend-services',
      FHIR_CLIENT_ID: 'c',
      FHIR_SCOPES: 'system/Patient.rs',
      FHIR_CREDENTIALS_SECRET_ARN: 'my-secret',
      FHIR_TOKEN_URL: 'not a url',
    });
    expect(err.message).toContain('FHIR_CREDENTIALS_SECRET_ARN: a Secrets Manager secret ARN');
    expect(err.message).toContain('FHIR_TOKEN_URL');
  });

  it('reads the SMART settings infra sets and builds the SMART provider', () => {
    const config = loadConfig({
      ...BASE,
      FHIR_AUTH_MODE: 'smart-backend-services',
      FHIR_CLIENT_ID: 'fhir-analytics',
      FHIR_SCOPES: ' system/Observation.rs  system/DiagnosticReport.cu ',
      FHIR_CREDENTIALS_SECRET_ARN: ARN,
    });
    expect(config.FHIR_SCOPES).toEqual(['system/Observation.rs', 'system/DiagnosticReport.cu']);
    expect(createFhirAuth(config).mode).toBe('smart-backend-services');
  });

  it('builds the SigV4 provider with the region of a HealthLake URL', () => {
    const config = loadConfig({
      FHIR_BASE_URL: 'https://healthlake.eu-west-1.amazonaws.com/datastore/abc/r4',
      FHIR_AUTH_MODE: 'sigv4',
    });
    expect(createFhirAuth(config).mode).toBe('sigv4');
  });

  describe('SigV4 from configuration (the signer loads with the first request)', () => {
    const HEALTHLAKE = 'https://healthlake.eu-west-1.amazonaws.com/datastore/abc/r4';
    const KEYS = { accessKeyId: 'AKIDEXAMPLE', secretAccessKey: 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY' };
    afterEach(() => {
      vi.useRealTimers();
    });

    it('signs as createSigV4Auth does, and never asks for new credentials after a 401', async () => {
      vi.useFakeTimers({ toFake: ['Date'] });
      vi.setSystemTime(new Date('2015-08-30T12:36:00Z'));
      const config = loadConfig({ FHIR_BASE_URL: HEALTHLAKE, FHIR_AUTH_MODE: 'sigv4' });
      const auth = createFhirAuth(config, { awsCredentials: KEYS });
      expect(auth.invalidate()).toBe(false);
      const request = {
        method: 'GET',
        url: `${HEALTHLAKE}/Patient/1`,
        headers: { accept: 'application/fhir+json' },
      };
      const headers = await auth.getAuthHeaders(request);
      expect(headers).toEqual(
        await createSigV4Auth({ baseUrl: HEALTHLAKE, region: 'us-east-1', credentials: KEYS }).getAuthHeaders(
          request,
        ),
      );
      expect(headers.authorization).toContain('/20150830/eu-west-1/healthlake/aws4_request');
      expect(auth.invalidate()).toBe(false);
    });

    it('refuses, when the provider is built, a host that names no region with no AWS_REGION', () => {
      const config = loadConfig({
        FHIR_BASE_URL: 'https://fhir.example.org/r4',
        FHIR_AUTH_MODE: 'sigv4',
        AWS_REGION: '',
      });
      expect(() => createFhirAuth(config)).toThrow(FhirAuthError);
      expect(() => createFhirAuth(config)).toThrow(/no region in https:\/\/fhir\.example\.org\/r4/);
    });
  });

  it('requires the endpoint name of a multi-model endpoint', () => {
    expect(errorOf({ ...BASE, SAGEMAKER_ENDPOINT_MODE: 'multi-model' }).message).toContain(
      'SAGEMAKER_ENDPOINT_NAME: required',
    );
  });

  it('lists each variable name once, as its own value', () => {
    for (const [k, v] of Object.entries(ENV)) expect(v).toBe(k);
    expect(ENV.FHIR_CREDENTIALS_SECRET_ARN).toBe('FHIR_CREDENTIALS_SECRET_ARN');
  });
});
