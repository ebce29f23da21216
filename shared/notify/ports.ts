/**
 * Builds the notify function's ports from configuration, once per cold start: the SQS queue,
 * the DynamoDB state store, the subscription registry (`NOTIFY_SUBSCRIPTIONS`), the FHIR
 * catch-up source and the JWKS cache.
 */
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { SQSClient } from '@aws-sdk/client-sqs';
import { ConfigError, type Config } from '../config.js';
import { authorizedFetch, type FhirAuthProvider } from '../fhir/auth.js';
import { createFhirAuth } from '../fhir/auth-config.js';
import type { Logger } from '../log.js';
import { createJwksCache } from '../partner/jwks.js';
import { createJsonAuthStore } from './auth.js';
import { createFhirCatchUp } from './catch-up.js';
import { createSqsEventQueue } from './queue.js';
import type { NotifyPorts } from './request.js';
import { createCachedStateStore, createDynamoStateStore } from './state.js';

/** Local endpoints do not check signatures; real credentials are used in AWS. */
const LOCAL_CREDENTIALS = { accessKeyId: 'local', secretAccessKey: 'local' };

export function createNotifyPorts(
  config: Config,
  logger: Logger,
  overrides: { readonly fhirAuth?: FhirAuthProvider } = {},
): Promise<NotifyPorts> {
  if (!config.QUEUE_URL) throw new ConfigError('invalid configuration: QUEUE_URL is required by notify');
  const sqs = new SQSClient({
    region: config.AWS_REGION,
    ...(config.SQS_ENDPOINT_URL ? { endpoint: config.SQS_ENDPOINT_URL, credentials: LOCAL_CREDENTIALS } : {}),
  });
  const dynamo = new DynamoDBClient({
    region: config.AWS_REGION,
    ...(config.DYNAMODB_ENDPOINT_URL
      ? { endpoint: config.DYNAMODB_ENDPOINT_URL, credentials: LOCAL_CREDENTIALS }
      : {}),
  });
  const registry = createJsonAuthStore(config.NOTIFY_SUBSCRIPTIONS);
  return Promise.resolve({
    queue: createSqsEventQueue({ client: sqs, queueUrl: config.QUEUE_URL }),
    state: createCachedStateStore(createDynamoStateStore(dynamo, config.EVENT_STATE_TABLE)),
    registry,
    catchUp: createFhirCatchUp({
      baseUrl: config.FHIR_BASE_URL,
      timeoutMs: config.CALL_TIMEOUT_MS,
      // The configured FHIR auth (SMART, SigV4, bearer or none) on every catch-up request.
      fetch: authorizedFetch(overrides.fhirAuth ?? createFhirAuth(config), { baseUrl: config.FHIR_BASE_URL }),
    }),
    verify: {
      ...(config.NOTIFY_AUDIENCE ? { audience: config.NOTIFY_AUDIENCE } : {}),
      jwks: createJwksCache(),
    },
    options: {
      maxBodyBytes: config.NOTIFY_MAX_BODY_BYTES,
      signatureHeader: config.NOTIFY_SIGNATURE_HEADER,
    },
    logger,
  });
}
