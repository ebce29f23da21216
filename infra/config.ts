/**
 * The deployment configuration: one JSON file (`infra/config.json` by default, another with
 * `-c configFile=path`), optionally patched by `-c overrides='{"alarms":{"email":"..."}}'`,
 * validated with zod. A bad configuration fails synthesis with a `ConfigError` that names
 * every offending field (`fhir.baseUrl: ...`).
 */
import { readFileSync } from 'node:fs';
import { RetentionDays } from 'aws-cdk-lib/aws-logs';
import { z } from 'zod';

export class ConfigError extends Error {
  override name = 'ConfigError';
}

/** Lowercase slug, used in endpoint names, route segments and schedule names. */
const Slug = z.string().regex(/^[a-z0-9][a-z0-9-]{0,39}$/, 'lowercase letters, digits and dashes');
const HttpsUrl = z.url({ protocol: /^https$/, error: 'an https:// URL' });
const InstanceType = z
  .string()
  .regex(/^ml\.[a-z0-9]+\.[a-z0-9]+$/, 'a SageMaker instance type such as ml.g5.xlarge');
const Throttle = z
  .object({
    /** Steady-state requests per second. */
    rateLimit: z.number().int().positive().default(50),
    /** Burst bucket size. */
    burstLimit: z.number().int().positive().default(100),
  })
  .default({ rateLimit: 50, burstLimit: 100 });

/** CloudWatch Logs retention values of at least 90 days (HIPAA: no short retention). */
const RETENTION_DAYS = [
  90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653,
] as const;

const FhirAuthSchema = z.discriminatedUnion('mode', [
  z.object({
    /** SMART Backend Services: client_credentials with a private_key_jwt assertion. */
    mode: z.literal('smart-backend-services'),
    clientId: z.string().min(1),
    /** Token endpoint; default: read from `<base>/.well-known/smart-configuration`. */
    tokenUrl: HttpsUrl.optional(),
    scopes: z.array(z.string().min(1)).min(1),
  }),
  z.object({
    /** AWS HealthLake: SigV4-signed requests with the function's role, no stored secret. */
    mode: z.literal('sigv4'),
    /** The HealthLake data store ARN the functions may read and write. */
    datastoreArn: z
      .string()
      .regex(/^arn:aws[a-z-]*:healthlake:[a-z0-9-]+:\d{12}:datastore\/fhir\/[A-Za-z0-9]+$/, {
        error: 'a HealthLake data store ARN (arn:aws:healthlake:<region>:<account>:datastore/fhir/<id>)',
      }),
  }),
]);

const VpcSchema = z.discriminatedUnion('mode', [
  /** Functions and endpoints outside a VPC (AWS-managed networking). */
  z.object({ mode: z.literal('none') }),
  /** A new VPC: private subnets with NAT egress (the FHIR server is reached over TLS), flow logs. */
  z.object({
    mode: z.literal('create'),
    maxAzs: z.number().int().min(2).max(3).default(2),
    natGateways: z.number().int().min(1).max(3).default(1),
  }),
  /** An existing VPC, given by attributes (no lookup: synthesis stays offline). */
  z.object({
    mode: z.literal('import'),
    vpcId: z.string().regex(/^vpc-[0-9a-f]+$/),
    availabilityZones: z.array(z.string().min(1)).min(2),
    privateSubnetIds: z.array(z.string().regex(/^subnet-[0-9a-f]+$/)).min(2),
  }),
]);

/**
 * A FHIR Subscription the notify function accepts, authenticated by a JWT its server signs
 * (the key set is public, so it can sit in this file; HMAC secrets cannot).
 */
const NotifySubscriptionSchema = z.object({
  /** The Subscription's logical id at the FHIR server. */
  id: z.string().regex(/^[A-Za-z0-9\-.]{1,64}$/, 'a FHIR id'),
  /** The `iss` of the notification JWTs. */
  issuer: z.string().min(1),
  /** The issuer's public JWKS. */
  jwksUrl: HttpsUrl,
  /** Resource types of the topic with their filter's search parameters (for `_lastUpdated` catch-up). */
  resourceTypes: z.record(z.string().regex(/^[A-Z][A-Za-z]+$/), z.record(z.string(), z.string())).default({}),
});

