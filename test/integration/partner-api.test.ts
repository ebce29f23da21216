/**
 * The partner API's CDS Hooks service over real HTTP: the local functions gateway, the real
 * handler, the embedded stack (FHIR server, SageMaker endpoint server) and real ES384 tokens from
 * the local issuer; discovery, patient-view cards, feedback, and authentication. REST, bad input
 * and documents: partner-api-rest.test.ts.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { SignJWT, base64url } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CdsDiscoverySchema, CdsResponseSchema } from '../../shared/events/cds-hooks.js';
import {
  callHook,
  gateway,
  hookBody,
  issuer,
  limited,
  logLines,
  MODEL,
  patient,
  post,
  rogue,
  serviceUrl,
  stack,
  startPartnerApi,
  stopPartnerApi,
} from './partner-api-harness.js';

beforeAll(startPartnerApi);
afterAll(stopPartnerApi);

describe('CDS Hooks', () => {
  it('discovery lists one patient-view service per model, valid against the CDS Hooks schema', async () => {
    const res = await fetch(`${gateway.url}/cds-services`, {
      headers: { authorization: `Bearer ${await issuer.mintCds(`${gateway.url}/cds-services`)}` },
    });
    expect(res.status).toBe(200);
    const discovery = CdsDiscoverySchema.parse(await res.json());
    // One service per served model: the tabular ones today, sequence models as their extractors land.
    expect(discovery.services.map((s) => s.id)).toEqual(
      expect.arrayContaining(['breast-cancer-svm', 'diabetes-gbm', 'diabetes-onset-rf']),
    );
    expect(new Set(discovery.services.map((s) => s.id)).size).toBe(discovery.services.length);
    const gbm = discovery.services.find((s) => s.id === MODEL);
    expect(gbm?.hook).toBe('patient-view');
    expect(gbm?.prefetch?.patient).toBe('Patient/{{context.patientId}}');
    expect(gbm?.prefetch?.observations).toMatch(
      /^Observation\?patient=\{\{context\.patientId\}\}&code=.*2345-7/,
    );
  });

  it('answers patient-view from prefetch with a valid card linking the model card', async () => {
    const res = await callHook(hookBody());
    expect(res.status).toBe(200);
    const response = CdsResponseSchema.parse(await res.json());
    expect(response.cards).toHaveLength(1);
    const card = response.cards[0];
    expect(card?.summary.length).toBeLessThan(140);
    expect(['info', 'warning', 'critical']).toContain(card?.indicator);
    expect(card?.detail).toContain('Inputs the model was given');
    expect(card?.detail).toContain('glucose');
    // The features that drove the score, measured in the same model call.
    expect(card?.detail).toMatch(/Features that drove the score: \w+ \([+−][\d.]+\)/);
    expect(card?.source.url).toBe(`${gateway.url}/v1/models/${MODEL}/card`);
    const cardPage = await fetch(card?.source.url ?? '');
    expect(cardPage.status).toBe(200);
    expect(await cardPage.text()).toContain('Model card: diabetes-gbm');
  });

  it('fetches from an allow-listed fhirServer with fhirAuthorization when prefetch is absent, to the same score', async () => {
    const fromPrefetch = CdsResponseSchema.parse(await (await callHook(hookBody())).json());
    const res = await callHook(
      hookBody({
        prefetch: undefined,
        fhirServer: stack.fhir.baseUrl,
        fhirAuthorization: {
          access_token: 'opaque-ehr-token',
          token_type: 'Bearer',
          expires_in: 300,
          scope: 'patient/Patient.read patient/Observation.read',
          subject: 'fhir-analytics',
        },
      }),
    );
    expect(res.status).toBe(200);
    const fetched = CdsResponseSchema.parse(await res.json());
    expect(fetched.cards[0]?.summary).toBe(fromPrefetch.cards[0]?.summary);
  });

  it('answers 412 with neither prefetch nor FHIR access', async () => {
    const res = await callHook(hookBody({ prefetch: undefined }));
    expect(res.status).toBe(412);
    expect(((await res.json()) as { resourceType: string }).resourceType).toBe('OperationOutcome');
  });

  it('refuses a fhirServer that is not on the allow-list without contacting it (412)', async () => {
    let contacted = 0;
    const elsewhere: Server = createServer((_req, res) => {
      contacted++;
      res.end('{}');
    });
    await new Promise<void>((resolve) => elsewhere.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(elsewhere.address() as AddressInfo).port}/fhir`;
    try {
      const res = await callHook(
        hookBody({
          prefetch: undefined,
          fhirServer: url,
          fhirAuthorization: {
            access_token: 't',
            token_type: 'Bearer',
            expires_in: 300,
            scope: 's',
            subject: 'x',
          },
        }),
      );
      expect(res.status).toBe(412);
      expect(JSON.stringify(await res.json())).toContain('allow-list');
      expect(contacted).toBe(0);
    } finally {
      elsewhere.close();
    }
  });

  it('answers an info card naming the missing features when data is insufficient', async () => {
    const res = await callHook(hookBody({ prefetch: { patient, observations: null } }));
    expect(res.status).toBe(200);
    const [card] = CdsResponseSchema.parse(await res.json()).cards;
    expect(card?.indicator).toBe('info');
    expect(card?.summary).toContain('not enough data');
    expect(card?.detail).toContain('glucose');
    expect(card?.detail).not.toContain('Score');
  });

  it('accepts feedback and refuses malformed feedback', async () => {
    const ok = await post(`${serviceUrl()}/feedback`, await issuer.mintCds(serviceUrl()), {
      feedback: [
        { card: crypto.randomUUID(), outcome: 'overridden', outcomeTimestamp: '2024-01-01T00:00:00Z' },
      ],
    });
    expect(ok.status).toBe(200);
    const bad = await post(`${serviceUrl()}/feedback`, await issuer.mintCds(serviceUrl()), {
      feedback: [{ card: 'x', outcome: 'accepted', outcomeTimestamp: '2024-01-01T00:00:00Z' }],
    });
    expect(bad.status).toBe(400);
    expect(JSON.stringify(await bad.json())).toContain('acceptedSuggestions');
  });
});

describe('authentication', () => {
  const authCodes = (): unknown[] => logLines.filter((l) => l.msg === 'auth refused').map((l) => l.code);

  async function expect401(token: string | undefined, code: string): Promise<void> {
    const before = authCodes().length;
    const res = await callHook(hookBody(), token ?? '');
    expect(res.status).toBe(401);
    const body = (await res.json()) as { issue: { diagnostics: string }[] };
    expect(body.issue[0]?.diagnostics).toBe('authentication required');
    expect(authCodes().slice(before)).toEqual([code]);
  }

  it('refuses a missing token', async () => {
    const res = await post(serviceUrl(), undefined, hookBody());
    expect(res.status).toBe(401);
    expect(res.headers.get('www-authenticate')).toBe('Bearer');
  });

  it('refuses an expired token', async () => {
    const now = Math.floor(Date.now() / 1000);
    await expect401(await issuer.mint({ aud: serviceUrl(), iat: now - 600, exp: now - 300 }), 'expired');
  });

  it('refuses a token for another audience', async () => {
    await expect401(await issuer.mintCds(serviceUrl(gateway.url, 'breast-cancer-svm')), 'wrong-audience');
  });

  it('refuses alg none', async () => {
    const now = Math.floor(Date.now() / 1000);
    const header = base64url.encode(JSON.stringify({ alg: 'none', typ: 'JWT', kid: issuer.kid }));
    const payload = base64url.encode(
      JSON.stringify({
        iss: issuer.issuer,
        aud: serviceUrl(),
        iat: now,
        exp: now + 60,
        jti: crypto.randomUUID(),
      }),
    );
    await expect401(`${header}.${payload}.`, 'alg-not-allowed');
  });

  it('refuses an HMAC-signed token', async () => {
    const now = Math.floor(Date.now() / 1000);
    const token = await new SignJWT({
      iss: issuer.issuer,
      aud: serviceUrl(),
      iat: now,
      exp: now + 60,
      jti: crypto.randomUUID(),
    })
      .setProtectedHeader({ alg: 'HS256', typ: 'JWT', kid: issuer.kid })
      .sign(new TextEncoder().encode('a-shared-secret-of-enough-length-for-hs256'));
    await expect401(token, 'alg-not-allowed');
  });

  it('refuses an unknown issuer', async () => {
    await expect401(await rogue.mintCds(serviceUrl()), 'unknown-issuer');
  });

  it('refuses a jku that is not on the issuer allow-list', async () => {
    await expect401(
      await rogue.mint(
        { iss: issuer.issuer, aud: serviceUrl() },
        { header: { kid: issuer.kid, jku: rogue.jwksUrl } },
      ),
      'jku-not-allowed',
    );
  });

  it('refuses a token signed with another key under the trusted kid', async () => {
    await expect401(
      await rogue.mint(
        { iss: issuer.issuer, aud: serviceUrl() },
        { header: { kid: issuer.kid, jku: issuer.jwksUrl } },
      ),
      'bad-signature',
    );
  });

  it('refuses a replayed jti', async () => {
    const token = await issuer.mintCds(serviceUrl());
    expect((await callHook(hookBody(), token)).status).toBe(200);
    await expect401(token, 'replayed');
  });

  it('rate-limits per client with 429 and Retry-After', async () => {
    const url = serviceUrl(limited.url);
    const statuses: number[] = [];
    let retryAfter: string | null = null;
    for (let i = 0; i < 3; i++) {
      const res = await post(url, await issuer.mintCds(url), hookBody());
      statuses.push(res.status);
      if (res.status === 429) retryAfter = res.headers.get('retry-after');
    }
    expect(statuses).toEqual([200, 200, 429]);
    expect(Number(retryAfter)).toBeGreaterThanOrEqual(1);
  });
});
