/**
 * The shared JWT verifier (shared/auth/jwt.ts) on its own: bearer parsing, where keys come from
 * (inline public keys only; JWKS URLs with `jku` allow-listed or ignored), `typ` policies, a
 * per-issuer audience, and one use per token (`jti`, `iat`, lifetime). The callers' policies on
 * top of it are pinned by notify-auth.test.ts and partner-auth.test.ts.
 */
import { randomUUID } from 'node:crypto';
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK, type JWTPayload } from 'jose';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  bearerToken,
  createMemoryReplayCache,
  JwtError,
  verifyJwt,
  type IssuerKeys,
  type JwtPolicy,
} from '../../shared/auth/jwt.js';
import { createJwksCache, type FetchLike } from '../../shared/partner/jwks.js';

const ISS = 'https://issuer.example';
const URL_A = 'https://issuer.example/a.json';
const URL_B = 'https://issuer.example/b.json';
const AUD = 'https://api.example/x';

let privateKey: CryptoKey;
let publicJwk: JWK;
let privateJwk: JWK;
let fetched: string[];

const fetchKeys: FetchLike = (url) => {
  fetched.push(url);
  return Promise.resolve(new Response(JSON.stringify({ keys: [publicJwk] }), { status: 200 }));
};

beforeAll(async () => {
  const pair = await generateKeyPair('ES256', { extractable: true });
  privateKey = pair.privateKey;
  publicJwk = { ...(await exportJWK(pair.publicKey)), kid: 'k1', alg: 'ES256' };
  privateJwk = { ...(await exportJWK(pair.privateKey)), kid: 'k1', alg: 'ES256' };
});

function sign(claims: JWTPayload = {}, header: Record<string, unknown> = {}): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({ iss: ISS, aud: AUD, iat: now, exp: now + 60, jti: randomUUID(), ...claims })
    .setProtectedHeader({ alg: 'ES256', kid: 'k1', ...header })
    .sign(privateKey);
}

function policy(keys: IssuerKeys, extra: Partial<JwtPolicy> = {}): JwtPolicy {
  return {
    issuer: (iss) => (iss === ISS ? { issuer: ISS, keys } : undefined),
    requireKid: false,
    audience: AUD,
    requiredClaims: ['exp'],
    clockToleranceSeconds: 30,
    currentDate: new Date(),
    ...extra,
  };
}

function urlKeys(jku: 'allow-listed' | 'ignored'): IssuerKeys {
  fetched = [];
  return { jwksUrls: [URL_A, URL_B], jku, cache: createJwksCache({ fetch: fetchKeys }) };
}

async function refusal(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    if (err instanceof JwtError) return err.code;
    throw err;
  }
  return 'accepted';
}

describe('bearerToken', () => {
  it('takes the token of a Bearer header and names what is wrong with any other', () => {
    expect(bearerToken('Bearer a.b.c')).toBe('a.b.c');
    expect(bearerToken('  bearer   a.b.c ')).toBe('a.b.c');
    expect(() => bearerToken(undefined)).toThrow(expect.objectContaining({ code: 'missing-token' }));
    expect(() => bearerToken('Basic abc')).toThrow(expect.objectContaining({ code: 'malformed-token' }));
  });
});

describe('verifyJwt: keys', () => {
  it('verifies with inline keys and returns the issuer and claims', async () => {
    const verified = await verifyJwt(await sign({ sub: 's1' }), policy({ jwks: { keys: [publicJwk] } }));
    expect(verified.issuer.issuer).toBe(ISS);
    expect(verified.payload.sub).toBe('s1');
    expect(verified.header.alg).toBe('ES256');
  });

  it('uses only the public part of inline keys', async () => {
    // A private JWK (with `d`) is dropped, so no key is left to verify with.
    expect(await refusal(verifyJwt(await sign(), policy({ jwks: { keys: [privateJwk] } })))).toBe(
      'key-not-found',
    );
  });

  it("with jku allow-listed, fetches the token's jku when listed and refuses any other", async () => {
    const keys = urlKeys('allow-listed');
    expect(await refusal(verifyJwt(await sign({}, { jku: URL_B }), policy(keys)))).toBe('accepted');
    expect(fetched).toEqual([URL_B]);
    expect(await refusal(verifyJwt(await sign({}, { jku: 'https://evil.example/k' }), policy(keys)))).toBe(
      'jku-not-allowed',
    );
    expect(fetched).toEqual([URL_B]);
  });

  it('with jku ignored, always fetches the first URL', async () => {
    const keys = urlKeys('ignored');
    expect(await refusal(verifyJwt(await sign({}, { jku: 'https://evil.example/k' }), policy(keys)))).toBe(
      'accepted',
    );
    expect(fetched).toEqual([URL_A]);
  });

  it('refuses unknown issuers, symmetric algorithms and (when required) a missing kid', async () => {
    const keys: IssuerKeys = { jwks: { keys: [publicJwk] } };
    expect(await refusal(verifyJwt(await sign({ iss: 'https://other' }), policy(keys)))).toBe(
      'unknown-issuer',
    );
    const hs = await new SignJWT({ iss: ISS, aud: AUD, exp: Math.floor(Date.now() / 1000) + 60 })
      .setProtectedHeader({ alg: 'HS256' })
      .sign(new TextEncoder().encode('0123456789abcdef0123456789abcdef'));
    expect(await refusal(verifyJwt(hs, policy(keys)))).toBe('alg-not-allowed');
    const noKid = await sign({}, { kid: undefined });
    expect(await refusal(verifyJwt(noKid, policy(keys)))).toBe('accepted');
    expect(await refusal(verifyJwt(noKid, policy(keys, { requireKid: true })))).toBe('kid-missing');
  });
});

