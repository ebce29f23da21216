/**
 * The one place in `shared/` that reads `process.env`. Functions call `loadConfig()` once per
 * cold start and pass the values on.
 *
 * {@link ENV} is the list of variable names, shared with the CDK app (infra sets its functions'
 * environment with `ENV.X`), so the names cannot drift; test/infra checks that every variable
 * infra sets is one read here.
 */
import * as z from 'zod';

/** How the functions authenticate to the FHIR server (docs/fhir-server.md). */
export const FHIR_AUTH_MODES = ['none', 'bearer', 'smart-backend-services', 'sigv4'] as const;
export type FhirAuthMode = (typeof FHIR_AUTH_MODES)[number];

const spaceList = z
  .string()
  .default('')
  .transform((v) => v.split(/\s+/).filter(Boolean));

const ConfigObject = z.object({
  FHIR_BASE_URL: z.url(),
  /**
   * `none`, `bearer` (FHIR_BEARER_TOKEN), `smart-backend-services` (FHIR_CLIENT_ID, FHIR_SCOPES,
   * FHIR_CREDENTIALS_SECRET_ARN, optional FHIR_TOKEN_URL) or `sigv4` (AWS HealthLake). Default:
   * `bearer` when FHIR_BEARER_TOKEN is set, else `none`.
   */
  FHIR_AUTH_MODE: z.enum(FHIR_AUTH_MODES).optional(),
  /** A fixed bearer token for the FHIR server (`bearer` mode; development and tests). */
  FHIR_BEARER_TOKEN: z.string().min(1).optional(),
  /** SMART Backend Services: the client id registered with the FHIR server's authorization server. */
  FHIR_CLIENT_ID: z.string().min(1).optional(),
  /** SMART Backend Services: the scopes asked for, space-separated (`system/Observation.rs ...`). */
  FHIR_SCOPES: spaceList,
  /** SMART Backend Services: the token endpoint; default from `<base>/.well-known/smart-configuration`. */
  FHIR_TOKEN_URL: z.url({ protocol: /^https?$/ }).optional(),
  /** SMART Backend Services: the Secrets Manager secret holding the client's private key (JSON). */
  FHIR_CREDENTIALS_SECRET_ARN: z
    .string()
    .regex(/^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:.+$/, 'a Secrets Manager secret ARN')
    .optional(),
  /** Override for the Secrets Manager endpoint (a VPC endpoint, or a local stand-in). */
  SECRETS_MANAGER_ENDPOINT_URL: z.url().optional(),
  /** Override for the SageMaker runtime endpoint (the local endpoint server). */
  SAGEMAKER_ENDPOINT_URL: z.url().optional(),
  /** `model id → endpoint name` is `${prefix}${id}`. */
  SAGEMAKER_ENDPOINT_PREFIX: z.string().default(''),
  /** `per-model` endpoints, or one `multi-model` endpoint (SAGEMAKER_ENDPOINT_NAME). Set by infra. */
  SAGEMAKER_ENDPOINT_MODE: z.enum(['per-model', 'multi-model']).default('per-model'),
  /** The multi-model endpoint's name. */
  SAGEMAKER_ENDPOINT_NAME: z.string().min(1).optional(),
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

const ConfigSchema = ConfigObject.superRefine((c, ctx) => {
  const need = (name: keyof typeof ConfigObject.shape, ok: boolean, why: string) => {
    if (!ok) ctx.addIssue({ code: 'custom', path: [name], message: `required ${why}` });
  };
  const mode = c.FHIR_AUTH_MODE ?? (c.FHIR_BEARER_TOKEN ? 'bearer' : 'none');
  if (mode === 'bearer')
    need('FHIR_BEARER_TOKEN', c.FHIR_BEARER_TOKEN !== undefined, 'by FHIR_AUTH_MODE=bearer');
  if (mode === 'smart-backend-services') {
    const why = 'by FHIR_AUTH_MODE=smart-backend-services';
    need('FHIR_CLIENT_ID', c.FHIR_CLIENT_ID !== undefined, why);
    need('FHIR_SCOPES', c.FHIR_SCOPES.length > 0, why);
    need('FHIR_CREDENTIALS_SECRET_ARN', c.FHIR_CREDENTIALS_SECRET_ARN !== undefined, why);
  }
  if (c.SAGEMAKER_ENDPOINT_MODE === 'multi-model') {
    need(
      'SAGEMAKER_ENDPOINT_NAME',
      c.SAGEMAKER_ENDPOINT_NAME !== undefined,
      'by SAGEMAKER_ENDPOINT_MODE=multi-model',
    );
  }
});
export type Config = z.infer<typeof ConfigSchema>;

/** Every environment variable name the functions read, as a constant (`ENV.FHIR_BASE_URL`). */
export const ENV = Object.fromEntries(Object.keys(ConfigObject.shape).map((k) => [k, k])) as {
  readonly [K in keyof typeof ConfigObject.shape]: K;
};
export type EnvName = keyof typeof ENV;

/** The FHIR auth mode in effect (FHIR_AUTH_MODE, or what its default resolves to). */
export function fhirAuthMode(config: Config): FhirAuthMode {
  return config.FHIR_AUTH_MODE ?? (config.FHIR_BEARER_TOKEN ? 'bearer' : 'none');
}

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
