/**
 * Verification of signed JWTs from an allow-listed issuer, shared by the notify function
 * (subscription senders) and the partner API (CDS clients, OAuth clients). Each caller keeps
 * its own policy (which issuers, which `typ`, which claims, what a passing token grants);
 * this module does what they have in common:
 *
 * - the bearer token of an `Authorization` header;
 * - asymmetric `alg` only (never `none`, never HMAC with a shared key);
 * - the issuer (`iss`) looked up in the caller's allow-list, its keys either inline (public
 *   keys only) or fetched from its JWKS URLs through the {@link JwksCache}: the token's `jku`
 *   is used only when it is one of them (or ignored, as the caller says), the key by `kid`;
 * - signature, `iss`, `aud`, `exp`/`nbf` with clock tolerance and the caller's required claims
 *   through jose;
 * - optionally one use per token: `jti` claimed in a {@link ReplayCache} until the token
 *   expires, with `iat` not in the future and a bounded lifetime.
 *
 * Every refusal is a {@link JwtError} with a machine `code` for the log; callers answer them
 * all alike, so a sender learns nothing about why.
 */
import {
  createLocalJWKSet,
  decodeJwt,
  decodeProtectedHeader,
  errors as joseErrors,
  jwtVerify,
  type JSONWebKeySet,
  type JWTPayload,
  type JWTVerifyGetKey,
  type ProtectedHeaderParameters,
} from 'jose';
import { JwksError, type JwksCache } from '../partner/jwks.js';

/** Asymmetric JWS algorithms accepted; never `none`, never HMAC. ES384 and RS384 are CDS Hooks' recommendation. */
export const ASYMMETRIC_ALGORITHMS: readonly string[] = [
  'ES256',
  'ES384',
  'ES512',
  'RS256',
  'RS384',
  'RS512',
  'PS256',
  'PS384',
  'PS512',
  'EdDSA',
];

export type JwtFailureCode =
  | 'missing-token'
  | 'malformed-token'
  | 'alg-not-allowed'
  | 'typ-not-allowed'
  | 'kid-missing'
  | 'unknown-issuer'
  | 'jku-not-allowed'
  | 'jwks-unavailable'
  | 'key-not-found'
  | 'bad-signature'
  | 'expired'
  | 'not-yet-valid'
  | 'wrong-audience'
  | 'claim-missing'
  | 'claim-invalid'
  | 'lifetime-too-long'
  | 'client-not-allowed'
  | 'replayed';

/** A refusal with a machine `code` (the message is the code too): for logs, never for the caller. */
export class AuthRefusal<Code extends string> extends Error {
  readonly code: Code;
  constructor(code: Code, options?: { cause?: unknown }) {
    super(code, options);
    this.code = code;
  }
}

export class JwtError extends AuthRefusal<JwtFailureCode> {
  override name = 'JwtError';
}

/** The token of `Authorization: Bearer <token>`; `missing-token` or `malformed-token` otherwise. */
export function bearerToken(authorization: string | undefined): string {
  if (!authorization) throw new JwtError('missing-token');
  const match = /^Bearer[ ]+([A-Za-z0-9_\-.]+)$/i.exec(authorization.trim());
  if (!match?.[1]) throw new JwtError('malformed-token');
  return match[1];
}

/** Remembers `jti`s until they expire. An interface so that DynamoDB (conditional put with TTL) can back it. */
export interface ReplayCache {
  /** True the first time `key` is seen; false while a previous claim has not expired. */
  claim(key: string, expiresAtMs: number): Promise<boolean>;
}

/** In-memory replay cache with expiry and a bound on entries (oldest evicted first). */
export function createMemoryReplayCache(opts: { maxEntries?: number; now?: () => number } = {}): ReplayCache {
  const maxEntries = opts.maxEntries ?? 100_000;
  const now = opts.now ?? Date.now;
  const seen = new Map<string, number>();
  return {
    claim(key, expiresAtMs) {
      const t = now();
      const previous = seen.get(key);
      if (previous !== undefined && previous > t) return Promise.resolve(false);
      seen.delete(key);
      seen.set(key, expiresAtMs);
      if (seen.size > maxEntries) {
        for (const [k, exp] of seen) {
          if (seen.size <= maxEntries) break;
          // Expired entries go first; when none is expired, the oldest claim goes.
          if (exp <= t || seen.size > maxEntries) seen.delete(k);
        }
      }
      return Promise.resolve(true);
    },
  };
}

