/**
 * Who may post notifications for a subscription, and how they prove it.
 *
 * Each subscription is registered with its credentials: an HMAC-SHA256 secret (the sender
 * signs the raw body: `X-Signature: sha256=<hex>`, or bare hex as Medplum sends it), and/or a
 * JWT issuer with its JWKS (`Authorization: Bearer <jwt>`, asymmetric algorithms only, `aud`
 * = the notify URL, `exp` required). Registrations come from a {@link SubscriptionAuthStore}:
 * in memory (tests, local), a JSON document (an environment variable), or any loader of one
 * JSON document per subscription (in AWS, a Secrets Manager secret per subscription: the
 * adapter is `loader = (id) => GetSecretValue(prefix + id).SecretString`).
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import * as z from 'zod';
import { AuthRefusal, verifyJwt as verifyTrustedJwt, type IssuerKeys } from '../auth/jwt.js';
import type { JwksCache } from '../partner/jwks.js';

const FHIR_ID = /^[A-Za-z0-9\-.]{1,64}$/;

export { ASYMMETRIC_ALGORITHMS } from '../auth/jwt.js';

const JwkSet = z.object({ keys: z.array(z.record(z.string(), z.unknown())).min(1) });

export const SubscriptionRegistrationSchema = z
  .object({
    /** The Subscription's logical id at the FHIR server (`Subscription/<id>`). */
    id: z.string().regex(FHIR_ID, 'a FHIR id'),
    /** Shared secret for `X-Signature` HMAC-SHA256 over the raw body. */
    hmac: z.object({ secret: z.string().min(16, 'at least 16 characters') }).optional(),
    /** JWT sender authentication. */
    jwt: z
      .object({
        issuer: z.string().min(1),
        /** The issuer's key set: a URL, or the keys inline. Public keys only. */
        jwksUrl: z.url().optional(),
        jwks: JwkSet.optional(),
        /** Expected `aud`; default the function's configured notify URL. */
        audience: z.string().min(1).optional(),
      })
      .refine((j) => j.jwksUrl !== undefined || j.jwks !== undefined, 'jwksUrl or jwks required')
      .optional(),
    /**
     * The resource types the subscription's topic covers, each with the search parameters of
     * its filter (`{"Observation": {"category": "laboratory"}}`): the `_lastUpdated` catch-up
     * searches these when the server has no `$events`, and legacy pings search them.
     */
    resourceTypes: z
      .record(z.string().regex(/^[A-Z][A-Za-z]+$/), z.record(z.string(), z.string()))
      .default({}),
  })
  .refine((r) => r.hmac !== undefined || r.jwt !== undefined, 'hmac or jwt required');
export type SubscriptionRegistration = z.infer<typeof SubscriptionRegistrationSchema>;
export type SubscriptionRegistrationInput = z.input<typeof SubscriptionRegistrationSchema>;

/** The registry of subscriptions and their credentials. */
export interface SubscriptionAuthStore {
  /** The registration of `Subscription/<id>`, or undefined when it is unknown. */
  get(subscriptionId: string): Promise<SubscriptionRegistration | undefined>;
}

export class RegistryError extends Error {
  override name = 'RegistryError';
}

function parseRegistration(raw: unknown, where: string): SubscriptionRegistration {
  const parsed = SubscriptionRegistrationSchema.safeParse(raw);
  if (!parsed.success) {
    const first = parsed.error.issues[0];
    throw new RegistryError(`${where}: invalid registration at ${first?.path.join('.') || '(root)'}`);
  }
  return parsed.data;
}

export function createInMemoryAuthStore(
  registrations: readonly SubscriptionRegistrationInput[] = [],
): SubscriptionAuthStore & { put(r: SubscriptionRegistrationInput): void } {
  const byId = new Map<string, SubscriptionRegistration>();
  const put = (r: SubscriptionRegistrationInput): void => {
    const reg = parseRegistration(r, 'registration');
    byId.set(reg.id, reg);
  };
  registrations.forEach(put);
  return { get: (id) => Promise.resolve(byId.get(id)), put };
}

/** A JSON array of registrations (e.g. the `NOTIFY_SUBSCRIPTIONS` variable); throws on a bad one. */
export function createJsonAuthStore(json: string): SubscriptionAuthStore {
  let raw: unknown;
  try {
    raw = JSON.parse(json);
  } catch {
    throw new RegistryError('subscription registry is not valid JSON');
  }
  if (!Array.isArray(raw)) throw new RegistryError('subscription registry must be a JSON array');
  return createInMemoryAuthStore(raw.map((r, i) => parseRegistration(r, `registration[${i}]`)));
}

/**
 * A registry over a loader of one JSON document per subscription (undefined: unknown), cached
 * for `ttlMs` (default 5 minutes). A Secrets Manager adapter is only the loader.
 */
