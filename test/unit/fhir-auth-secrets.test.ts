/**
 * The SMART client's key from Secrets Manager (aws-sdk-client-mock): read once and kept, the
 * secret id asked for is the configured ARN, and each failure names the step without quoting
 * the secret.
 */
import {
  GetSecretValueCommand,
  ResourceNotFoundException,
  SecretsManagerClient,
} from '@aws-sdk/client-secrets-manager';
import { mockClient } from 'aws-sdk-client-mock';
import { exportJWK, generateKeyPair } from 'jose';
import { afterEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../shared/config.js';
import { FhirAuthError } from '../../shared/fhir/auth.js';
import { createFhirAuth } from '../../shared/fhir/auth-config.js';
import { readJsonSecret } from '../../shared/fhir/secrets.js';

const ARN = 'arn:aws:secretsmanager:us-east-1:123456789012:secret:fhir-analytics/fhir-client-AbCdEf';
const TOKEN_URL = 'https://auth.example.org/token';
const sm = mockClient(SecretsManagerClient);

afterEach(() => {
  sm.reset();
});

async function privateJwk() {
  const { privateKey } = await generateKeyPair('ES384', { extractable: true });
  return { ...(await exportJWK(privateKey)), kid: 'key-1', alg: 'ES384' };
}

function smartConfig() {
  return loadConfig({
    FHIR_BASE_URL: 'https://fhir.example.org/r4',
    FHIR_AUTH_MODE: 'smart-backend-services',
    FHIR_CLIENT_ID: 'fhir-analytics',
    FHIR_SCOPES: 'system/Observation.rs system/DiagnosticReport.cu',
    FHIR_TOKEN_URL: TOKEN_URL,
    FHIR_CREDENTIALS_SECRET_ARN: ARN,
  });
}

/** A token endpoint that counts its calls and issues a one-hour token. */
function tokenEndpoint() {
  const calls = { count: 0 };
  const fetchFn = (url: string) => {
    calls.count++;
    expect(url).toBe(TOKEN_URL);
    return Promise.resolve(
      Response.json({ access_token: `token-${calls.count}`, token_type: 'bearer', expires_in: 3600 }),
    );
  };
  return { calls, fetchFn };
}

describe('SMART credentials from Secrets Manager', () => {
  it('reads the configured secret once and signs with it', async () => {
    // Prepare
    sm.on(GetSecretValueCommand).resolves({
      SecretString: JSON.stringify({ privateKeyJwk: await privateJwk() }),
    });
    const { calls, fetchFn } = tokenEndpoint();
    const auth = createFhirAuth(smartConfig(), { secrets: new SecretsManagerClient({}), fetch: fetchFn });
    // Act
    const first = await auth.getAuthHeaders({
      method: 'GET',
      url: 'https://fhir.example.org/r4/Patient/1',
      headers: {},
    });
    auth.invalidate();
    const second = await auth.getAuthHeaders({
      method: 'GET',
      url: 'https://fhir.example.org/r4/Patient/1',
      headers: {},
    });
    // Assess
    expect(first).toEqual({ authorization: 'Bearer token-1' });
    expect(second).toEqual({ authorization: 'Bearer token-2' });
    expect(calls.count).toBe(2);
    expect(sm.commandCalls(GetSecretValueCommand)).toHaveLength(1);
    expect(sm.commandCalls(GetSecretValueCommand)[0]?.args[0].input).toEqual({ SecretId: ARN });
  });

  it('names the step when the secret cannot be read, and tries again next time', async () => {
    sm.on(GetSecretValueCommand)
      .rejectsOnce(new ResourceNotFoundException({ message: 'not found', $metadata: {} }))
      .resolves({ SecretString: JSON.stringify({ privateKeyJwk: await privateJwk() }) });
    const { fetchFn } = tokenEndpoint();
    const auth = createFhirAuth(smartConfig(), { secrets: new SecretsManagerClient({}), fetch: fetchFn });
    const request = { method: 'GET', url: 'https://fhir.example.org/r4/Patient/1', headers: {} };
    const err = await auth.getAuthHeaders(request).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(FhirAuthError);
    expect((err as FhirAuthError).step).toBe('credentials');
    expect((err as Error).message).toContain('ResourceNotFoundException');
    await expect(auth.getAuthHeaders(request)).resolves.toEqual({ authorization: 'Bearer token-1' });
    expect(sm.commandCalls(GetSecretValueCommand)).toHaveLength(2);
  });

  it('refuses an empty secret, a non-JSON secret and a key of the wrong shape without quoting them', async () => {
    const client = new SecretsManagerClient({});
    sm.on(GetSecretValueCommand).resolvesOnce({}).resolvesOnce({ SecretString: 'not-json-secret-value' });
    await expect(readJsonSecret(client, ARN)).rejects.toThrow(/has no value yet/);
    const notJson = (await readJsonSecret(client, ARN).catch((e: unknown) => e)) as Error;
    expect(notJson).toBeInstanceOf(FhirAuthError);
    expect(notJson.message).toMatch(/is not JSON/);
    expect(notJson.message).not.toContain('not-json-secret-value');

    sm.on(GetSecretValueCommand).resolves({
      SecretString: JSON.stringify({ privateKeyJwk: { kty: 'oct', k: 'c2VjcmV0' } }),
    });
    const { fetchFn } = tokenEndpoint();
    const auth = createFhirAuth(smartConfig(), { secrets: client, fetch: fetchFn });
    const bad = await auth
      .getAuthHeaders({ method: 'GET', url: 'https://fhir.example.org/r4/Patient/1', headers: {} })
      .catch((e: unknown) => e as FhirAuthError);
    expect(bad.step).toBe('credentials');
    expect(bad.message).toContain('privateKeyJwk');
    expect(bad.message).not.toContain('c2VjcmV0');
  });
});
