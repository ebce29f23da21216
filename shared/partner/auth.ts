/**
 * Who may call the partner API, and with what rights.
 *
 * - CDS Hooks clients (EHRs) sign a fresh JWT for every call (CDS Hooks 2.0 "Trusting CDS
 *   Clients"): asymmetric `alg` only, `typ: JWT`, `kid` required, `jku` optional but, when
 *   present, one of the issuer's allow-listed JWKS URLs; `iss` allow-listed; `aud` the URL of
 *   the endpoint called; `exp`, `iat`, `jti` required; a `jti` seen before is a replay.
 * - REST partners present an OAuth2 client-credentials access token (Cognito or any OIDC
 *   issuer): issuer + JWKS URI from configuration, optional audience and client allow-list,
 *   scopes `model/<id>.predict`, `model/*.predict`, `report.write`.
 *
 * Every refusal is an `AuthError` with a machine `code` for the log; the HTTP answer is the
 * same 401 for all of them, so a caller learns nothing about why.
 */
import {
  decodeJwt,
  decodeProtectedHeader,
  errors as joseErrors,
  jwtVerify,
  type JWTPayload,
  type ProtectedHeaderParameters,
} from 'jose';
import { JwksError, type JwksCache } from './jwks.js';

/** Asymmetric JWS algorithms accepted; never `none`, never HMAC. ES384 and RS384 are the spec's recommendation. */
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

export type AuthFailureCode =
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

export class AuthError extends Error {
  override name = 'AuthError';
  readonly code: AuthFailureCode;
  constructor(code: AuthFailureCode, options?: { cause?: unknown }) {
    super(code, options);
    this.code = code;
  }
}

/** An authenticated caller. */
export interface Principal {
  readonly kind: 'cds-client' | 'oauth-client';
  readonly issuer: string;
  /** `sub` for CDS clients; `client_id` (or `azp`, `sub`) for OAuth clients. */
  readonly clientId: string;
  readonly scopes: ReadonlySet<string>;
  /** The rate-limit key: issuer and client. */
  readonly rateKey: string;
}

export interface CdsIssuer {
  /** The `iss` value. */
  readonly issuer: string;
  /** The JWKS URLs allowed for this issuer; the first is used when a token has no `jku`. */
  readonly jwksUrls: readonly string[];
}