const ScheduleSchema = z.object({
  name: Slug,
  /** EventBridge Scheduler expression: `cron(0 3 * * ? *)` or `rate(1 day)`. */
  expression: z.string().regex(/^(cron|rate)\(.+\)$/, 'cron(...) or rate(...)'),
  timeZone: z.string().default('UTC'),
  /** FHIR Group id whose members are swept (`Group/<id>/$export`); omit for `Patient/$export`. */
  groupId: z.string().min(1).optional(),
});

export const ConfigSchema = z
  .object({
    /** Account and region; omit both for an environment-agnostic synthesis. */
    env: z
      .object({
        account: z.string().regex(/^\d{12}$/, 'a 12-digit account id'),
        region: z.string().regex(/^[a-z]{2}(-[a-z]+)+-\d$/, 'a region such as us-east-1'),
      })
      .optional(),
    /** Prefix of the stack names. */
    stackPrefix: z
      .string()
      .regex(/^[A-Za-z][A-Za-z0-9]*$/)
      .default('FhirAnalytics'),
    fhir: z.object({
      baseUrl: HttpsUrl,
      auth: FhirAuthSchema,
      /** DICOMweb base URLs image models may read from; none turns the image models off. */
      dicomWebAllowList: z.array(HttpsUrl).default([]),
    }),
    notify: z
      .object({
        enabled: z.boolean().default(false),
        throttle: Throttle,
        /** The Subscriptions whose notifications are accepted. */
        subscriptions: z.array(NotifySubscriptionSchema).default([]),
        /** The `aud` notification JWTs carry; default the deployed notify URL. */
        audience: z.string().min(1).optional(),
      })
      .default({ enabled: false, throttle: { rateLimit: 50, burstLimit: 100 }, subscriptions: [] }),
    partnerApi: z
      .object({
        enabled: z.boolean().default(false),
        /** OAuth2 issuers of REST callers' access tokens (a JWT authorizer each; the function checks scopes). */
        issuers: z
          .array(
            z.object({
              id: Slug,
              issuer: HttpsUrl,
              audiences: z.array(z.string().min(1)).min(1),
              /** The issuer's public JWKS (the function verifies tokens itself too). */
              jwksUri: HttpsUrl,
            }),
          )
          .default([]),
        /** CDS Hooks clients (EHRs): their JWT `iss` and the JWKS URLs their `jku` may name. */
        cdsClients: z
          .array(z.object({ issuer: z.string().min(1), jwksUrls: z.array(HttpsUrl).min(1) }))
          .default([]),
        /** Where callers reach the API (a custom domain); default the stage URL. */
        publicBaseUrl: HttpsUrl.optional(),
        throttle: Throttle,
      })
      .default({
        enabled: false,
        issuers: [],
        cdsClients: [],
        throttle: { rateLimit: 50, burstLimit: 100 },
      }),
    models: z
      .object({
        /** Model ids to deploy; default: every `models/<id>/manifest.json`. */
        include: z.array(Slug).optional(),
        /** Per-model instance type overrides (default: the manifest's `serving.instanceType`). */
        instanceTypes: z.record(Slug, InstanceType).default({}),
        endpointMode: z.enum(['per-model', 'multi-model']).default('per-model'),
        /** Instance type of the multi-model endpoint; default ml.g5.xlarge if any model is neural. */
        multiModelInstanceType: InstanceType.optional(),
        /** Endpoint names are `<prefix><model id>` (`<prefix>multi-model` for one endpoint). */
        endpointPrefix: z
          .string()
          .regex(/^[a-z0-9-]*$/)
          .default('fhir-analytics-'),
        tritonVersion: z
          .string()
          .regex(/^\d{2}\.\d{2}$/)
          .default('24.09'),
        minInstances: z.number().int().min(1).default(1),
        maxInstances: z.number().int().min(1).default(2),
        /** Target of the `SageMakerVariantInvocationsPerInstance` tracking policy (per minute). */
        invocationsPerInstance: z.number().int().positive().default(200),
        /** Share of requests and responses captured to S3 (per-model endpoints); 0 turns it off. */
        dataCapturePercent: z.number().int().min(0).max(100).default(20),
      })
      .default({
        instanceTypes: {},
        endpointMode: 'per-model',
        endpointPrefix: 'fhir-analytics-',
        tritonVersion: '24.09',
        minInstances: 1,
        maxInstances: 2,
        invocationsPerInstance: 200,
        dataCapturePercent: 20,
      }),
    sweeps: z
      .object({
        enabled: z.boolean().default(false),
        schedules: z.array(ScheduleSchema).default([]),
        /** Concurrent Distributed Map children (each one staged partition of the export); the item worker's reserved concurrency. */
        maxConcurrency: z.number().int().min(1).max(1000).default(10),
      })
      .default({ enabled: false, schedules: [], maxConcurrency: 10 }),
    vpc: VpcSchema.default({ mode: 'none' }),
    alarms: z.object({
      email: z.email(),
      /** Function error rate (errors / invocations, percent) that raises an alarm. */
      errorRatePercent: z.number().positive().max(100).default(5),
      /** Average ModelLatency (milliseconds) that raises an alarm. */
      modelLatencyMs: z.number().int().positive().default(2000),
    }),
    logRetentionDays: z
      .number()
      .refine((d) => (RETENTION_DAYS as readonly number[]).includes(d), {
        error: `one of ${RETENTION_DAYS.join(', ')} (at least 90 days)`,
      })
      .default(365),
    /** Reserved concurrency per function (function folder name → executions). */
    reservedConcurrency: z.record(Slug, z.number().int().min(1)).default({}),
  })
  .superRefine((c, ctx) => {
    if (c.partnerApi.enabled && c.partnerApi.issuers.length === 0) {
      ctx.addIssue({
        code: 'custom',
        path: ['partnerApi', 'issuers'],
        message: 'at least one issuer when enabled',
      });
    }
    if (c.notify.enabled && c.notify.subscriptions.length === 0) {
      ctx.addIssue({
        code: 'custom',
        path: ['notify', 'subscriptions'],
        message: 'at least one subscription when enabled (notify accepts no others)',
      });
    }
    if (c.sweeps.enabled && c.sweeps.schedules.length === 0) {
      ctx.addIssue({
        code: 'custom',
        path: ['sweeps', 'schedules'],
        message: 'at least one schedule when enabled',
      });
    }
    if (c.models.maxInstances < c.models.minInstances) {
      ctx.addIssue({
        code: 'custom',
        path: ['models', 'maxInstances'],
        message: 'must be ≥ models.minInstances',
      });
    }
    const ids = c.partnerApi.issuers.map((i) => i.id);
    ids.forEach((id, n) => {
      if (ids.indexOf(id) !== n) {
        ctx.addIssue({
          code: 'custom',
          path: ['partnerApi', 'issuers', n, 'id'],
          message: `duplicate id ${id}`,
        });
      }
    });
  });

