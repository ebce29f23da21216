/**
 * Partner authentication without HTTP: JWKS cache behaviour through an injected fetch, each
 * refusal code of the CDS client and OAuth verifiers, the replay cache and the token bucket.
 */
import { randomUUID } from 'node:crypto';
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK, type JWTPayload } from 'jose';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  AuthError,
  canPredict,
  canWriteReports,
  createAuthenticator,
  createMemoryReplayCache,
  type Authenticator,
} from '../../shared/partner/auth.js';
import { createJwksCache, JwksError, type FetchLike } from '../../shared/partner/jwks.js';
import { createTokenBucketLimiter } from '../../shared/partner/rate-limit.js';

const ISS = 'https://ehr.example.org';
const JWKS_URL = 'https://ehr.example.org/jwks.json';
const OAUTH_ISS = 'https://cognito-idp.us-east-1.amazonaws.com/us-east-1_Example';
const OAUTH_JWKS = `${OAUTH_ISS}/.well-known/jwks.json`;
const AUD = 'https://cds.example.org/cds-services/diabetes-gbm';

let privateKey: CryptoKey;
let publicJwk: JWK;
let fetches: string[];
let jwksBody: () => unknown;

const fakeFetch: FetchLike = (url) => {
  fetches.push(url);
  return Promise.resolve(new Response(JSON.stringify(jwksBody()), { status: 200 }));
};

beforeAll(async () => {
  const pair = await generateKeyPair('ES384');
  privateKey = pair.privateKey;
  publicJwk = { ...(await exportJWK(pair.publicKey)), kid: 'k1', alg: 'ES384' };
});

function sign(
  claims: JWTPayload,
  header: Record<string, unknown> = {},
  key: CryptoKey = privateKey,
): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ iss: ISS, aud: AUD, iat: now, exp: now + 120, jti: randomUUID(), ...claims })
    .setProtectedHeader({ alg: 'ES384', typ: 'JWT', kid: 'k1', ...header })
    .sign(key);
}

function authenticator(now?: () => Date): Authenticator {
  fetches = [];
  jwksBody = () => ({ keys: [publicJwk] });
  return createAuthenticator({
    cdsIssuers: [{ issuer: ISS, jwksUrls: [JWKS_URL] }],
    oauthIssuers: [{ issuer: OAUTH_ISS, jwksUri: OAUTH_JWKS, clientIds: ['partner-1'] }],
    jwks: createJwksCache({ fetch: fakeFetch }),
    replay: createMemoryReplayCache(),
    ...(now ? { now } : {}),
  });
}

async function refusal(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    if (err instanceof AuthError) return err.code;
    throw err;
  }
  return 'accepted';
}