/** Where an allow-listed issuer's verification keys are. */
export type IssuerKeys =
  /** A key set given inline (private and symmetric entries are dropped). */
  | { readonly jwks: { readonly keys: readonly Record<string, unknown>[] } }
  /**
   * Key sets at these URLs, fetched through `cache`. With `jku: 'allow-listed'` a token's `jku`
   * names the set and must be one of the URLs (no `jku`: the first); with `jku: 'ignored'` the
   * first URL is always used.
   */
  | {
      readonly jwksUrls: readonly string[];
      readonly jku: 'allow-listed' | 'ignored';
      readonly cache: JwksCache;
    };

type Audience = string | readonly string[];

/** An issuer on the caller's allow-list. */
export interface TrustedIssuer {
  /** The `iss` value. */
  readonly issuer: string;
  readonly keys: IssuerKeys;
}

export interface JwtPolicy {
  /** The allow-list: the trusted issuer for an `iss`, or undefined (`unknown-issuer`). */
  readonly issuer: (iss: string) => TrustedIssuer | undefined;
  /** Accepted `typ` header values (compared in upper case); `optional` also accepts none. Default: any. */
  readonly typ?: { readonly allowed: readonly string[]; readonly optional: boolean };
  /** Refuse a token without `kid` before any key lookup (`kid-missing`). */
  readonly requireKid: boolean;
  /**
   * `aud` must be (or contain) one of these; undefined: `aud` is not checked. A function gives
   * the audience of the issuer that signed (its `iss`), for per-issuer configuration.
   */
  readonly audience?: Audience | ((issuer: string) => Audience | undefined);
  /** Claims that must be present (beyond `iss`, always required). */
  readonly requiredClaims: readonly string[];
  /** Clock skew allowed on `exp`, `nbf` and `iat`, in seconds. */
  readonly clockToleranceSeconds: number;
  readonly currentDate: Date;
  /**
   * One use per token: `jti` (a string of at most 256 characters) claimed as `<iss>|<jti>` until
   * `exp` + tolerance; `iat` may not lie in the future and `exp - iat` may not exceed
   * `maxLifetimeSeconds` (which bounds the cache). Needs `exp`, `iat` and `jti` in `requiredClaims`.
   */
  readonly replay?: { readonly cache: ReplayCache; readonly maxLifetimeSeconds: number };
}

export interface VerifiedJwt {
  readonly issuer: TrustedIssuer;
  readonly header: ProtectedHeaderParameters;
  readonly payload: JWTPayload;
}

/** Public asymmetric keys only: symmetric (`oct`) and private entries are dropped. */
export function publicKeysOnly(jwks: { readonly keys: readonly Record<string, unknown>[] }): JSONWebKeySet {
  return { keys: jwks.keys.filter((k) => k.kty !== 'oct' && !('d' in k)) };
}

/** Decodes without trusting anything, and refuses what no verification could accept. */
function decode(
  token: string,
  requireKid: boolean,
): { header: ProtectedHeaderParameters; claims: JWTPayload } {
  let header: ProtectedHeaderParameters;
  let claims: JWTPayload;
  try {
    header = decodeProtectedHeader(token);
    claims = decodeJwt(token);
  } catch (err) {
    throw new JwtError('malformed-token', { cause: err });
  }
  if (typeof header.alg !== 'string' || !ASYMMETRIC_ALGORITHMS.includes(header.alg)) {
    throw new JwtError('alg-not-allowed');
  }
  if (requireKid && (typeof header.kid !== 'string' || header.kid === '')) throw new JwtError('kid-missing');
  if (typeof claims.iss !== 'string') throw new JwtError('claim-missing');
  return { header, claims };
}

