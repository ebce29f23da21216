/**
 * The embedded server's lean transaction path (local/fhir/transaction.ts) against Medplum's router
 * (`processBatch`), bundle by bundle: same response, same error, same stored state. Each side has
 * its own repository with the same id sequence, so the two must match byte for byte apart from
 * timestamps.
 */
import type { Bundle, BundleEntry, Observation, Resource } from '@medplum/fhirtypes';
import { describe, expect, it } from 'vitest';
import type { IndexedRepository } from '../../local/fhir/indexed-repository.js';
import { leanSteps } from '../../local/fhir/transaction.js';
import { CountingRepository, viaLean, viaRouter } from './lean-transaction-helpers.js';
import { buildReportTransaction } from '../../shared/reports/index.js';
import { args } from './reports-fixtures.js';

/** JSON with timestamps (and the router's allOk wrapper) set aside. */
const comparable = (value: unknown): unknown =>
  JSON.parse(
    JSON.stringify(value ?? null).replace(/"(lastUpdated|recorded|issued)":"[^"]*"/g, '"$1":"T"'),
  ) as unknown;

async function stored(repo: IndexedRepository): Promise<unknown> {
  const all: Resource[] = [];
  for (const type of [
    'Device',
    'DocumentReference',
    'Observation',
    'DiagnosticReport',
    'Provenance',
    'Patient',
  ]) {
    all.push(...(await repo.searchResources({ resourceType: type as Resource['resourceType'] })));
  }
  return comparable(all);
}

/** Runs each bundle on both sides in turn; expects the same answers and, at the end, the same store. */
async function expectSame(bundles: readonly Bundle[]): Promise<unknown[]> {
  const a = new CountingRepository();
  const b = new CountingRepository();
  const answers: unknown[] = [];
  for (const bundle of bundles) {
    const [routerOutcome, routerResult] = await viaRouter(a, structuredClone(bundle));
    const [leanOutcome, leanResult] = await viaLean(b, structuredClone(bundle));
    if (routerResult !== undefined) {
      expect(comparable(leanResult)).toEqual(comparable(routerResult));
      expect(leanOutcome).toEqual({ ok: true });
    } else {
      expect(leanResult).toBeUndefined();
      expect(comparable(leanOutcome)).toEqual(comparable(routerOutcome));
    }
    answers.push(routerResult ?? routerOutcome);
  }
  expect(await stored(b)).toEqual(await stored(a));
  return answers;
}

const report = (patient = 'Patient/p1', score = 120): Bundle =>
  buildReportTransaction(args({ patient, prediction: { score } })).bundle;

const statuses = (answer: unknown): (string | undefined)[] =>
  ((answer as Bundle).entry ?? []).map((e) => e.response?.status);

const observation = (id: string, fullUrl: string, subject: string): BundleEntry => {
  const resource: Observation = {
    resourceType: 'Observation',
    status: 'final',
    code: { text: id },
    subject: { reference: subject },
  };
  return { fullUrl, resource, request: { method: 'POST', url: 'Observation' } };
};

describe('lean transaction path', () => {
  it('writes a report transaction, then finds it again, as the router does', async () => {
    const [first, again] = await expectSame([report(), report()]);
    // Device, score, report (created), Provenance (a PUT: 200 here, the HTTP layer makes version 1 a 201).
    expect(statuses(first)).toEqual(['201', '201', '201', '200']);
    expect(statuses(again)).toEqual(['200', '200', '200', '200']);
  });

  it('rewrites urn:uuid references between entries, also inside longer strings', async () => {
    const patient: BundleEntry = {
      fullUrl: 'urn:uuid:0b0c1d2e-3f40-4152-8364-758697a8b9ca',
      resource: {
        resourceType: 'Patient',
        name: [{ text: 'see urn:uuid:0b0c1d2e-3f40-4152-8364-758697a8b9ca' }],
      },
      request: { method: 'POST', url: 'Patient' },
    };
    const obs = observation('x', 'urn:uuid:1b0c1d2e-3f40-4152-8364-758697a8b9ca', patient.fullUrl ?? '');
    const [answer] = await expectSame([
      { resourceType: 'Bundle', type: 'transaction', entry: [patient, obs] },
    ]);
    const written = (answer as Bundle).entry?.[1]?.resource as Observation;
    expect(written.subject?.reference).toBe('Patient/id-1');
  });

  it('refuses what the router refuses: too many strict entries, duplicate identities, several matches', async () => {
    const many: Bundle = {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: ['a', 'b', 'c'].flatMap((p) => report(`Patient/${p}`).entry ?? []),
    };
    const twice: Bundle = {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [0, 1].map((i): BundleEntry => ({
        ...observation('dup', `urn:uuid:2b0c1d2e-3f40-4152-8364-75869${String(i)}a8b9ca`, 'Patient/d'),
        request: { method: 'POST', url: 'Observation', ifNoneExist: 'subject=Patient/d' },
      })),
    };
    const seed: Bundle = {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        observation('a', 'urn:uuid:3b0c1d2e-3f40-4152-8364-758697a8b9ca', 'Patient/d'),
        observation('b', 'urn:uuid:4b0c1d2e-3f40-4152-8364-758697a8b9ca', 'Patient/d'),
      ],
    };
    const samePut: Bundle = {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [0, 1].map((): BundleEntry => {
        const same: Observation = { resourceType: 'Observation', id: 'same', status: 'final', code: {} };
        return { resource: same, request: { method: 'PUT', url: 'Observation/same' } };
      }),
    };
    const answers = await expectSame([many, seed, twice, samePut]);
    expect(JSON.stringify(answers[0])).toContain('strict isolation');
    expect(statuses(answers[1])).toEqual(['201', '201']);
    expect(JSON.stringify(answers[2])).toMatch(/Multiple resources/i);
    expect(JSON.stringify(answers[3])).toContain('Duplicate resource identity');
  });

  it('rolls back everything when one entry fails, as the router does', async () => {
    const bad: Bundle = {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        observation('kept?', 'urn:uuid:5b0c1d2e-3f40-4152-8364-758697a8b9ca', 'Patient/r'),
        // An unknown type: the repository refuses it after the first entry was written.
        { resource: { resourceType: 'Nope', id: 'bad' }, request: { method: 'PUT', url: 'Nope/bad' } },
      ] as unknown as BundleEntry[],
    };
    const answers = await expectSame([report('Patient/r'), bad]);
    expect(statuses(answers[0])).toEqual(['201', '201', '201', '200']);
    // The second failed as a whole: an OperationOutcome, and (expectSame) the stores still agree.
    expect((answers[1] as Resource).resourceType).toBe('OperationOutcome');
    expect(JSON.stringify(answers[1])).toContain('Nope');
  });

  it('leaves other bundles to the router', () => {
    const get: Bundle = {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [{ request: { method: 'GET', url: 'Patient' } }],
    };
    const conditionalPut: Bundle = {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        { resource: { resourceType: 'Patient' }, request: { method: 'PUT', url: 'Patient?identifier=x' } },
      ],
    };
    const batch: Bundle = { ...report(), type: 'batch' };
    const absolute: Bundle = {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [{ ...observation('a', 'http://example.org/Observation/1', 'Patient/a') }],
    };
    for (const b of [get, conditionalPut, batch, absolute]) expect(leanSteps(b)).toBeUndefined();
    expect(leanSteps(report())).toHaveLength(4);
  });
});