describe('verifyJwt: policy', () => {
  const keys = (): IssuerKeys => ({ jwks: { keys: [publicJwk] } });

  it('checks typ as the caller says: required, optional or not at all', async () => {
    const required = { typ: { allowed: ['JWT'], optional: false } };
    const optional = { typ: { allowed: ['JWT', 'AT+JWT'], optional: true } };
    expect(await refusal(verifyJwt(await sign(), policy(keys(), required)))).toBe('typ-not-allowed');
    expect(await refusal(verifyJwt(await sign({}, { typ: 'jwt' }), policy(keys(), required)))).toBe(
      'accepted',
    );
    expect(await refusal(verifyJwt(await sign(), policy(keys(), optional)))).toBe('accepted');
    expect(await refusal(verifyJwt(await sign({}, { typ: 'at+jwt' }), policy(keys(), optional)))).toBe(
      'accepted',
    );
    expect(await refusal(verifyJwt(await sign({}, { typ: 'dpop+jwt' }), policy(keys(), optional)))).toBe(
      'typ-not-allowed',
    );
    expect(await refusal(verifyJwt(await sign({}, { typ: 'dpop+jwt' }), policy(keys())))).toBe('accepted');
  });

  it("takes a per-issuer audience from a function of the token's issuer", async () => {
    const seen: string[] = [];
    const audience = (iss: string): string => {
      seen.push(iss);
      return `${AUD}/other`;
    };
    expect(await refusal(verifyJwt(await sign(), policy(keys(), { audience })))).toBe('wrong-audience');
    expect(seen).toEqual([ISS]);
    expect(
      await refusal(verifyJwt(await sign({ aud: 'anything' }), policy(keys(), { audience: undefined }))),
    ).toBe('accepted');
  });

  it('maps expiry and missing required claims to their codes', async () => {
    const now = Math.floor(Date.now() / 1000);
    expect(await refusal(verifyJwt(await sign({ exp: now - 120, iat: now - 180 }), policy(keys())))).toBe(
      'expired',
    );
    expect(
      await refusal(
        verifyJwt(await sign({ jti: undefined }), policy(keys(), { requiredClaims: ['exp', 'jti'] })),
      ),
    ).toBe('claim-missing');
  });

  it('with replay protection, accepts a token once and bounds iat and lifetime', async () => {
    const now = Math.floor(Date.now() / 1000);
    const once = {
      requiredClaims: ['exp', 'iat', 'jti'],
      replay: { cache: createMemoryReplayCache(), maxLifetimeSeconds: 300 },
    };
    const token = await sign();
    expect(await refusal(verifyJwt(token, policy(keys(), once)))).toBe('accepted');
    expect(await refusal(verifyJwt(token, policy(keys(), once)))).toBe('replayed');
    // The same token is accepted twice without replay protection.
    expect(await refusal(verifyJwt(token, policy(keys())))).toBe('accepted');
    expect(
      await refusal(verifyJwt(await sign({ iat: now - 10, exp: now + 600 }), policy(keys(), once))),
    ).toBe('lifetime-too-long');
    expect(
      await refusal(verifyJwt(await sign({ iat: now + 120, exp: now + 180 }), policy(keys(), once))),
    ).toBe('claim-invalid');
  });
});