describe('CDS client JWTs', () => {
  it('accepts a well-formed token once and names the client', async () => {
    const auth = authenticator();
    const token = await sign({ sub: 'ehr-client' });
    const principal = await auth.cdsClient(`Bearer ${token}`, [AUD]);
    expect(principal).toMatchObject({ kind: 'cds-client', issuer: ISS, clientId: 'ehr-client' });
    expect(await refusal(auth.cdsClient(`Bearer ${token}`, [AUD]))).toBe('replayed');
  });

  it.each([
    ['missing-token', undefined],
    ['malformed-token', 'Basic abc'],
    ['malformed-token', 'Bearer not.a.jwt'],
  ])('refuses %s (%s)', async (code, header) => {
    expect(await refusal(authenticator().cdsClient(header, [AUD]))).toBe(code);
  });

  it('refuses each broken claim or header with its own code', async () => {
    const now = Math.floor(Date.now() / 1000);
    const auth = authenticator();
    expect(await refusal(auth.cdsClient(`Bearer ${await sign({}, { typ: 'at+jwt' })}`, [AUD]))).toBe(
      'typ-not-allowed',
    );
    expect(await refusal(auth.cdsClient(`Bearer ${await sign({}, { kid: undefined })}`, [AUD]))).toBe(
      'kid-missing',
    );
    expect(await refusal(auth.cdsClient(`Bearer ${await sign({ iss: 'https://other' })}`, [AUD]))).toBe(
      'unknown-issuer',
    );
    expect(
      await refusal(auth.cdsClient(`Bearer ${await sign({}, { jku: 'https://evil.example/jwks' })}`, [AUD])),
    ).toBe('jku-not-allowed');
    expect(await refusal(auth.cdsClient(`Bearer ${await sign({}, { kid: 'unknown' })}`, [AUD]))).toBe(
      'key-not-found',
    );
    expect(await refusal(auth.cdsClient(`Bearer ${await sign({ jti: undefined })}`, [AUD]))).toBe(
      'claim-missing',
    );
    expect(await refusal(auth.cdsClient(`Bearer ${await sign({ aud: `${AUD}x` })}`, [AUD]))).toBe(
      'wrong-audience',
    );
    expect(
      await refusal(auth.cdsClient(`Bearer ${await sign({ exp: now - 60, iat: now - 120 })}`, [AUD])),
    ).toBe('expired');
    expect(await refusal(auth.cdsClient(`Bearer ${await sign({ nbf: now + 600 })}`, [AUD]))).toBe(
      'not-yet-valid',
    );
    expect(
      await refusal(auth.cdsClient(`Bearer ${await sign({ iat: now + 600, exp: now + 700 })}`, [AUD])),
    ).toBe('claim-invalid');
    expect(await refusal(auth.cdsClient(`Bearer ${await sign({ exp: now + 3600 })}`, [AUD]))).toBe(
      'lifetime-too-long',
    );
    const other = await generateKeyPair('ES384');
    expect(await refusal(auth.cdsClient(`Bearer ${await sign({}, {}, other.privateKey)}`, [AUD]))).toBe(
      'bad-signature',
    );
  });

  it('accepts aud as an array holding the endpoint', async () => {
    const token = await sign({ aud: ['https://elsewhere', AUD] });
    expect((await authenticator().cdsClient(`Bearer ${token}`, [AUD])).kind).toBe('cds-client');
  });

  it('reports an unreachable JWKS as jwks-unavailable', async () => {
    const auth = createAuthenticator({
      cdsIssuers: [{ issuer: ISS, jwksUrls: [JWKS_URL] }],
      oauthIssuers: [],
      jwks: createJwksCache({ fetch: () => Promise.resolve(new Response('no', { status: 503 })) }),
      replay: createMemoryReplayCache(),
    });
    expect(await refusal(auth.cdsClient(`Bearer ${await sign({})}`, [AUD]))).toBe('jwks-unavailable');
  });
});

describe('OAuth access tokens', () => {
  const access = (claims: JWTPayload, header: Record<string, unknown> = {}): Promise<string> =>
    sign({ iss: OAUTH_ISS, aud: undefined, jti: undefined, ...claims }, { typ: undefined, ...header });

  it('reads scopes from `scope` or `scp` and the client from client_id', async () => {
    const auth = authenticator();
    const p1 = await auth.oauthClient(
      `Bearer ${await access({ client_id: 'partner-1', scope: 'model/*.predict report.write' })}`,
    );
    expect(p1.clientId).toBe('partner-1');
    expect(canPredict(p1, 'diabetes-gbm')).toBe(true);
    expect(canWriteReports(p1)).toBe(true);
    const p2 = await auth.oauthClient(
      `Bearer ${await access({ client_id: 'partner-1', scp: ['model/diabetes-gbm.predict'] })}`,
    );
    expect(canPredict(p2, 'diabetes-gbm')).toBe(true);
    expect(canPredict(p2, 'breast-cancer-svm')).toBe(false);
    expect(canWriteReports(p2)).toBe(false);
  });

  it('is not subject to replay checks (one access token, many calls)', async () => {
    const auth = authenticator();
    const token = await access({ client_id: 'partner-1', scope: 'model/*.predict' });
    await auth.oauthClient(`Bearer ${token}`);
    expect((await auth.oauthClient(`Bearer ${token}`)).clientId).toBe('partner-1');
  });

  it('refuses clients off the allow-list, unknown issuers and HMAC', async () => {
    const auth = authenticator();
    expect(await refusal(auth.oauthClient(`Bearer ${await access({ client_id: 'stranger' })}`))).toBe(
      'client-not-allowed',
    );
    expect(
      await refusal(auth.oauthClient(`Bearer ${await access({ iss: ISS, client_id: 'partner-1' })}`)),
    ).toBe('unknown-issuer');
    const hmac = await new SignJWT({
      iss: OAUTH_ISS,
      client_id: 'partner-1',
      exp: Math.floor(Date.now() / 1000) + 60,
    })
      .setProtectedHeader({ alg: 'HS256', kid: 'k1' })
      .sign(new TextEncoder().encode('0123456789abcdef0123456789abcdef'));
    expect(await refusal(auth.oauthClient(`Bearer ${hmac}`))).toBe('alg-not-allowed');
  });
});

