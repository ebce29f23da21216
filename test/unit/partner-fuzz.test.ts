/**
 * Property test: 10,000 random bodies against each parser of the partner API (CDS hook call,
 * feedback, `$predict` bundle), through the API's handler directly (no HTTP), with the real
 * manifests, extractors and report builder and a fake model. Not one may answer 5xx.
 */
import { randomUUID } from 'node:crypto';
import type { APIGatewayProxyEventV2 } from 'aws-lambda';
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import { MODELS_DIR } from '../../local/stack.js';
import { loadRegistry } from '../../shared/inference/registry.js';
import type { ModelManifest } from '../../shared/inference/manifest.js';
import { silentLogger } from '../../shared/log.js';
import { createPartnerApi, type PartnerApi } from '../../shared/partner/api.js';
import type { Authenticator, Principal } from '../../shared/partner/auth.js';
import type { PipelinePorts } from '../../shared/pipeline.js';
import { compileExtractor } from '../../shared/ports.js';
import { buildReportTransaction, isWrittenByFhirAnalytics } from '../../shared/reports/index.js';
import type { Bundle } from '@medplum/fhirtypes';

const RUNS = 10_000;
const MODEL = 'diabetes-gbm';
let api: PartnerApi;

const principal: Principal = {
  kind: 'oauth-client',
  issuer: 'test',
  clientId: 'fuzzer',
  scopes: new Set(['model/*.predict', 'report.write']),
  rateKey: 'test|fuzzer',
};
const trustingAuthenticator: Authenticator = {
  cdsClient: () => Promise.resolve({ ...principal, kind: 'cds-client' }),
  oauthClient: () => Promise.resolve(principal),
};

beforeAll(async () => {
  const registry = await loadRegistry(MODELS_DIR);
  const tabular = registry.all().filter((m) => m.input.kind === 'tabular');
  const ports: PipelinePorts = {
    fhir: {
      read: () => Promise.resolve(undefined),
      searchAll: () => Promise.resolve([]),
      transaction: (bundle: Bundle) =>
        Promise.resolve({
          resourceType: 'Bundle',
          type: 'transaction-response',
          entry: (bundle.entry ?? []).map((e, i) => ({
            response: {
              status: '201 Created',
              location: `${e.resource?.resourceType ?? 'X'}/${i}/_history/1`,
            },
          })),
        }),
    },
    inference: {
      predict: (m: ModelManifest, rows) =>
        Promise.resolve(
          rows.map(() =>
            m.output.kind === 'probability' ? { score: 0.7, probabilities: [0.3, 0.7] } : { score: 150 },
          ),
        ),
    },
    models: { all: () => tabular, matching: () => [] },
    extractor: compileExtractor,
    buildReport: buildReportTransaction,
    isOwnWrite: isWrittenByFhirAnalytics,
    logger: silentLogger,
  };
  api = createPartnerApi({
    ports,
    authenticator: trustingAuthenticator,
    rateLimiter: { take: () => ({ ok: true }) },
    publicBaseUrl: 'https://partner.example.org',
    fhirServerAllowList: [],
    readCard: () => Promise.resolve('# card'),
  });
});

function event(
  method: string,
  path: string,
  body: string,
  query?: Record<string, string>,
): APIGatewayProxyEventV2 {
  return {
    version: '2.0',
    routeKey: '$default',
    rawPath: path,
    rawQueryString: '',
    headers: { authorization: 'Bearer x', 'content-type': 'application/json' },
    ...(query ? { queryStringParameters: query } : {}),
    requestContext: {
      accountId: '0',
      apiId: 'fuzz',
      domainName: 'partner.example.org',
      domainPrefix: 'partner',
      http: { method, path, protocol: 'HTTP/1.1', sourceIp: '127.0.0.1', userAgent: 'fuzz' },
      requestId: randomUUID(),
      routeKey: '$default',
      stage: '$default',
      time: '',
      timeEpoch: 0,
    },
    body,
    isBase64Encoded: false,
  };
}

// ─── Arbitraries: raw text, arbitrary JSON, and near-valid documents with random parts ───

