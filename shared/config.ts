/**
 * The one place in `shared/` that reads `process.env`. Functions call `loadConfig()` once per
 * cold start and pass the values on.
 */
import { z } from 'zod';

const ConfigSchema = z.object({
  FHIR_BASE_URL: z.url(),
  /** Bearer token for the FHIR server, when it needs one (SMART backend services comes later). */
  FHIR_BEARER_TOKEN: z.string().optional(),
  /** Override for the SageMaker runtime endpoint (the local endpoint server). */
  SAGEMAKER_ENDPOINT_URL: z.url().optional(),
  /** `model id → endpoint name` is `${prefix}${id}`. */
  SAGEMAKER_ENDPOINT_PREFIX: z.string().default(''),
  AWS_REGION: z.string().default('us-east-1'),
  MODELS_DIR: z.string().default('models'),
  /** DICOMweb base URLs image models may fetch from (comma-separated); empty turns image models off. */
  DICOMWEB_ALLOWED_BASE_URLS: z
    .string()
    .default('')
    .transform((v) =>
      v
        .split(',')
        .map((s) => s.trim())
        .filter(Boolean),
    ),
  LOG_LEVEL: z.enum(['debug', 'info', 'warn', 'error']).default('info'),
  /** Overall budget for one FHIR or inference call, in ms. */
  CALL_TIMEOUT_MS: z.coerce.number().int().positive().default(30_000),
  /** Partner API: the public base URL callers use (CDS JWT audiences and card links are built from it). */
  PARTNER_PUBLIC_BASE_URL: z.url().optional(),
  /** Partner API: CDS Hooks client issuers, JSON `[{"issuer": "...", "jwksUrls": ["..."]}]`. */
  PARTNER_CDS_ISSUERS: z.string().default('[]'),
  /** Partner API: OAuth2 issuers, JSON `[{"issuer": "...", "jwksUri": "...", "audience"?: "...", "clientIds"?: ["..."]}]`. */
  PARTNER_OAUTH_ISSUERS: z.string().default('[]'),
  /** Partner API: FHIR base URLs a CDS call's `fhirServer` may name, comma-separated. */
  PARTNER_FHIR_ALLOWLIST: z.string().default(''),
  /** Partner API: per-client token bucket (burst, and tokens per second). */
  PARTNER_RATE_BURST: z.coerce.number().int().positive().default(20),
  PARTNER_RATE_PER_SECOND: z.coerce.number().positive().default(10),
  /** The resource-event SQS FIFO queue (functions/notify sends to it). */
  QUEUE_URL: z.url().optional(),
  /** Override for the SQS endpoint (the local fauxqs queue). */
  SQS_ENDPOINT_URL: z.url().optional(),
  /** Override for the DynamoDB endpoint (local dynalite). */
  DYNAMODB_ENDPOINT_URL: z.url().optional(),
  /** Notify: per-subscription event-number state (partition key `subscription`). */
  EVENT_STATE_TABLE: z.string().min(3).default('fhir-analytics-event-state'),
  /** Notify: largest notification body accepted, in bytes. */
  NOTIFY_MAX_BODY_BYTES: z.coerce.number().int().positive().default(1_048_576),
  /** Notify: header carrying the HMAC-SHA256 signature of the body (`sha256=<hex>`). */
  NOTIFY_SIGNATURE_HEADER: z
    .string()
    .regex(/^[A-Za-z0-9-]{1,64}$/)
    .default('x-signature'),
  /** Notify: the public notify URL, the `aud` notification JWTs must carry. */
  NOTIFY_AUDIENCE: z.string().min(1).optional(),
  /** Notify: JSON array of subscription registrations (id, hmac and/or jwt, resourceTypes). */
  NOTIFY_SUBSCRIPTIONS: z.string().default('[]'),
});
export type Config = z.infer<typeof ConfigSchema>;

export class ConfigError extends Error {
  override name = 'ConfigError';
}

export function loadConfig(env: Readonly<Record<string, string | undefined>> = process.env): Config {
  const parsed = ConfigSchema.safeParse(env);
  if (!parsed.success) {
    const detail = parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ');
    throw new ConfigError(`invalid configuration: ${detail}`);
  }
  return parsed.data;
}
