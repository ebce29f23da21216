/**
 * SMART Backend Services (SMART App Launch 2.x, "backend services"): the `client_credentials`
 * grant with a `private_key_jwt` client assertion.
 *
 * - The client's key comes from a loader (in AWS: the Secrets Manager secret, see
 *   `secrets.ts`), read once and kept; a failed read is retried on the next call.
 * - The token endpoint is `tokenUrl` when configured, else `token_endpoint` of
 *   `<base>/.well-known/smart-configuration` (read once).
 * - The assertion is signed with RS384 or ES384: header `alg`, `kid`, `typ: JWT` and `jku` when
 *   the client registered a JWKS URL; claims `iss` = `sub` = client id, `aud` = the token
 *   endpoint, `exp` five minutes ahead at most, a fresh `jti`.
 * - The access token is kept until shortly before `expires_in` runs out (a fifth of its
 *   lifetime, at most a minute); concurrent callers share one token request; a 401 from the
 *   FHIR server drops it (see `authorizedFetch`).
 * Errors name the failing step (`credentials`, `discovery`, `assertion`, `token`) and never
 * carry the key, the assertion or the token.
 */
import { randomUUID } from 'node:crypto';
import { importJWK, importPKCS8, SignJWT, type CryptoKey, type JWK } from 'jose';
import * as z from 'zod';
import { FhirAuthError, type FetchLike, type FhirAuthProvider } from './auth.js';

export const SMART_ALGORITHMS = ['RS384', 'ES384'] as const;
export type SmartAlgorithm = (typeof SMART_ALGORITHMS)[number];

/**
 * The client's credentials as stored (the secret's JSON): the private key as a JWK (with its
 * `kid` and `alg`) or as PKCS#8 PEM with `kid` and `alg` beside it; `jku` is the URL of the
 * client's public JWKS when it registered one with the EHR; `clientId` overrides configuration.
 */
export const SmartCredentialsSchema = z
  .object({
    clientId: z.string().min(1).optional(),
    privateKeyJwk: z
      .object({ kty: z.enum(['RSA', 'EC']), d: z.string().min(1) })
      .catchall(z.unknown())
      .optional(),
    privateKeyPem: z.string().includes('PRIVATE KEY').optional(),
    kid: z.string().min(1).optional(),
    alg: z.enum(SMART_ALGORITHMS).optional(),
    jku: z.url({ protocol: /^https?$/ }).optional(),
  })
  .refine((c) => (c.privateKeyJwk === undefined) !== (c.privateKeyPem === undefined), {
    error: 'exactly one of privateKeyJwk and privateKeyPem',
  })
  .refine((c) => c.kid !== undefined || typeof c.privateKeyJwk?.['kid'] === 'string', {
    error: 'kid is required (in the JWK or beside it)',
    path: ['kid'],
  })
  .refine((c) => c.alg !== undefined || c.privateKeyJwk?.['alg'] !== undefined, {
    error: 'alg is required (RS384 or ES384, in the JWK or beside it)',
    path: ['alg'],
  });
export type SmartCredentials = z.infer<typeof SmartCredentialsSchema>;

export interface SmartBackendOptions {
  /** The FHIR base URL (discovery reads `<base>/.well-known/smart-configuration`). */
  readonly baseUrl: string;
  readonly clientId: string;
  readonly scopes: readonly string[];
  /** Token endpoint; default: discovered. */
  readonly tokenUrl?: string;
  /** Reads the client's credentials (called once; again only after a failure). */
  readonly credentials: () => Promise<unknown>;
  readonly fetch?: FetchLike;
  /** Epoch milliseconds. Default `Date.now`. */
  readonly now?: () => number;
  /** Per-request timeout for discovery and token requests, ms. Default 10,000. */
  readonly timeoutMs?: number;
}

interface SigningKey {
  readonly key: CryptoKey | Uint8Array;
  readonly alg: SmartAlgorithm;
  readonly kid: string;
  readonly jku: string | undefined;
  readonly clientId: string | undefined;
}

const TokenResponseSchema = z.object({
  access_token: z.string().min(1),
  token_type: z.string().refine((t) => t.toLowerCase() === 'bearer', 'token_type bearer'),
  expires_in: z.coerce.number().positive().optional(),
  scope: z.string().optional(),
});

const SmartConfigurationSchema = z.object({ token_endpoint: z.url() });