const anyJson = fc.jsonValue({ maxDepth: 4 });
const maybe = <T>(arb: fc.Arbitrary<T>): fc.Arbitrary<T | undefined> => fc.option(arb, { nil: undefined });
const dateish = fc.oneof(
  fc
    .date({ min: new Date('1900-01-01'), max: new Date('2100-01-01'), noInvalidDate: true })
    .map((d) => d.toISOString()),
  fc.constantFrom('2024-02-30', '1970', '2024-01-01T25:00:00Z', ''),
  anyJson,
);
const coding = fc.record({
  system: fc.constantFrom('http://loinc.org', 'urn:fhir-analytics:code', 'x'),
  code: fc.constantFrom(
    '2345-7',
    '39156-5',
    '8478-0',
    '2093-3',
    '2085-9',
    '2571-8',
    '13457-7',
    '9830-1',
    '1',
    '',
  ),
});
const observation = fc.record(
  {
    resourceType: fc.constant('Observation'),
    id: fc.oneof(fc.constantFrom('o1', 'o2', 'o-3'), fc.string({ maxLength: 70 })),
    meta: maybe(fc.record({ versionId: fc.oneof(fc.constant('1'), anyJson) })),
    status: fc.oneof(fc.constantFrom('final', 'amended', 'preliminary', 'entered-in-error'), anyJson),
    code: fc.oneof(fc.record({ coding: fc.array(coding, { maxLength: 2 }) }), anyJson),
    subject: fc.oneof(fc.constant({ reference: 'Patient/p1' }), anyJson),
    effectiveDateTime: dateish,
    valueQuantity: fc.oneof(
      fc.record({
        value: fc.oneof(fc.double(), fc.integer(), anyJson),
        unit: fc.constantFrom('mg/dL', 'mmol/L', 'kg/m2', 'mm[Hg]', '{ratio}', 'nonsense'),
        system: fc.constant('http://unitsofmeasure.org'),
        code: fc.constantFrom('mg/dL', 'mmol/L', 'kg/m2', 'mm[Hg]', '{ratio}', 'bogus'),
      }),
      anyJson,
    ),
    component: maybe(fc.array(anyJson, { maxLength: 2 })),
  },
  { requiredKeys: ['resourceType'] },
);
const patient = fc.record(
  {
    resourceType: fc.constant('Patient'),
    id: fc.oneof(fc.constant('p1'), fc.string({ maxLength: 70 })),
    birthDate: dateish,
    gender: fc.oneof(fc.constantFrom('female', 'male', 'other', 'unknown'), anyJson),
  },
  { requiredKeys: ['resourceType'] },
);
const resource = fc.oneof(
  { weight: 3, arbitrary: observation },
  { weight: 1, arbitrary: patient },
  { weight: 1, arbitrary: fc.record({ resourceType: fc.string({ maxLength: 20 }) }) },
  { weight: 1, arbitrary: anyJson },
);
const bundle = fc.record(
  {
    resourceType: fc.oneof(
      { weight: 5, arbitrary: fc.constant('Bundle') },
      { weight: 1, arbitrary: anyJson },
    ),
    type: fc.oneof(fc.constantFrom('collection', 'searchset', 'batch'), anyJson),
    entry: fc.oneof(
      { weight: 5, arbitrary: fc.array(fc.record({ resource }, { requiredKeys: [] }), { maxLength: 12 }) },
      { weight: 1, arbitrary: anyJson },
    ),
  },
  { requiredKeys: [] },
);

const hookRequest = fc.record(
  {
    hook: fc.oneof({ weight: 4, arbitrary: fc.constant('patient-view') }, { weight: 1, arbitrary: anyJson }),
    hookInstance: fc.oneof({ weight: 4, arbitrary: fc.uuid() }, { weight: 1, arbitrary: anyJson }),
    fhirServer: fc.oneof(
      fc.constantFrom('https://ehr.example.org/fhir', 'http://169.254.169.254/latest'),
      anyJson,
    ),
    fhirAuthorization: fc.oneof(
      fc.record({
        access_token: fc.string(),
        token_type: fc.constantFrom('Bearer', 'bearer'),
        expires_in: fc.integer(),
        scope: fc.string(),
        subject: fc.string(),
      }),
      anyJson,
    ),
    context: fc.oneof(
      {
        weight: 4,
        arbitrary: fc.record({
          userId: fc.constant('Practitioner/1'),
          patientId: fc.oneof(fc.constant('p1'), fc.string()),
        }),
      },
      { weight: 1, arbitrary: anyJson },
    ),
    prefetch: fc.oneof(
      {
        weight: 4,
        arbitrary: fc.record(
          {
            patient: fc.oneof(patient, fc.constant(null), anyJson),
            observations: fc.oneof(bundle, fc.constant(null), anyJson),
          },
          { requiredKeys: [] },
        ),
      },
      { weight: 1, arbitrary: anyJson },
    ),
  },
  { requiredKeys: [] },
);

