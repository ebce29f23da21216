/**
 * The FHIR auth provider for the configured mode, built once per cold start and shared by
 * every FHIR caller of a function (gateway, bulk export, catch-up searches).
 *
 * The AWS SDK modules a mode needs are imported when that mode first asks for credentials, not
 * at init: the Secrets Manager client only in SMART mode, when the key is first read (once per
 * container, then kept), and the default credential chain only in SigV4 mode (`sigv4.ts`). The
 * other modes never load them.
 */
import type { SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import type { AwsCredentialIdentity, AwsCredentialIdentityProvider } from '@smithy/types';
import { fhirAuthMode, type Config } from '../config.js';
import { bearerAuth, FhirAuthError, noAuth, type FetchLike, type FhirAuthProvider } from './auth.js';
import { readJsonSecret } from './secrets.js';
import { createSigV4Auth } from './sigv4.js';
import { createSmartBackendAuth } from './smart.js';

export interface FhirAuthDeps {
  /** Secrets Manager client for the SMART client's key. Default: one from configuration. */
  readonly secrets?: SecretsManagerClient;
  /** Replaces the Secrets Manager read (tests and the embedded stack hold the key in memory). */
  readonly smartCredentials?: () => Promise<unknown>;
  /** SigV4 credentials. Default: the AWS SDK's default chain. */
  readonly awsCredentials?: AwsCredentialIdentity | AwsCredentialIdentityProvider;
  readonly fetch?: FetchLike;
  readonly now?: () => number;
}

export function createFhirAuth(config: Config, deps: FhirAuthDeps = {}): FhirAuthProvider {
  const mode = fhirAuthMode(config);
  switch (mode) {
    case 'none':
      return noAuth;
    case 'bearer':
      if (!config.FHIR_BEARER_TOKEN) throw new FhirAuthError('configuration', 'FHIR_BEARER_TOKEN is not set');
      return bearerAuth(config.FHIR_BEARER_TOKEN);
    case 'smart-backend-services': {
      const secretId = config.FHIR_CREDENTIALS_SECRET_ARN;
      if (!config.FHIR_CLIENT_ID || (!secretId && !deps.smartCredentials)) {
        throw new FhirAuthError(
          'configuration',
          'FHIR_CLIENT_ID and FHIR_CREDENTIALS_SECRET_ARN are required',
        );
      }
      let secrets = deps.secrets;
      const credentials =
        deps.smartCredentials ??
        (async () => {
          if (!secrets) {
            // Runtime-provided (external to the bundle); loaded on the first read of the key.
            const { SecretsManagerClient } = await import('@aws-sdk/client-secrets-manager');
            secrets = new SecretsManagerClient({
              region: config.AWS_REGION,
              ...(config.SECRETS_MANAGER_ENDPOINT_URL
                ? { endpoint: config.SECRETS_MANAGER_ENDPOINT_URL }
                : {}),
            });
          }
          return readJsonSecret(secrets, secretId ?? '');
        });
      return createSmartBackendAuth({
        baseUrl: config.FHIR_BASE_URL,
        clientId: config.FHIR_CLIENT_ID,
        scopes: config.FHIR_SCOPES,
        ...(config.FHIR_TOKEN_URL ? { tokenUrl: config.FHIR_TOKEN_URL } : {}),
        credentials,
        timeoutMs: Math.min(config.CALL_TIMEOUT_MS, 10_000),
        ...(deps.fetch ? { fetch: deps.fetch } : {}),
        ...(deps.now ? { now: deps.now } : {}),
      });
    }
    case 'sigv4':
      return createSigV4Auth({
        baseUrl: config.FHIR_BASE_URL,
        region: config.AWS_REGION,
        ...(deps.awsCredentials ? { credentials: deps.awsCredentials } : {}),
      });
  }
}