describe('JWKS cache', () => {
  const header = { alg: 'ES384', kid: 'k1' };

  it('fetches once per TTL and shares a fetch in flight', async () => {
    let t = 0;
    fetches = [];
    jwksBody = () => ({ keys: [publicJwk] });
    const cache = createJwksCache({ fetch: fakeFetch, ttlMs: 1000, now: () => t });
    await Promise.all([cache.key(JWKS_URL, header), cache.key(JWKS_URL, header)]);
    await cache.key(JWKS_URL, header);
    expect(fetches).toHaveLength(1);
    t = 1500;
    await cache.key(JWKS_URL, header);
    expect(fetches).toHaveLength(2);
  });

  it('refetches for an unknown kid (rotation), at most once per cooldown', async () => {
    let t = 0;
    fetches = [];
    jwksBody = () => ({ keys: [publicJwk] });
    const cache = createJwksCache({ fetch: fakeFetch, cooldownMs: 100, now: () => t });
    await cache.key(JWKS_URL, header);
    await expect(cache.key(JWKS_URL, { alg: 'ES384', kid: 'k2' })).rejects.toBeInstanceOf(JwksError);
    expect(fetches).toHaveLength(1);
    t = 200;
    jwksBody = () => ({ keys: [publicJwk, { ...publicJwk, kid: 'k2' }] });
    await cache.key(JWKS_URL, { alg: 'ES384', kid: 'k2' });
    expect(fetches).toHaveLength(2);
  });

  it('ignores symmetric and private keys in a key set', async () => {
    fetches = [];
    jwksBody = () => ({ keys: [{ kty: 'oct', k: 'c2VjcmV0', kid: 'k1', alg: 'HS256' }] });
    const cache = createJwksCache({ fetch: fakeFetch });
    await expect(cache.key(JWKS_URL, { alg: 'HS256', kid: 'k1' })).rejects.toMatchObject({
      code: 'key-not-found',
    });
  });
});

describe('replay cache', () => {
  it('remembers a key until it expires, and stays bounded', async () => {
    let t = 0;
    const cache = createMemoryReplayCache({ now: () => t, maxEntries: 2 });
    expect(await cache.claim('a', 100)).toBe(true);
    expect(await cache.claim('a', 100)).toBe(false);
    t = 101;
    expect(await cache.claim('a', 200)).toBe(true);
    await cache.claim('b', 300);
    await cache.claim('c', 300);
    // 'a' was evicted as the oldest: a bounded cache forgets the oldest claims first.
    expect(await cache.claim('a', 300)).toBe(true);
    expect(await cache.claim('c', 300)).toBe(false);
  });
});

describe('token bucket', () => {
  it('allows a burst, then refills at the rate, per key', () => {
    let t = 0;
    const limiter = createTokenBucketLimiter({ capacity: 2, refillPerSecond: 1, now: () => t });
    expect(limiter.take('a').ok).toBe(true);
    expect(limiter.take('a').ok).toBe(true);
    expect(limiter.take('a')).toEqual({ ok: false, retryAfterSeconds: 1 });
    expect(limiter.take('b').ok).toBe(true);
    t = 1000;
    expect(limiter.take('a').ok).toBe(true);
    expect(limiter.take('a').ok).toBe(false);
  });

  it('says how long to wait at slow rates', () => {
    const limiter = createTokenBucketLimiter({ capacity: 1, refillPerSecond: 0.1, now: () => 0 });
    limiter.take('a');
    expect(limiter.take('a')).toEqual({ ok: false, retryAfterSeconds: 10 });
  });
});
