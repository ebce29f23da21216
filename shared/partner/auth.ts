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
import type { JWTPayload } from 'jose';
import {
  bearerToken,
  JwtError,
  verifyJwt,
  type JwtFailureCode,
  type JwtPolicy,
  type ReplayCache,
  type TrustedIssuer,
} from '../auth/jwt.js';
import type { JwksCache } from './jwks.js';

export {
  ASYMMETRIC_ALGORITHMS,
  createMemoryReplayCache,
  JwtError as AuthError,
  type ReplayCache,
} from '../auth/jwt.js';
export type AuthFailureCode = JwtFailureCode;

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

/** The scopes of an access token: `scope` (space-separated, RFC 8693) or `scp` (an array). */
function scopesOf(claimed: { scope?: unknown; scp?: unknown }): Set<string> {
  return new Set<string>(
    typeof claimed.scope === 'string'
      ? claimed.scope.split(' ').filter(Boolean)
      : Array.isArray(claimed.scp)
        ? claimed.scp.filter((s): s is string => typeof s === 'string')
        : [],
  );
}

export function createAuthenticator(opts: AuthenticatorOptions): Authenticator {
  const cdsByIssuer = new Map<string, TrustedIssuer>(
    opts.cdsIssuers.map((i) => [
      i.issuer,
      { issuer: i.issuer, keys: { jwksUrls: i.jwksUrls, jku: 'allow-listed', cache: opts.jwks } },
    ]),
  );
  const oauthByIssuer = new Map(opts.oauthIssuers.map((i) => [i.issuer, i]));
  // `jku` is ignored for OAuth tokens: the key set is always the configured one.
  const oauthTrusted = (iss: string): TrustedIssuer | undefined => {
    const i = oauthByIssuer.get(iss);
    return i && { issuer: i.issuer, keys: { jwksUrls: [i.jwksUri], jku: 'ignored', cache: opts.jwks } };
  };
  const tolerance = opts.clockToleranceSeconds ?? 30;
  const maxLifetime = opts.maxCdsLifetimeSeconds ?? 300;
  const now = opts.now ?? (() => new Date());
  const base = (): Pick<JwtPolicy, 'requireKid' | 'clockToleranceSeconds' | 'currentDate'> => ({
    requireKid: true,
    clockToleranceSeconds: tolerance,
    currentDate: now(),
  });

  return {
    async cdsClient(authorization, audiences) {
      const { issuer, payload } = await verifyJwt(bearerToken(authorization), {
        ...base(),
        issuer: (iss) => cdsByIssuer.get(iss),
        typ: { allowed: ['JWT'], optional: false },
        audience: audiences,
        requiredClaims: ['aud', 'exp', 'iat', 'jti'],
        replay: { cache: opts.replay, maxLifetimeSeconds: maxLifetime },
      });
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
      const { issuer, payload } = await verifyJwt(bearerToken(authorization), {
        ...base(),
        issuer: oauthTrusted,
        // RFC 9068 access tokens say `at+jwt`; Cognito and many others say `JWT` or nothing.
        typ: { allowed: ['JWT', 'AT+JWT'], optional: true },
        audience: (iss) => oauthByIssuer.get(iss)?.audience,
        requiredClaims: ['exp'],
      });
      const claimed = payload as JWTPayload & {
        client_id?: unknown;
        azp?: unknown;
        scope?: unknown;
        scp?: unknown;
      };
      const clientId = [claimed.client_id, claimed.azp, claimed.sub].find(
        (v): v is string => typeof v === 'string' && v !== '',
      );
      if (clientId === undefined) throw new JwtError('claim-missing');
      const allowed = oauthByIssuer.get(issuer.issuer)?.clientIds;
      if (allowed && !allowed.includes(clientId)) throw new JwtError('client-not-allowed');
      return {
        kind: 'oauth-client',
        issuer: issuer.issuer,
        clientId,
        scopes: scopesOf(claimed),
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
