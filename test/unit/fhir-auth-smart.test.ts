/**
 * SMART Backend Services client against the local SMART token server and the embedded FHIR
 * server requiring its tokens: the client assertion per the spec (checked by the server and
 * read back here), token discovery, caching until shortly before expiry on a shared clock,
 * one refresh after a 401, and failures that name their step without leaking the assertion.
 */
import { decodeJwt, decodeProtectedHeader } from 'jose';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { startFhirServer, type RunningFhirServer } from '../../local/fhir/server.js';
import {
  createLocalSmartClient,
  LOCAL_SMART_SCOPES,
  startSmartTokenServer,
  type LocalSmartClient,
  type RunningSmartTokenServer,
} from '../../local/smart-token.js';
import { authorizedFetch, FhirAuthError, type FetchLike } from '../../shared/fhir/auth.js';
import { createSmartBackendAuth } from '../../shared/fhir/smart.js';

let fhir: RunningFhirServer;
let tokens: RunningSmartTokenServer;
let client: LocalSmartClient;
let clock: number;
const now = () => clock;

beforeEach(async () => {
  clock = Date.UTC(2026, 0, 1);
  client = await createLocalSmartClient();
  tokens = await startSmartTokenServer({ clients: [client.registration], tokenLifetimeSeconds: 60, now });
  fhir = await startFhirServer({ port: 0 });
  fhir.use(tokens.requireBearer());
});

afterEach(async () => {
  await fhir.close();
  await tokens.close();
});

/** A fetch that records token request forms (to read the assertion back). */
function recordingFetch(): { fetch: FetchLike; forms: URLSearchParams[] } {
  const forms: URLSearchParams[] = [];
  return {
    forms,
    fetch: (url, init) => {
      if (url === tokens.tokenUrl && typeof init.body === 'string')
        forms.push(new URLSearchParams(init.body));
      return fetch(url, init);
    },
  };
}

function smart(extra: { fetch?: FetchLike; tokenUrl?: string; credentials?: () => Promise<unknown> } = {}) {
  return createSmartBackendAuth({
    baseUrl: fhir.baseUrl,
    clientId: client.registration.clientId,
    scopes: LOCAL_SMART_SCOPES,
    credentials: () => Promise.resolve(client.credentials),
    now,
    ...extra,
  });
}

const patientUrl = () => `${fhir.baseUrl}/Patient?_count=1`;