export function createLoaderAuthStore(
  load: (subscriptionId: string) => Promise<string | undefined>,
  opts: { ttlMs?: number; now?: () => number } = {},
): SubscriptionAuthStore {
  const ttlMs = opts.ttlMs ?? 300_000;
  const now = opts.now ?? Date.now;
  const cache = new Map<string, { at: number; value: SubscriptionRegistration | undefined }>();
  return {
    async get(id) {
      if (!FHIR_ID.test(id)) return undefined;
      const hit = cache.get(id);
      if (hit && now() - hit.at < ttlMs) return hit.value;
      const text = await load(id);
      let value: SubscriptionRegistration | undefined;
      if (text !== undefined) {
        let raw: unknown;
        try {
          raw = JSON.parse(text);
        } catch {
          throw new RegistryError('registration is not valid JSON');
        }
        value = parseRegistration({ id, ...(raw as object) }, 'registration');
      }
      cache.set(id, { at: now(), value });
      return value;
    },
  };
}

/** Why a sender was refused: for logs only, the caller answers every case with the same 401. */
export type AuthFailure =
  'unknown-subscription' | 'no-credentials' | 'bad-signature' | 'bad-token' | 'no-audience';

export class SenderAuthError extends AuthRefusal<AuthFailure> {
  override name = 'SenderAuthError';
}

export interface SenderProof {
  /** The raw request body, exactly as received. */
  readonly rawBody: Buffer;
  /** The value of the signature header, if sent. */
  readonly signature?: string;
  /** The `Authorization` header, if sent. */
  readonly authorization?: string;
}

export interface VerifyOptions {
  /** Default `aud` for JWTs: the public notify URL. */
  readonly audience?: string;
  /** Fetches `jwksUrl` key sets (cached); needed only for registrations that use a URL. */
  readonly jwks?: JwksCache;
  /** Allowed clock skew in seconds for `exp`/`nbf`. Default 30. */
  readonly clockToleranceSeconds?: number;
  /** For tests: the current time. */
  readonly now?: () => Date;
}

/** The HMAC-SHA256 signature header value for a body: `sha256=<hex>`. */
export function signBody(secret: string, body: Buffer | string): string {
  return `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;
}

function hmacMatches(secret: string, body: Buffer, header: string): boolean {
  const hex = header.trim().replace(/^sha256=/i, '');
  if (!/^[0-9a-fA-F]{64}$/.test(hex)) return false;
  const expected = createHmac('sha256', secret).update(body).digest();
  return timingSafeEqual(expected, Buffer.from(hex, 'hex'));
}

/** The registration's JWT sender: its one issuer, keys inline or at its JWKS URL (a token's `jku` is ignored). */
async function verifyJwt(reg: SubscriptionRegistration, token: string, opts: VerifyOptions): Promise<void> {
  const jwt = reg.jwt;
  if (!jwt) throw new SenderAuthError('no-credentials');
  const audience = jwt.audience ?? opts.audience;
  if (!audience) throw new SenderAuthError('no-audience');
  let keys: IssuerKeys;
  if (jwt.jwks) {
    keys = { jwks: jwt.jwks };
  } else {
    if (!opts.jwks) throw new SenderAuthError('bad-token');
    keys = { jwksUrls: [jwt.jwksUrl ?? ''], jku: 'ignored', cache: opts.jwks };
  }
  try {
    await verifyTrustedJwt(token, {
      issuer: (iss) => (iss === jwt.issuer ? { issuer: jwt.issuer, keys } : undefined),
      requireKid: false,
      audience,
      requiredClaims: ['exp'],
      clockToleranceSeconds: opts.clockToleranceSeconds ?? 30,
      currentDate: opts.now ? opts.now() : new Date(),
    });
  } catch (err) {
    // Every JWT refusal is one code here; the shared verifier's finer code is the cause.
    throw new SenderAuthError('bad-token', { cause: err });
  }
}

/**
 * Checks the sender's proof against the subscription's registration; returns the method that
 * passed. A signature or token that is present and wrong fails, even if the other method is
 * configured: forged material is never "fallen back" from.
 */
export async function verifySender(
  reg: SubscriptionRegistration | undefined,
  proof: SenderProof,
  opts: VerifyOptions = {},
): Promise<'hmac' | 'jwt'> {
  if (!reg) throw new SenderAuthError('unknown-subscription');
  const bearer = /^Bearer\s+([A-Za-z0-9\-_.]+)$/i.exec(proof.authorization?.trim() ?? '')?.[1];
  if (reg.hmac && proof.signature !== undefined) {
    if (!hmacMatches(reg.hmac.secret, proof.rawBody, proof.signature))
      throw new SenderAuthError('bad-signature');
    return 'hmac';
  }
  if (reg.jwt && bearer) {
    await verifyJwt(reg, bearer, opts);
    return 'jwt';
  }
  throw new SenderAuthError('no-credentials');
}
