/**
 * The FHIR auth provider for the configured mode, built once per cold start and shared by
 * every FHIR caller of a function (gateway, bulk export, catch-up searches).
 *
 * The AWS SDK modules a mode needs are imported when that mode first asks for credentials, not
 * at init: the Secrets Manager client only in SMART mode, when the key is first read (once per
 * container, then kept), and the default credential chain only in SigV4 mode (`sigv4.ts`). The
 * other modes never load them. Nor does any other mode load `sigv4.ts` and the SigV4 signer:
 * SigV4 mode loads them with its first request (its settings are checked here, when the
 * provider is built). `smart.ts` is imported statically: it shares zod and jose with what
 * every function loads at init, and a module imported on first use makes the bundler wrap
 * everything it imports in lazy initializers, which costs more at init than its schemas do.
 */
import type { SecretsManagerClient } from '@aws-sdk/client-secrets-manager';
import type { AwsCredentialIdentity, AwsCredentialIdentityProvider } from '@smithy/types';
import { fhirAuthMode, type Config } from '../config.js';
import { bearerAuth, FhirAuthError, noAuth, type FetchLike, type FhirAuthProvider } from './auth.js';
import { healthLakeRegion } from './healthlake.js';
import { readJsonSecret } from './secrets.js';
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

/**
 * A provider whose implementation (its module) is loaded on the first request it authenticates.
 * Before that, `invalidate` answers as a fresh provider of the mode would (`beforeLoad`).
 */
function loadedOnFirstUse(
  mode: string,
  beforeLoad: boolean,
  load: () => Promise<FhirAuthProvider>,
): FhirAuthProvider {
  let provider: Promise<FhirAuthProvider> | undefined;
  let loaded: FhirAuthProvider | undefined;
  return {
    mode,
    async getAuthHeaders(request) {
      provider ??= load().then(
        (p) => (loaded = p),
        (err: unknown) => {
          provider = undefined;
          throw err;
        },
      );
      return (await provider).getAuthHeaders(request);
    },
    invalidate: () => (loaded ? loaded.invalidate() : beforeLoad),
  };
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
    case 'sigv4': {
      // createSigV4Auth's own check, made now so that a bad setting still fails the start.
      if (!(healthLakeRegion(config.FHIR_BASE_URL) ?? config.AWS_REGION)) {
        throw new FhirAuthError(
          'configuration',
          `no region in ${config.FHIR_BASE_URL} and none configured (AWS_REGION)`,
        );
      }
      // A 401 from HealthLake is a permissions problem: SigV4 never asks again (sigv4.ts).
      return loadedOnFirstUse(mode, false, async () =>
        (await import('./sigv4.js')).createSigV4Auth({
          baseUrl: config.FHIR_BASE_URL,
          region: config.AWS_REGION,
          ...(deps.awsCredentials ? { credentials: deps.awsCredentials } : {}),
        }),
      );
    }
  }
}