describe('SMART Backend Services client', () => {
  it('discovers the token endpoint and sends a spec-shaped client assertion', async () => {
    // Prepare
    const rec = recordingFetch();
    const doFetch = authorizedFetch(smart({ fetch: rec.fetch }), { baseUrl: fhir.baseUrl, fetch: rec.fetch });
    // Act
    const res = await doFetch(patientUrl(), { method: 'GET' });
    // Assess
    expect(res.status).toBe(200);
    expect(tokens.stats).toMatchObject({ issued: 1, refused: 0, unauthorized: 0 });
    const form = rec.forms[0];
    expect(form?.get('grant_type')).toBe('client_credentials');
    expect(form?.get('scope')).toBe(LOCAL_SMART_SCOPES.join(' '));
    expect(form?.get('client_assertion_type')).toBe('urn:ietf:params:oauth:client-assertion-type:jwt-bearer');
    const assertion = form?.get('client_assertion') ?? '';
    const header = decodeProtectedHeader(assertion);
    const claims = decodeJwt(assertion);
    expect(header).toMatchObject({ alg: 'ES384', typ: 'JWT', kid: client.credentials.privateKeyJwk.kid });
    expect(claims).toMatchObject({
      iss: client.registration.clientId,
      sub: client.registration.clientId,
      aud: tokens.tokenUrl,
    });
    expect((claims.exp ?? 0) - (claims.iat ?? 0)).toBeLessThanOrEqual(300);
    expect(claims.jti).toMatch(/^[0-9a-f-]{36}$/);
  });

  it('signs with RS384 and carries jku when the client registered a JWKS URL', async () => {
    const rsa = await createLocalSmartClient({ clientId: 'rsa-client', alg: 'RS384' });
    const jku = 'https://client.example.org/.well-known/jwks.json';
    tokens.register({ ...rsa.registration, jwksUrl: jku });
    const rec = recordingFetch();
    const auth = createSmartBackendAuth({
      baseUrl: fhir.baseUrl,
      clientId: 'rsa-client',
      scopes: ['system/Patient.rs'],
      tokenUrl: tokens.tokenUrl,
      credentials: () => Promise.resolve({ ...rsa.credentials, jku }),
      fetch: rec.fetch,
      now,
    });
    const res = await authorizedFetch(auth, { baseUrl: fhir.baseUrl })(patientUrl(), { method: 'GET' });
    expect(res.status).toBe(200);
    expect(decodeProtectedHeader(rec.forms[0]?.get('client_assertion') ?? '')).toMatchObject({
      alg: 'RS384',
      jku,
    });
  });

  it('keeps the token until shortly before it expires, then fetches a new one before the server refuses it', async () => {
    const doFetch = authorizedFetch(smart(), { baseUrl: fhir.baseUrl });
    await doFetch(patientUrl(), { method: 'GET' });
    clock += 30_000;
    await doFetch(patientUrl(), { method: 'GET' });
    expect(tokens.stats.issued).toBe(1);
    clock += 20_000; // 50 s of a 60 s token: inside the refresh margin (a fifth of the lifetime)
    const res = await doFetch(patientUrl(), { method: 'GET' });
    expect(res.status).toBe(200);
    expect(tokens.stats).toMatchObject({ issued: 2, unauthorized: 0 });
  });

  it('shares one token request between concurrent callers', async () => {
    const doFetch = authorizedFetch(smart(), { baseUrl: fhir.baseUrl });
    const answers = await Promise.all([1, 2, 3, 4].map(() => doFetch(patientUrl(), { method: 'GET' })));
    expect(answers.map((r) => r.status)).toEqual([200, 200, 200, 200]);
    expect(tokens.stats.issued).toBe(1);
  });

  it('refreshes once after a 401 and succeeds; a second 401 is returned, not looped on', async () => {
    const doFetch = authorizedFetch(smart(), { baseUrl: fhir.baseUrl });
    await doFetch(patientUrl(), { method: 'GET' });
    tokens.revokeAll();
    const res = await doFetch(patientUrl(), { method: 'GET' });
    expect(res.status).toBe(200);
    expect(tokens.stats).toMatchObject({ issued: 2, unauthorized: 1 });

    // A server that refuses every token: one refresh, then the 401 goes back to the caller.
    fhir.use((_req, out) => {
      out.writeHead(401).end();
      return true;
    });
    tokens.revokeAll();
    const refused = await doFetch(patientUrl(), { method: 'GET' });
    expect(refused.status).toBe(401);
    expect(tokens.stats.issued).toBe(3);
  });

  it('names the token step when the server refuses the client, without the assertion', async () => {
    const stranger = await createLocalSmartClient({ clientId: client.registration.clientId });
    const auth = smart({ credentials: () => Promise.resolve(stranger.credentials) });
    const err = await auth
      .getAuthHeaders({ method: 'GET', url: patientUrl(), headers: {} })
      .catch((e: unknown) => e as FhirAuthError);
    expect(err).toBeInstanceOf(FhirAuthError);
    expect(err).toMatchObject({ step: 'token', status: 401 });
    expect(err.message).toContain('invalid_client');
    expect(err.message).not.toMatch(/eyJ/);
    expect(tokens.stats.refused).toBe(1);
  });

  it('names the discovery step when the server publishes no SMART configuration', async () => {
    const auth = createSmartBackendAuth({
      baseUrl: `${tokens.url}/no-fhir-here`,
      clientId: client.registration.clientId,
      scopes: LOCAL_SMART_SCOPES,
      credentials: () => Promise.resolve(client.credentials),
    });
    const err = await auth
      .getAuthHeaders({ method: 'GET', url: patientUrl(), headers: {} })
      .catch((e: unknown) => e as FhirAuthError);
    expect(err).toMatchObject({ step: 'discovery', status: 404 });
  });
});