export type AppConfig = z.infer<typeof ConfigSchema>;
export type AppConfigInput = z.input<typeof ConfigSchema>;

/** Validates a raw configuration object; throws a `ConfigError` naming each bad field. */
export function parseConfig(raw: unknown, source = 'configuration'): AppConfig {
  const parsed = ConfigSchema.safeParse(raw);
  if (!parsed.success) {
    const detail = parsed.error.issues
      .map((i) => `${i.path.length > 0 ? i.path.join('.') : '(root)'}: ${i.message}`)
      .join('; ');
    throw new ConfigError(`invalid fhir-analytics ${source}: ${detail}`);
  }
  return parsed.data;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Deep merge for overrides: objects merge key by key, everything else replaces. */
export function mergeConfig(base: unknown, patch: unknown): unknown {
  if (!isPlainObject(base) || !isPlainObject(patch)) return patch;
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(patch)) out[k] = k in base ? mergeConfig(base[k], v) : v;
  return out;
}

/** Reads and validates a configuration file, applying optional overrides (object or JSON string). */
export function loadConfigFile(file: string, overrides?: unknown): AppConfig {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8')) as unknown;
  } catch (err) {
    throw new ConfigError(`cannot read fhir-analytics configuration ${file}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  let patch: unknown = overrides;
  if (typeof overrides === 'string') {
    try {
      patch = JSON.parse(overrides) as unknown;
    } catch (err) {
      throw new ConfigError(`context "overrides" is not JSON: ${(err as Error).message}`, { cause: err });
    }
  }
  return parseConfig(patch === undefined ? raw : mergeConfig(raw, patch), `configuration (${file})`);
}

/** The configured log retention as the CDK enum (the schema admits only enum values). */
export function logRetention(config: AppConfig): RetentionDays {
  const names = Object.keys(RetentionDays) as (keyof typeof RetentionDays)[];
  const name = names.find((n) => (RetentionDays[n] as number) === config.logRetentionDays);
  if (name === undefined) {
    throw new ConfigError(`logRetentionDays: ${config.logRetentionDays} is not a retention value`);
  }
  return RetentionDays[name];
}