const feedback = fc.oneof(
  fc.record(
    {
      feedback: fc.oneof(
        fc.array(
          fc.record(
            {
              card: fc.oneof(fc.uuid(), anyJson),
              outcome: fc.oneof(fc.constantFrom('accepted', 'overridden'), anyJson),
              acceptedSuggestions: fc.oneof(
                fc.array(fc.record({ id: fc.uuid() }), { maxLength: 2 }),
                anyJson,
              ),
              overrideReason: fc.oneof(
                fc.record({ reason: coding, userComment: fc.string() }, { requiredKeys: [] }),
                anyJson,
              ),
              outcomeTimestamp: dateish,
            },
            { requiredKeys: [] },
          ),
          { maxLength: 4 },
        ),
        anyJson,
      ),
    },
    { requiredKeys: [] },
  ),
  anyJson,
);

/** `JSON.stringify` gives undefined for undefined, whatever its declared type says. */
const text = (d: unknown): string => (d === undefined ? '' : JSON.stringify(d));

/** A body as it may arrive: the document's JSON, some other text, or a truncated document. */
const asBody = (doc: fc.Arbitrary<unknown>): fc.Arbitrary<string> =>
  fc.oneof(
    { weight: 6, arbitrary: doc.map(text) },
    { weight: 1, arbitrary: fc.string({ maxLength: 200 }) },
    {
      weight: 1,
      arbitrary: doc.chain((d) => fc.nat().map((n) => text(d).slice(0, n % 200))),
    },
  );

async function statusOf(e: APIGatewayProxyEventV2): Promise<number> {
  const result = await api.handle(e);
  return result.statusCode ?? 200;
}

describe('partner API parsers under random bodies', () => {
  it(`CDS hook call: ${RUNS} bodies, no 5xx`, async () => {
    const seen = new Set<number>();
    await fc.assert(
      fc.asyncProperty(asBody(hookRequest), async (body) => {
        const status = await statusOf(event('POST', `/cds-services/${MODEL}`, body));
        seen.add(status);
        expect(status).toBeLessThan(500);
      }),
      {
        numRuns: RUNS,
        // Found by this property once (a null prefetch entry): kept as a fixed example.
        examples: [
          [
            JSON.stringify({
              hook: 'patient-view',
              hookInstance: '00000000-0000-1000-8000-000000000000',
              context: { userId: 'Practitioner/1', patientId: 'p1' },
              prefetch: { observations: { resourceType: 'Bundle', entry: [{ resource: null }] } },
            }),
          ],
        ],
      },
    );
    // The generator reaches past the parser: some calls are answered with cards or 412.
    expect([...seen].some((s) => s === 200 || s === 412)).toBe(true);
  });

  it(`feedback: ${RUNS} bodies, no 5xx`, async () => {
    await fc.assert(
      fc.asyncProperty(asBody(feedback), async (body) => {
        expect(await statusOf(event('POST', `/cds-services/${MODEL}/feedback`, body))).toBeLessThan(500);
      }),
      { numRuns: RUNS },
    );
  });

  it(`$predict bundle: ${RUNS} bodies, no 5xx`, async () => {
    const seen = new Set<number>();
    await fc.assert(
      fc.asyncProperty(
        asBody(bundle),
        fc.constantFrom(undefined, 'true', 'false', 'yes'),
        async (body, persist) => {
          const status = await statusOf(
            event(
              'POST',
              `/v1/models/${MODEL}/$predict`,
              body,
              persist === undefined ? undefined : { persist },
            ),
          );
          seen.add(status);
          expect(status).toBeLessThan(500);
        },
      ),
      { numRuns: RUNS },
    );
    expect([...seen].some((s) => s === 200 || s === 201 || s === 422)).toBe(true);
  });
});
