/**
 * The partner API's REST routes over real HTTP (models, tokens, $predict with and without
 * persist, scopes), its answers to bad input, and its documents (OpenAPI, how-to).
 */
import * as path from 'node:path';
import type { DiagnosticReport, ImagingStudy, Observation, OperationOutcome } from '@medplum/fhirtypes';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  buildImagingCohort,
  demoEndpoint,
  DEMO_ENDPOINT_ID,
  loadDicomIndex,
} from '../../local/demo/imaging-cohort.js';
import { DEMO_CLIENT, DEMO_READONLY_CLIENT } from '../../local/jwks-issuer.js';
import { partnerApiHowTo } from '../../local/partner.js';
import { ROOT } from '../../local/stack.js';
import {
  callHook,
  gateway,
  hookBody,
  issuer,
  MODEL,
  observations,
  patient,
  post,
  predictBundle,
  predictUrl,
  reportCount,
  searchset,
  serviceUrl,
  stack,
  startPartnerApi,
  stopPartnerApi,
} from './partner-api-harness.js';

beforeAll(startPartnerApi);
afterAll(stopPartnerApi);

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