export interface OAuthIssuer {
  readonly issuer: string;
  readonly jwksUri: string;
  /** When set, `aud` must contain one of these (Cognito access tokens carry none: leave it unset). */
  readonly audience?: string | readonly string[];
  /** When set, the token's client (`client_id`, `azp` or `sub`) must be one of these. */
  readonly clientIds?: readonly string[];
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

export interface AuthenticatorOptions {
  readonly cdsIssuers: readonly CdsIssuer[];
  readonly oauthIssuers: readonly OAuthIssuer[];
  readonly jwks: JwksCache;
  readonly replay: ReplayCache;
  /** Clock skew allowed on `exp`, `iat`, `nbf`, in seconds. Default 30. */
  readonly clockToleranceSeconds?: number;
  /** Longest CDS JWT lifetime (`exp - iat`) accepted, in seconds; bounds the replay cache. Default 300. */
  readonly maxCdsLifetimeSeconds?: number;
  readonly now?: () => Date;
}

export interface Authenticator {
  /** A CDS Hooks client JWT whose `aud` must be one of `audiences` (URLs of the endpoint called). */
  cdsClient(authorization: string | undefined, audiences: readonly string[]): Promise<Principal>;
  /** An OAuth2 access token. */
  oauthClient(authorization: string | undefined): Promise<Principal>;
}

function bearer(authorization: string | undefined): string {
  if (!authorization) throw new AuthError('missing-token');
  const match = /^Bearer[ ]+([A-Za-z0-9_\-.]+)$/i.exec(authorization.trim());
  if (!match?.[1]) throw new AuthError('malformed-token');
  return match[1];
}

interface Decoded {
  readonly token: string;
  readonly header: ProtectedHeaderParameters;
  readonly claims: JWTPayload;
}

/** Decodes without trusting anything, and refuses what no verification could accept. */
function decode(token: string): Decoded {
  let header: ProtectedHeaderParameters;
  let claims: JWTPayload;
  try {
    header = decodeProtectedHeader(token);
    claims = decodeJwt(token);
  } catch (err) {
    throw new AuthError('malformed-token', { cause: err });
  }
  if (typeof header.alg !== 'string' || !ASYMMETRIC_ALGORITHMS.includes(header.alg)) {
    throw new AuthError('alg-not-allowed');
  }
  if (typeof header.kid !== 'string' || header.kid === '') throw new AuthError('kid-missing');
  if (typeof claims.iss !== 'string') throw new AuthError('claim-missing');
  return { token, header, claims };
}

/** jose's errors → our codes. */
function mapVerifyError(err: unknown): AuthError {
  if (err instanceof AuthError) return err;
  if (err instanceof JwksError) return new AuthError(err.code, { cause: err });
  if (err instanceof joseErrors.JWTExpired) return new AuthError('expired', { cause: err });
  if (err instanceof joseErrors.JWTClaimValidationFailed) {
    const reason = err.reason;
    if (err.claim === 'aud') return new AuthError('wrong-audience', { cause: err });
    if (err.claim === 'nbf') return new AuthError('not-yet-valid', { cause: err });
    if (reason === 'missing') return new AuthError('claim-missing', { cause: err });
    return new AuthError('claim-invalid', { cause: err });
  }
  if (err instanceof joseErrors.JOSEAlgNotAllowed) return new AuthError('alg-not-allowed', { cause: err });
  if (err instanceof joseErrors.JWSSignatureVerificationFailed)
    return new AuthError('bad-signature', { cause: err });
  return new AuthError('malformed-token', { cause: err });
}

export function createAuthenticator(opts: AuthenticatorOptions): Authenticator {
  const cdsByIssuer = new Map(opts.cdsIssuers.map((i) => [i.issuer, i]));
  const oauthByIssuer = new Map(opts.oauthIssuers.map((i) => [i.issuer, i]));
  const tolerance = opts.clockToleranceSeconds ?? 30;
  const maxLifetime = opts.maxCdsLifetimeSeconds ?? 300;
  const now = opts.now ?? (() => new Date());

  return {
    async cdsClient(authorization, audiences) {
      const { token, header, claims } = decode(bearer(authorization));
      if (typeof header.typ !== 'string' || header.typ.toUpperCase() !== 'JWT') {
        throw new AuthError('typ-not-allowed');
      }
      const issuer = cdsByIssuer.get(claims.iss ?? '');
      if (!issuer) throw new AuthError('unknown-issuer');
      const jwksUrl = header.jku ?? issuer.jwksUrls[0];
      if (jwksUrl === undefined || !issuer.jwksUrls.includes(jwksUrl)) throw new AuthError('jku-not-allowed');
      const currentDate = now();
      let payload: JWTPayload;
      try {
        ({ payload } = await jwtVerify(token, (h) => opts.jwks.key(jwksUrl, h), {
          algorithms: [...ASYMMETRIC_ALGORITHMS],
          issuer: issuer.issuer,
          audience: [...audiences],
          requiredClaims: ['iss', 'aud', 'exp', 'iat', 'jti'],
          clockTolerance: tolerance,
          currentDate,
        }));
      } catch (err) {
        throw mapVerifyError(err);
      }
      const { exp, iat, jti } = payload as Required<Pick<JWTPayload, 'exp' | 'iat' | 'jti'>>;
      const nowSeconds = currentDate.getTime() / 1000;
      if (typeof jti !== 'string' || jti === '' || jti.length > 256) throw new AuthError('claim-invalid');
      if (iat > nowSeconds + tolerance) throw new AuthError('claim-invalid');
      if (exp - iat > maxLifetime) throw new AuthError('lifetime-too-long');
      // Claimed only after the signature checks out, so nobody can burn another client's jti.
      const fresh = await opts.replay.claim(`${issuer.issuer}|${jti}`, (exp + tolerance) * 1000);
      if (!fresh) throw new AuthError('replayed');
      const clientId = typeof payload.sub === 'string' ? payload.sub : issuer.issuer;
      return {
        kind: 'cds-client',
        issuer: issuer.issuer,
        clientId,
        scopes: new Set<string>(),
        rateKey: `${issuer.issuer}|${clientId}`,
      };
    },

    async oauthClient(authorization) {
      const { token, header, claims } = decode(bearer(authorization));
      // RFC 9068 access tokens say `at+jwt`; Cognito and many others say `JWT` or nothing.
      if (header.typ !== undefined && !['JWT', 'AT+JWT'].includes(header.typ.toUpperCase())) {
        throw new AuthError('typ-not-allowed');
      }
      const issuer = oauthByIssuer.get(claims.iss ?? '');
      if (!issuer) throw new AuthError('unknown-issuer');
      let payload: JWTPayload;
      try {
        // `jku` is ignored: the key set is always the configured one.
        ({ payload } = await jwtVerify(token, (h) => opts.jwks.key(issuer.jwksUri, h), {
          algorithms: [...ASYMMETRIC_ALGORITHMS],
          issuer: issuer.issuer,
          ...(issuer.audience === undefined
            ? {}
            : { audience: typeof issuer.audience === 'string' ? issuer.audience : [...issuer.audience] }),
          requiredClaims: ['iss', 'exp'],
          clockTolerance: tolerance,
          currentDate: now(),
        }));
      } catch (err) {
        throw mapVerifyError(err);
      }
      const claimed = payload as JWTPayload & {
        client_id?: unknown;
        azp?: unknown;
        scope?: unknown;
        scp?: unknown;
      };
      const clientId = [claimed.client_id, claimed.azp, claimed.sub].find(
        (v): v is string => typeof v === 'string' && v !== '',
      );
      if (clientId === undefined) throw new AuthError('claim-missing');
      if (issuer.clientIds && !issuer.clientIds.includes(clientId)) throw new AuthError('client-not-allowed');
      const scopes = new Set<string>(
        typeof claimed.scope === 'string'
          ? claimed.scope.split(' ').filter(Boolean)
          : Array.isArray(claimed.scp)
            ? claimed.scp.filter((s): s is string => typeof s === 'string')
            : [],
      );
      return {
        kind: 'oauth-client',
        issuer: issuer.issuer,
        clientId,
        scopes,
        rateKey: `${issuer.issuer}|${clientId}`,
      };
    },
  };
}

export const SCOPE_REPORT_WRITE = 'report.write';

/** `model/<id>.predict` or `model/*.predict`. */
export function canPredict(principal: Principal, modelId: string): boolean {
  return principal.scopes.has(`model/${modelId}.predict`) || principal.scopes.has('model/*.predict');
}

export function canWriteReports(principal: Principal): boolean {
  return principal.scopes.has(SCOPE_REPORT_WRITE);
}