async function importSigningKey(raw: unknown): Promise<SigningKey> {
  const parsed = SmartCredentialsSchema.safeParse(raw);
  if (!parsed.success) {
    const detail = parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`);
    throw new FhirAuthError('credentials', `the stored client credentials are invalid: ${detail.join('; ')}`);
  }
  const c = parsed.data;
  const jwk = c.privateKeyJwk as JWK | undefined;
  const alg = (c.alg ?? jwk?.alg) as SmartAlgorithm;
  if (!(SMART_ALGORITHMS as readonly string[]).includes(alg)) {
    throw new FhirAuthError('credentials', `alg must be RS384 or ES384, not ${alg}`);
  }
  const kid = (c.kid ?? jwk?.kid) as string;
  try {
    const key = jwk ? await importJWK({ ...jwk, alg }, alg) : await importPKCS8(c.privateKeyPem ?? '', alg);
    return { key, alg, kid, jku: c.jku, clientId: c.clientId };
  } catch (err) {
    // jose's message names the problem (wrong curve, not a private key), never the key itself.
    throw new FhirAuthError('credentials', `cannot import the private key for ${alg}`, { cause: err });
  }
}

export function createSmartBackendAuth(opts: SmartBackendOptions): FhirAuthProvider {
  const doFetch: FetchLike = opts.fetch ?? ((url, init) => fetch(url, init));
  const now = opts.now ?? Date.now;
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const base = opts.baseUrl.replace(/\/+$/, '');
  let signing: Promise<SigningKey> | undefined;
  let tokenUrl: Promise<string> | undefined = opts.tokenUrl ? Promise.resolve(opts.tokenUrl) : undefined;
  let cached: { token: string; refreshAt: number } | undefined;
  let inFlight: Promise<string> | undefined;

  /** Keeps a successful result; forgets a failed one so the next call tries again. */
  const once = <T>(
    get: () => Promise<T> | undefined,
    set: (p: Promise<T> | undefined) => void,
    make: () => Promise<T>,
  ) => {
    const existing = get();
    if (existing) return existing;
    const p = make().catch((err: unknown) => {
      set(undefined);
      throw err;
    });
    set(p);
    return p;
  };

  const loadKey = () =>
    once(
      () => signing,
      (p) => {
        signing = p;
      },
      async () => {
        let raw: unknown;
        try {
          raw = await opts.credentials();
        } catch (err) {
          if (err instanceof FhirAuthError) throw err;
          throw new FhirAuthError('credentials', 'cannot read the client credentials', { cause: err });
        }
        return importSigningKey(raw);
      },
    );

  const discover = () =>
    once(
      () => tokenUrl,
      (p) => {
        tokenUrl = p;
      },
      async () => {
        const url = `${base}/.well-known/smart-configuration`;
        let res: Response;
        try {
          res = await doFetch(url, {
            method: 'GET',
            headers: { accept: 'application/json' },
            redirect: 'error',
            signal: AbortSignal.timeout(timeoutMs),
          });
        } catch (err) {
          throw new FhirAuthError('discovery', `${url} did not answer`, { cause: err });
        }
        if (!res.ok) {
          await res.body?.cancel();
          throw new FhirAuthError('discovery', `${url} answered ${res.status}`, { status: res.status });
        }
        const parsed = SmartConfigurationSchema.safeParse(await res.json().catch(() => undefined));
        if (!parsed.success) throw new FhirAuthError('discovery', `${url} names no token_endpoint`);
        return parsed.data.token_endpoint;
      },
    );

  const assertion = async (key: SigningKey, clientId: string, aud: string): Promise<string> => {
    const iat = Math.floor(now() / 1000);
    try {
      return await new SignJWT({})
        .setProtectedHeader({
          alg: key.alg,
          kid: key.kid,
          typ: 'JWT',
          ...(key.jku ? { jku: key.jku } : {}),
        })
        .setIssuer(clientId)
        .setSubject(clientId)
        .setAudience(aud)
        .setIssuedAt(iat)
        .setExpirationTime(iat + 300)
        .setJti(randomUUID())
        .sign(key.key);
    } catch (err) {
      throw new FhirAuthError('assertion', `cannot sign the client assertion with ${key.alg}`, {
        cause: err,
      });
    }
  };

  const requestToken = async (): Promise<string> => {
    const [key, url] = await Promise.all([loadKey(), discover()]);
    const clientId = key.clientId ?? opts.clientId;
    const form = new URLSearchParams({
      grant_type: 'client_credentials',
      scope: opts.scopes.join(' '),
      client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
      client_assertion: await assertion(key, clientId, url),
    });
    const requested = now();
    let res: Response;
    try {
      res = await doFetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
        body: form.toString(),
        redirect: 'error',
        signal: AbortSignal.timeout(timeoutMs),
      });
    } catch (err) {
      throw new FhirAuthError('token', `token endpoint ${url} did not answer`, { cause: err });
    }
    const body = (await res.json().catch(() => undefined)) as { error?: unknown } | undefined;
    if (!res.ok) {
      // RFC 6749 error codes (`invalid_client`, `invalid_scope`) are safe to report; descriptions may not be.
      const code =
        typeof body?.error === 'string' && /^[a-z_]{1,64}$/.test(body.error) ? ` (${body.error})` : '';
      throw new FhirAuthError('token', `token endpoint ${url} answered ${res.status}${code}`, {
        status: res.status,
      });
    }
    const parsed = TokenResponseSchema.safeParse(body);
    if (!parsed.success) {
      throw new FhirAuthError('token', `token endpoint ${url} answered without a bearer access_token`);
    }
    const lifetime = (parsed.data.expires_in ?? 300) * 1000;
    cached = {
      token: parsed.data.access_token,
      refreshAt: requested + lifetime - Math.min(60_000, lifetime / 5),
    };
    return cached.token;
  };

  const token = async (): Promise<string> => {
    if (cached && now() < cached.refreshAt) return cached.token;
    inFlight ??= requestToken().finally(() => {
      inFlight = undefined;
    });
    return inFlight;
  };

  return {
    mode: 'smart-backend-services',
    getAuthHeaders: async () => ({ authorization: `Bearer ${await token()}` }),
    invalidate: () => {
      cached = undefined;
      return true;
    },
  };
}
