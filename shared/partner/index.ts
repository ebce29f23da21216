/**
 * Wiring of the partner API from configuration, once per cold start. Everything is built
 * from `Config` (no environment reads here) and every client can be replaced.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as z from 'zod';
import type { Config } from '../config.js';
import { ConfigError } from '../config.js';
import type { Logger } from '../log.js';
import type { PipelinePorts } from '../pipeline.js';
import { createPipelinePorts } from '../ports.js';
import { createPartnerApi, type PartnerApi, type PartnerApiOptions } from './api.js';
import {
  createAuthenticator,
  createMemoryReplayCache,
  type CdsIssuer,
  type OAuthIssuer,
  type ReplayCache,
} from './auth.js';
import { createJwksCache, type FetchLike } from './jwks.js';
import { createTokenBucketLimiter } from './rate-limit.js';

export { createPartnerApi, type PartnerApi, type PartnerApiOptions } from './api.js';
export * from './auth.js';
export { createJwksCache, type FetchLike, type JwksCache } from './jwks.js';
export { createTokenBucketLimiter, type RateLimiter } from './rate-limit.js';
export { openApiDocument } from './openapi.js';

const CdsIssuersSchema = z.array(z.object({ issuer: z.string().min(1), jwksUrls: z.array(z.url()).min(1) }));
const OAuthIssuersSchema = z.array(
  z.object({
    issuer: z.string().min(1),
    jwksUri: z.url(),
    audience: z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]).optional(),
    clientIds: z.array(z.string().min(1)).min(1).optional(),
  }),
);

function parseJsonSetting<T>(name: string, text: string, schema: z.ZodType<T>): T {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw new ConfigError(`invalid configuration: ${name}: not JSON`);
  }
  const parsed = schema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new ConfigError(
      `invalid configuration: ${name}: ${issue?.path.join('.') ?? ''} ${issue?.message ?? ''}`,
    );
  }
  return parsed.data;
}

export interface PartnerSettings {
  readonly publicBaseUrl: string | undefined;
  readonly cdsIssuers: readonly CdsIssuer[];
  readonly oauthIssuers: readonly OAuthIssuer[];
  readonly fhirServerAllowList: readonly string[];
  readonly rate: { readonly burst: number; readonly perSecond: number };
}

export function partnerSettings(config: Config): PartnerSettings {
  return {
    publicBaseUrl: config.PARTNER_PUBLIC_BASE_URL,
    cdsIssuers: parseJsonSetting('PARTNER_CDS_ISSUERS', config.PARTNER_CDS_ISSUERS, CdsIssuersSchema),
    oauthIssuers: parseJsonSetting('PARTNER_OAUTH_ISSUERS', config.PARTNER_OAUTH_ISSUERS, OAuthIssuersSchema),
    fhirServerAllowList: config.PARTNER_FHIR_ALLOWLIST.split(',')
      .map((s) => s.trim())
      .filter(Boolean),
    rate: { burst: config.PARTNER_RATE_BURST, perSecond: config.PARTNER_RATE_PER_SECOND },
  };
}

/** Reads `<modelsDir>/<id>/card.md` on request (ids are manifest ids, checked by the caller). */
export function modelCardReader(modelsDir: string): (id: string) => Promise<string | undefined> {
  return async (id) => {
    if (!/^[a-z0-9][a-z0-9-]{1,62}$/.test(id)) return undefined;
    try {
      return await readFile(join(modelsDir, id, 'card.md'), 'utf8');
    } catch {
      return undefined;
    }
  };
}

export interface PartnerApiOverrides extends Partial<Omit<PartnerApiOptions, 'publicBaseUrl'>> {
  readonly publicBaseUrl?: PartnerApiOptions['publicBaseUrl'];
  readonly ports?: PipelinePorts;
  /** Fetch for JWKS documents. */
  readonly fetch?: FetchLike;
  /** Default: in memory (one per instance). */
  readonly replay?: ReplayCache;
}

/** The partner API from configuration; `overrides` replace any piece (tests, the local stack). */
export async function createPartnerApiFromConfig(
  config: Config,
  logger: Logger,
  overrides: PartnerApiOverrides = {},
): Promise<PartnerApi> {
  const settings = partnerSettings(config);
  const publicBaseUrl = overrides.publicBaseUrl ?? settings.publicBaseUrl;
  if (publicBaseUrl === undefined) {
    throw new ConfigError('invalid configuration: PARTNER_PUBLIC_BASE_URL: required for the partner API');
  }
  const ports = overrides.ports ?? (await createPipelinePorts(config, logger));
  const authenticator =
    overrides.authenticator ??
    createAuthenticator({
      cdsIssuers: settings.cdsIssuers,
      oauthIssuers: settings.oauthIssuers,
      jwks: createJwksCache(overrides.fetch ? { fetch: overrides.fetch } : {}),
      replay: overrides.replay ?? createMemoryReplayCache(),
    });
  return createPartnerApi({
    ...overrides,
    ports,
    authenticator,
    rateLimiter:
      overrides.rateLimiter ??
      createTokenBucketLimiter({ capacity: settings.rate.burst, refillPerSecond: settings.rate.perSecond }),
    publicBaseUrl,
    fhirServerAllowList: overrides.fhirServerAllowList ?? settings.fhirServerAllowList,
    readCard: overrides.readCard ?? modelCardReader(config.MODELS_DIR),
    logger: overrides.logger ?? logger,
  });
}
