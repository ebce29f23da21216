/**
 * The partner API over real HTTP: the local functions gateway, the real handler, the embedded
 * stack (FHIR server, SageMaker endpoint server) and real ES384 tokens from the local issuer.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import type {
  Bundle,
  DiagnosticReport,
  ImagingStudy,
  Observation,
  OperationOutcome,
  Patient,
} from '@medplum/fhirtypes';
import { SignJWT, base64url } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildDemoCohort, loadHeldOutRows } from '../../local/demo/cohort.js';
import { loadDemoPatient } from '../../local/demo/load.js';
import {
  buildImagingCohort,
  demoEndpoint,
  DEMO_ENDPOINT_ID,
  loadDicomIndex,
} from '../../local/demo/imaging-cohort.js';
import { startFunctionsGateway, type RunningGateway } from '../../local/gateway.js';
import {
  DEMO_CLIENT,
  DEMO_READONLY_CLIENT,
  startJwksIssuer,
  type RunningJwksIssuer,
} from '../../local/jwks-issuer.js';
import { createLocalPartnerHandler, partnerApiHowTo, partnerApiRoutes } from '../../local/partner.js';
import { ROOT, startStack, type RunningStack } from '../../local/stack.js';
import { CdsDiscoverySchema, CdsResponseSchema } from '../../shared/events/cds-hooks.js';
import { createFhirGateway, type FhirGateway } from '../../shared/fhir/gateway.js';
import { createLogger } from '../../shared/log.js';

let stack: RunningStack;
let issuer: RunningJwksIssuer;
let rogue: RunningJwksIssuer;
let gateway: RunningGateway;
let limited: RunningGateway;
let fhir: FhirGateway;
let patient: Patient;
let observations: Observation[];
const logLines: Record<string, unknown>[] = [];
const MODEL = 'diabetes-gbm';

beforeAll(async () => {
  stack = await startStack({ anyPorts: true });
  issuer = await startJwksIssuer({ port: 0 });
  rogue = await startJwksIssuer({ port: 0 });
  const logger = createLogger({
    level: 'debug',
    sink: (line) => logLines.push(JSON.parse(line) as Record<string, unknown>),
  });
  const common = {
    fhirBaseUrl: stack.fhir.baseUrl,
    sagemakerUrl: stack.sagemaker.url,
    modelsDir: stack.modelsDir,
    issuer,
    logger,
  };
  let gatewayUrl = '';
  gateway = await startFunctionsGateway({
    port: 0,
    routes: partnerApiRoutes(
      createLocalPartnerHandler({
        ...common,
        dicomWebUrl: stack.dicomweb.url,
        publicBaseUrl: () => gatewayUrl,
        rate: { burst: 1000, perSecond: 1000 },
      }),
    ),
  });
  gatewayUrl = gateway.url;
  let limitedUrl = '';
  limited = await startFunctionsGateway({
    port: 0,
    routes: partnerApiRoutes(
      createLocalPartnerHandler({
        ...common,
        publicBaseUrl: () => limitedUrl,
        rate: { burst: 2, perSecond: 0.01 },
      }),
    ),
  });
  limitedUrl = limited.url;

  fhir = createFhirGateway({ baseUrl: stack.fhir.baseUrl });
  const rows = loadHeldOutRows(path.join(ROOT, 'local/demo/data/diabetes-heldout.json')).slice(0, 1);
  const [demo] = buildDemoCohort(rows, new Date());
  if (!demo) throw new Error('no demo patient');
  const event = await loadDemoPatient(fhir, demo);
  const id = event?.patient?.split('/')[1] ?? '';
  const p = await fhir.read<Patient>('Patient', id);
  if (!p) throw new Error('demo patient not loaded');
  patient = p;
  observations = await fhir.searchAll<Observation>('Observation', { subject: `Patient/${id}` });
});

afterAll(async () => {
  await gateway.close();
  await limited.close();
  await issuer.close();
  await rogue.close();
  await stack.close();
});

const serviceUrl = (base = gateway.url, id = MODEL): string => `${base}/cds-services/${id}`;

function searchset(resources: readonly Observation[]): Bundle {
  return { resourceType: 'Bundle', type: 'searchset', entry: resources.map((resource) => ({ resource })) };
}

function hookBody(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    hook: 'patient-view',
    hookInstance: crypto.randomUUID(),
    context: { userId: 'Practitioner/example', patientId: patient.id },
    prefetch: { patient, observations: searchset(observations) },
    ...extra,
  };
}

async function post(
  url: string,
  token: string | undefined,
  body: unknown,
  headers: Record<string, string> = {},
): Promise<Response> {
  return fetch(url, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      ...(token ? { authorization: `Bearer ${token}` } : {}),
      ...headers,
    },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
}

async function callHook(body: unknown, token?: string): Promise<Response> {
  return post(serviceUrl(), token ?? (await issuer.mintCds(serviceUrl())), body);
}

async function reportCount(): Promise<number> {
  return (
    await fhir.searchAll<DiagnosticReport>('DiagnosticReport', { subject: `Patient/${patient.id ?? ''}` })
  ).length;
}

function predictBundle(): Bundle {
  return {
    resourceType: 'Bundle',
    type: 'collection',
    entry: [{ resource: patient }, ...observations.map((resource) => ({ resource }))],
  };
}

const predictUrl = (id = MODEL, query = ''): string => `${gateway.url}/v1/models/${id}/$predict${query}`;

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

describe('REST', () => {
  it('lists the models with card metrics for a valid access token, and not without one', async () => {
    const token = await issuer.accessToken(DEMO_CLIENT);
    const res = await fetch(`${gateway.url}/v1/models`, { headers: { authorization: `Bearer ${token}` } });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { models: { id: string; metrics: Record<string, number> }[] };
    expect(body.models.map((m) => m.id)).toContain(MODEL);
    expect(body.models.find((m) => m.id === MODEL)?.metrics).toHaveProperty('r2');
    expect((await fetch(`${gateway.url}/v1/models`)).status).toBe(401);
  });

  it('issues tokens by client credentials at /token', async () => {
    const res = await fetch(issuer.tokenUrl, {
      method: 'POST',
      headers: {
        authorization: `Basic ${Buffer.from(`${DEMO_CLIENT.id}:${DEMO_CLIENT.secret}`).toString('base64')}`,
        'content-type': 'application/x-www-form-urlencoded',
      },
      body: 'grant_type=client_credentials',
    });
    expect(res.status).toBe(200);
    const { access_token } = (await res.json()) as { access_token: string };
    const models = await fetch(`${gateway.url}/v1/models`, {
      headers: { authorization: `Bearer ${access_token}` },
    });
    expect(models.status).toBe(200);
    const wrong = await fetch(issuer.tokenUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: `grant_type=client_credentials&client_id=${DEMO_CLIENT.id}&client_secret=nope`,
    });
    expect(wrong.status).toBe(401);
  });

  it('$predict returns a DiagnosticReport with the score contained and writes nothing', async () => {
    const before = await reportCount();
    const res = await post(predictUrl(), await issuer.accessToken(DEMO_CLIENT), predictBundle());
    expect(res.status).toBe(200);
    const report = (await res.json()) as DiagnosticReport;
    expect(report.resourceType).toBe('DiagnosticReport');
    expect(report.result).toEqual([{ reference: '#score' }]);
    expect(report.contained?.[0]?.resourceType).toBe('Observation');
    expect(await reportCount()).toBe(before);
  });

  it('$predict scores an ImagingStudy with the CNN over DICOMweb (its Endpoint in the Bundle)', async () => {
    const [inst] = loadDicomIndex(path.join(ROOT, 'local/demo/data/dicom/index.json'));
    if (!inst) throw new Error('no demo DICOM');
    const [demo] = buildImagingCohort([inst]);
    const study = demo?.trigger[0]?.resource as ImagingStudy;
    const bundle = {
      resourceType: 'Bundle',
      type: 'collection',
      entry: [
        { resource: { resourceType: 'Patient', id: 'ct-1' } },
        { resource: { ...study, id: 'study-1', subject: { reference: 'Patient/ct-1' } } },
        { resource: { ...demoEndpoint(stack.dicomweb.url), id: DEMO_ENDPOINT_ID } },
      ],
    };
    const res = await post(predictUrl('lung-nodule-cnn'), await issuer.accessToken(DEMO_CLIENT), bundle);
    expect(res.status).toBe(200);
    const report = (await res.json()) as DiagnosticReport;
    const score = report.contained?.[0] as Observation | undefined;
    const expected =
      (inst as unknown as { expected: Record<string, number> }).expected['lung-nodule-cnn'] ?? NaN;
    expect(Math.abs((score?.valueQuantity?.value ?? NaN) - expected)).toBeLessThan(1e-3);
  });

  it.each([
    ['another patient', { subject: { reference: 'Patient/someone-else' } }],
    ['no subject', { subject: undefined }],
    ['a subject without a reference', { subject: { identifier: { value: 'x' } } }],
  ])('$predict refuses an input about %s, naming the path (400)', async (_name, change) => {
    const bundle = predictBundle();
    const obs = bundle.entry?.find((e) => e.resource?.resourceType === 'Observation');
    if (!obs?.resource) throw new Error('no Observation in the test bundle');
    obs.resource = { ...(obs.resource as Observation), ...change };
    const res = await post(predictUrl(), await issuer.accessToken(DEMO_CLIENT), bundle);
    expect(res.status).toBe(400);
    const outcome = (await res.json()) as OperationOutcome;
    expect(outcome.issue[0]?.expression?.[0]).toMatch(/^Bundle\.entry\[\d+\]\.resource\.subject\.reference$/);
  });

  it('persist=true with report.write writes the report once; without the scope it is refused (403)', async () => {
    const before = await reportCount();
    const refused = await post(
      predictUrl(MODEL, '?persist=true'),
      await issuer.accessToken(DEMO_READONLY_CLIENT),
      predictBundle(),
    );
    expect(refused.status).toBe(403);
    // The refusal is an OperationOutcome that names nothing but the lack of scope.
    expect(await refused.json()).toEqual({
      resourceType: 'OperationOutcome',
      issue: [{ severity: 'error', code: 'forbidden', diagnostics: 'insufficient scope' }],
    });
    expect(await reportCount()).toBe(before);
    const res = await post(
      predictUrl(MODEL, '?persist=true'),
      await issuer.accessToken(DEMO_CLIENT),
      predictBundle(),
    );
    expect(res.status).toBe(201);
    expect(res.headers.get('location')).toMatch(/^DiagnosticReport\/.+/);
    expect(await reportCount()).toBe(before + 1);
  });

  it('answers 403 when the scope does not cover the model', async () => {
    const res = await post(
      predictUrl('diabetes-onset-rf'),
      await issuer.accessToken(DEMO_READONLY_CLIENT),
      predictBundle(),
    );
    expect(res.status).toBe(403);
  });

  it('refuses REST tokens for another audience and CDS tokens on REST routes', async () => {
    const other = await issuer.mint({
      sub: 'x',
      client_id: 'x',
      aud: 'someone-else',
      scope: 'model/*.predict',
    });
    expect((await post(predictUrl(), other, predictBundle())).status).toBe(401);
    expect((await post(predictUrl(), await issuer.mintCds(serviceUrl()), predictBundle())).status).toBe(401);
  });
});

describe('bad input', () => {
  it('answers 413 for a body over 1 MB', async () => {
    const res = await callHook(JSON.stringify({ ...hookBody(), padding: 'x'.repeat(1_100_000) }));
    expect(res.status).toBe(413);
    expect(((await res.json()) as { issue: { code: string }[] }).issue[0]?.code).toBe('too-costly');
  });

  it('answers 400 for JSON nested too deeply', async () => {
    const res = await callHook(`{"hook":${'['.repeat(5000)}${']'.repeat(5000)}}`);
    expect(res.status).toBe(400);
    expect(JSON.stringify(await res.json())).toContain('nested deeper');
  });

  it('answers 400 for malformed JSON and for a request missing required fields', async () => {
    expect((await callHook('{"hook": "patient-view",')).status).toBe(400);
    const res = await callHook({ hook: 'patient-view', context: {} });
    expect(res.status).toBe(400);
    expect(JSON.stringify(await res.json())).toContain('hookInstance');
  });

  it('answers 400 for wrong resource types, naming the path', async () => {
    const token = await issuer.accessToken(DEMO_CLIENT);
    const notBundle = await post(predictUrl(), token, patient);
    expect(notBundle.status).toBe(400);
    const withCondition = await post(predictUrl(), token, {
      ...predictBundle(),
      entry: [...(predictBundle().entry ?? []), { resource: { resourceType: 'Condition', id: 'c1' } }],
    });
    expect(withCondition.status).toBe(400);
    expect(JSON.stringify(await withCondition.json())).toContain('resourceType');
    const wrongPrefetch = await callHook(
      hookBody({ prefetch: { patient: observations[0], observations: searchset(observations) } }),
    );
    expect(wrongPrefetch.status).toBe(400);
  });
});

describe('documents', () => {
  it('serves an OpenAPI 3.1 document generated from the schemas', async () => {
    const res = await fetch(`${gateway.url}/openapi.json`);
    expect(res.status).toBe(200);
    const doc = (await res.json()) as {
      openapi: string;
      paths: Record<string, unknown>;
      components: { schemas: Record<string, unknown> };
    };
    expect(doc.openapi).toBe('3.1.0');
    expect(Object.keys(doc.paths)).toContain('/v1/models/{id}/$predict');
    expect(doc.components.schemas).toHaveProperty('CdsHookRequest');
  });

  it('prints how to call it with a working token', async () => {
    const token = await issuer.accessToken(DEMO_CLIENT);
    const text = partnerApiHowTo({ gateway: gateway.url, tokenUrl: issuer.tokenUrl }, token);
    expect(text).toContain(`curl -s -H 'Authorization: Bearer ${token}' ${gateway.url}/v1/models`);
  });
});
