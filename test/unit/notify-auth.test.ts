import { createHmac } from 'node:crypto';
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK } from 'jose';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  createInMemoryAuthStore,
  createJsonAuthStore,
  createLoaderAuthStore,
  RegistryError,
  SenderAuthError,
  signBody,
  verifySender,
  type SubscriptionRegistration,
} from '../../shared/notify/auth.js';
import { createJwksCache } from '../../shared/partner/jwks.js';

const SECRET = 'notify-test-secret-0123456789abcdef';
const ISSUER = 'https://ehr.example';
const AUD = 'https://api.example/notify';
const BODY = Buffer.from('{"resourceType":"Bundle","type":"history"}');

let publicJwk: JWK;
let privateKey: CryptoKey;
let otherKey: CryptoKey;

beforeAll(async () => {
  const pair = await generateKeyPair('ES384');
  privateKey = pair.privateKey;
  publicJwk = { ...(await exportJWK(pair.publicKey)), kid: 'k1', alg: 'ES384' };
  otherKey = (await generateKeyPair('ES384')).privateKey;
});

async function registration(
  extra: Partial<SubscriptionRegistration> = {},
): Promise<SubscriptionRegistration> {
  const store = createInMemoryAuthStore([
    {
      id: 'sub-1',
      hmac: { secret: SECRET },
      jwt: { issuer: ISSUER, jwks: { keys: [publicJwk] } },
      ...extra,
    },
  ]);
  const reg = await store.get('sub-1');
  if (!reg) throw new Error('registration missing');
  return reg;
}

function token(
  claims: { iss?: string; aud?: string } = {},
  key: CryptoKey = privateKey,
  exp: string | number = '5m',
) {
  const jwt = new SignJWT()
    .setProtectedHeader({ alg: 'ES384', kid: 'k1' })
    .setIssuer(claims.iss ?? ISSUER)
    .setAudience(claims.aud ?? AUD)
    .setIssuedAt();
  if (exp !== 0) jwt.setExpirationTime(exp);
  return jwt.sign(key);
}

/** The refusal code, or 'accepted'. */
async function outcome(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'accepted';
  } catch (err) {
    if (err instanceof SenderAuthError) return err.code;
    throw err;
  }
}

describe('HMAC signatures', () => {
  it('accepts sha256=<hex> and bare hex over the raw body', async () => {
    const reg = await registration();
    const hex = createHmac('sha256', SECRET).update(BODY).digest('hex');
    await expect(verifySender(reg, { rawBody: BODY, signature: `sha256=${hex}` })).resolves.toBe('hmac');
    await expect(verifySender(reg, { rawBody: BODY, signature: hex.toUpperCase() })).resolves.toBe('hmac');
    expect(signBody(SECRET, BODY)).toBe(`sha256=${hex}`);
  });

  it('refuses a forged, truncated or other-body signature, and a missing one', async () => {
    const reg = await registration();
    const forged = signBody('another-secret-0123456789abcdef', BODY);
    expect(await outcome(verifySender(reg, { rawBody: BODY, signature: forged }))).toBe('bad-signature');
    expect(
      await outcome(verifySender(reg, { rawBody: BODY, signature: signBody(SECRET, BODY).slice(0, 40) })),
    ).toBe('bad-signature');
    expect(
      await outcome(
        verifySender(reg, { rawBody: Buffer.from(`${BODY.toString()} `), signature: signBody(SECRET, BODY) }),
      ),
    ).toBe('bad-signature');
    expect(await outcome(verifySender(reg, { rawBody: BODY }))).toBe('no-credentials');
  });

  it('does not fall back to a valid token when a forged signature is present', async () => {
    const reg = await registration();
    const proof = {
      rawBody: BODY,
      signature: signBody('x'.repeat(20), BODY),
      authorization: `Bearer ${await token()}`,
    };
    expect(await outcome(verifySender(reg, proof, { audience: AUD }))).toBe('bad-signature');
  });

  it('refuses an unknown subscription', async () => {
    expect(await outcome(verifySender(undefined, { rawBody: BODY, signature: signBody(SECRET, BODY) }))).toBe(
      'unknown-subscription',
    );
  });
});