function keyGetter(keys: IssuerKeys, header: ProtectedHeaderParameters): JWTVerifyGetKey {
  if ('jwks' in keys) return createLocalJWKSet(publicKeysOnly(keys.jwks));
  const url = keys.jku === 'allow-listed' ? (header.jku ?? keys.jwksUrls[0]) : keys.jwksUrls[0];
  if (url === undefined || !keys.jwksUrls.includes(url)) throw new JwtError('jku-not-allowed');
  return (h) => keys.cache.key(url, h);
}

/** jose's and the JWKS cache's errors → our codes. */
function mapVerifyError(err: unknown): JwtError {
  if (err instanceof JwtError) return err;
  if (err instanceof JwksError) return new JwtError(err.code, { cause: err });
  if (err instanceof joseErrors.JWTExpired) return new JwtError('expired', { cause: err });
  if (err instanceof joseErrors.JWTClaimValidationFailed) {
    if (err.claim === 'aud') return new JwtError('wrong-audience', { cause: err });
    if (err.claim === 'nbf') return new JwtError('not-yet-valid', { cause: err });
    if (err.reason === 'missing') return new JwtError('claim-missing', { cause: err });
    return new JwtError('claim-invalid', { cause: err });
  }
  if (err instanceof joseErrors.JWKSNoMatchingKey) return new JwtError('key-not-found', { cause: err });
  if (err instanceof joseErrors.JOSEAlgNotAllowed) return new JwtError('alg-not-allowed', { cause: err });
  if (err instanceof joseErrors.JWSSignatureVerificationFailed)
    return new JwtError('bad-signature', { cause: err });
  return new JwtError('malformed-token', { cause: err });
}

async function claimOnce(
  replay: NonNullable<JwtPolicy['replay']>,
  issuer: string,
  payload: JWTPayload,
  policy: JwtPolicy,
): Promise<void> {
  const { exp, iat, jti } = payload as Required<Pick<JWTPayload, 'exp' | 'iat' | 'jti'>>;
  const tolerance = policy.clockToleranceSeconds;
  const nowSeconds = policy.currentDate.getTime() / 1000;
  if (typeof jti !== 'string' || jti === '' || jti.length > 256) throw new JwtError('claim-invalid');
  if (iat > nowSeconds + tolerance) throw new JwtError('claim-invalid');
  if (exp - iat > replay.maxLifetimeSeconds) throw new JwtError('lifetime-too-long');
  // Claimed only after the signature checks out, so nobody can burn another client's jti.
  const fresh = await replay.cache.claim(`${issuer}|${jti}`, (exp + tolerance) * 1000);
  if (!fresh) throw new JwtError('replayed');
}

/** Verifies `token` under `policy`; throws {@link JwtError}. */
export async function verifyJwt(token: string, policy: JwtPolicy): Promise<VerifiedJwt> {
  const { header, claims } = decode(token, policy.requireKid);
  if (policy.typ) {
    const typ = header.typ;
    const ok = typ === undefined ? policy.typ.optional : policy.typ.allowed.includes(typ.toUpperCase());
    if (!ok) throw new JwtError('typ-not-allowed');
  }
  const issuer = policy.issuer(claims.iss ?? '');
  if (!issuer) throw new JwtError('unknown-issuer');
  const audience = typeof policy.audience === 'function' ? policy.audience(issuer.issuer) : policy.audience;
  let payload: JWTPayload;
  try {
    ({ payload } = await jwtVerify(token, keyGetter(issuer.keys, header), {
      algorithms: [...ASYMMETRIC_ALGORITHMS],
      issuer: issuer.issuer,
      ...(audience === undefined
        ? {}
        : { audience: typeof audience === 'string' ? audience : [...audience] }),
      requiredClaims: ['iss', ...policy.requiredClaims],
      clockTolerance: policy.clockToleranceSeconds,
      currentDate: policy.currentDate,
    }));
  } catch (err) {
    throw mapVerifyError(err);
  }
  if (policy.replay) await claimOnce(policy.replay, issuer.issuer, payload, policy);
  return { issuer, header, payload };
}