describe('JWT bearer tokens', () => {
  it('accepts an ES384 token from the registered issuer with aud = the notify URL', async () => {
    const reg = await registration({ hmac: undefined });
    await expect(
      verifySender(reg, { rawBody: BODY, authorization: `Bearer ${await token()}` }, { audience: AUD }),
    ).resolves.toBe('jwt');
  });

  it('refuses expired, wrong-audience, unknown-issuer, other-key and exp-less tokens', async () => {
    const reg = await registration({ hmac: undefined });
    const check = async (jwt: string): Promise<string> =>
      outcome(verifySender(reg, { rawBody: BODY, authorization: `Bearer ${jwt}` }, { audience: AUD }));
    expect(await check(await token({}, privateKey, Math.floor(Date.now() / 1000) - 120))).toBe('bad-token');
    expect(await check(await token({ aud: 'https://elsewhere.example/notify' }))).toBe('bad-token');
    expect(await check(await token({ iss: 'https://stranger.example' }))).toBe('bad-token');
    expect(await check(await token({}, otherKey))).toBe('bad-token');
    expect(await check(await token({}, privateKey, 0))).toBe('bad-token');
  });

  it('refuses alg none and HS256 (even keyed with the HMAC secret)', async () => {
    const reg = await registration({ hmac: undefined });
    const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url');
    const claims = { iss: ISSUER, aud: AUD, exp: Math.floor(Date.now() / 1000) + 300 };
    const none = `${b64({ alg: 'none', typ: 'JWT' })}.${b64(claims)}.`;
    const hs256 = await new SignJWT(claims)
      .setProtectedHeader({ alg: 'HS256', kid: 'k1' })
      .sign(Buffer.from(SECRET));
    for (const jwt of [none, hs256]) {
      expect(
        await outcome(
          verifySender(reg, { rawBody: BODY, authorization: `Bearer ${jwt}` }, { audience: AUD }),
        ),
      ).toBe('bad-token');
    }
  });

  it('needs an audience, and refuses a Basic header', async () => {
    const reg = await registration({ hmac: undefined });
    expect(
      await outcome(verifySender(reg, { rawBody: BODY, authorization: `Bearer ${await token()}` })),
    ).toBe('no-audience');
    expect(
      await outcome(
        verifySender(reg, { rawBody: BODY, authorization: 'Basic dXNlcjpwYXNz' }, { audience: AUD }),
      ),
    ).toBe('no-credentials');
  });

  it('fetches a jwksUrl through the JWKS cache', async () => {
    const store = createInMemoryAuthStore([
      { id: 'sub-2', jwt: { issuer: ISSUER, jwksUrl: 'https://ehr.example/jwks.json', audience: AUD } },
    ]);
    const urls: string[] = [];
    const jwks = createJwksCache({
      fetch: (url) => {
        urls.push(url);
        return Promise.resolve(new Response(JSON.stringify({ keys: [publicJwk] }), { status: 200 }));
      },
    });
    const reg = await store.get('sub-2');
    await expect(
      verifySender(reg, { rawBody: BODY, authorization: `Bearer ${await token()}` }, { jwks }),
    ).resolves.toBe('jwt');
    expect(urls).toEqual(['https://ehr.example/jwks.json']);
  });
});

describe('registries', () => {
  it('reads a JSON array and refuses bad documents, naming the field', async () => {
    const store = createJsonAuthStore(
      JSON.stringify([
        { id: 'a', hmac: { secret: SECRET }, resourceTypes: { Observation: { category: 'laboratory' } } },
      ]),
    );
    expect((await store.get('a'))?.resourceTypes).toEqual({ Observation: { category: 'laboratory' } });
    expect(await store.get('b')).toBeUndefined();
    expect(() => createJsonAuthStore('{')).toThrow(RegistryError);
    expect(() => createJsonAuthStore('[{"id":"a","hmac":{"secret":"short"}}]')).toThrow(/hmac\.secret/);
    expect(() => createJsonAuthStore('[{"id":"a"}]')).toThrow(RegistryError);
    expect(() => createJsonAuthStore('[{"id":"a","jwt":{"issuer":"x"}}]')).toThrow(/jwt/);
  });

  it('caches a loader (the shape of a Secrets Manager adapter) per subscription', async () => {
    let loads = 0;
    let now = 0;
    const store = createLoaderAuthStore(
      (id) => {
        loads++;
        return Promise.resolve(id === 'known' ? JSON.stringify({ hmac: { secret: SECRET } }) : undefined);
      },
      { ttlMs: 1000, now: () => now },
    );
    expect((await store.get('known'))?.hmac?.secret).toBe(SECRET);
    expect(await store.get('known')).toBeDefined();
    expect(await store.get('unknown')).toBeUndefined();
    expect(await store.get('../etc')).toBeUndefined();
    expect(loads).toBe(2);
    now = 2000;
    await store.get('known');
    expect(loads).toBe(3);
  });
});
