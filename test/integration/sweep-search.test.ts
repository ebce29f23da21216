/**
 * The paged-search fallback (a FHIR server that refuses `$export`) driven through the Lambda
 * entry points the way the state machine drives it: Begin answers `searching`, then Search
 * calls with a tiny time budget (one page each) until `staged`, every item, Finish; against the
 * embedded stack. Compared with the same sweep in one process and with the export path; a crash
 * mid-call and a fresh process between calls; the page reader's memory; an incremental run; a
 * Group cohort.
 */
import { GetObjectCommand, ListObjectsV2Command } from '@aws-sdk/client-s3';
import type { WithId } from '@medplum/core';
import type { DiagnosticReport, Group, Observation, Patient } from '@medplum/fhirtypes';
import type { Context } from 'aws-lambda';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPopulationSweepHandlers } from '../../functions/population-sweep/handler.js';
import { GLUCOSE_CODE, loadSyntheticCohort } from '../../local/fhir/export-cohort.js';
import { createFhirGateway } from '../../shared/fhir/gateway.js';
import { silentLogger } from '../../shared/log.js';
import type { SweepDefinitionInput } from '../../shared/sweep/definition.js';
import { SearchLimitError } from '../../shared/sweep/errors.js';
import { PageReader } from '../../shared/sweep/search-pages.js';
import type { SearchCursor } from '../../shared/sweep/search-steps.js';
import type { StagedExport } from '../../shared/sweep/stage.js';
import type { SweepState } from '../../shared/sweep/steps.js';
import type { SweepSummary } from '../../shared/sweep/summary.js';
import { runSweep, type SweepContext, type SweepItem } from '../../shared/sweep/sweep.js';
import { startSweepStack, type SweepStack } from './sweep-harness.js';

const PATIENTS = 40;
/** Every 20th synthetic patient has no glucose: insufficient data. */
const ELIGIBLE = PATIENTS - PATIENTS / 20;
const PAGE = 6;
const LAMBDA = { awsRequestId: 'req-1', functionName: 'population-sweep' } as Context;

let stack: SweepStack;

beforeAll(async () => {
  stack = await startSweepStack({ bucket: 'sweep-search-test', patients: PATIENTS, seed: 9, chunkSize: 100 });
  stack.bulk.setFaults({ unsupported: true });
});

afterAll(() => stack.stop());

type Handlers = ReturnType<typeof createPopulationSweepHandlers>;
type Stage = NonNullable<SweepContext['stage']>;

/** Handlers on a fresh context (a cold start): a 1 ms Search budget (one page a call), pages of 6. */
async function handlers(stage: Partial<Stage> = {}, onProgress?: () => void): Promise<Handlers> {
  const ctx = await stack.context({
    extra: {
      stage: { searchBudgetMs: 1, searchPageSize: PAGE, ...stage },
      ...(onProgress ? { onProgress } : {}),
    },
  });
  return createPopulationSweepHandlers(silentLogger, () => Promise.resolve(ctx));
}

const definition = (name: string, over: Partial<SweepDefinitionInput> = {}): SweepDefinitionInput => ({
  name,
  models: ['diabetes-gbm'],
  since: 'full',
  batchSize: 16,
  ...over,
});

/** Step Functions hands each Lambda JSON: nothing but what survives a round trip. */
const json = (value: unknown): never => JSON.parse(JSON.stringify(value)) as never;

async function readJson<T>(key: string): Promise<T> {
  const out = await stack.s3.send(new GetObjectCommand({ Bucket: stack.bucket, Key: key }));
  return JSON.parse((await out.Body?.transformToString()) ?? 'null') as T;
}

/** The Search loop from a `searching` state until staged; the states each call answered. */
async function searchUntilStaged(h: Handlers, first: SweepState): Promise<SweepState[]> {
  const states = [first];
  let state = first;
  while (state.phase === 'searching') {
    state = await h.searchHandler(json(state), LAMBDA);
    states.push(state);
    if (states.length > 500) throw new Error('search did not end');
  }
  return states;
}

/** The Items map and Finish after a staged state. */
async function itemsAndFinish(h: Handlers, staged: SweepState): Promise<SweepSummary> {
  for (const item of await readJson<SweepItem[]>(staged.itemsKey ?? ''))
    await h.itemHandler(json(item), LAMBDA);
  return h.finishHandler(json({ sweepId: staged.sweepId }), LAMBDA);
}

async function reportsBySubject(): Promise<Map<string, number>> {
  const reports = await stack.fhir.repo.searchResources<DiagnosticReport>({
    resourceType: 'DiagnosticReport',
  });
  const counts = new Map<string, number>();
  for (const r of reports)
    counts.set(r.subject?.reference ?? '', (counts.get(r.subject?.reference ?? '') ?? 0) + 1);
  return counts;
}

/** A Group of the cohort's first ten patients. */
function firstTenGroup(): Promise<WithId<Group>> {
  return stack.fhir.repo.createResource<Group>({
    resourceType: 'Group',
    type: 'person',
    actual: true,
    member: stack.ids.slice(0, 10).map((id) => ({ entity: { reference: `Patient/${id}` } })),
  });
}

/** Every staged line in the parts a sweep's search cursor names (what its items read). */
async function namedPartLines(sweepId: string): Promise<string[]> {
  const cursor = await readJson<SearchCursor>(`sweeps/${sweepId}/search/cursor.json`);
  const lines: string[] = [];
  for (const p of cursor.partitions) {
    for (const key of p.keys) {
      const out = await stack.s3.send(new GetObjectCommand({ Bucket: stack.bucket, Key: key }));
      lines.push(...((await out.Body?.transformToString()) ?? '').split('\n').filter(Boolean));
    }
  }
  return lines;
}

describe('population sweep, paged-search fallback as resumable steps (embedded stack)', () => {
  it('the page reader holds one page at a time, follows next links to the end, and resumes from a stored position', async () => {
    // Arrange
    const fhir = createFhirGateway({ baseUrl: stack.fhir.baseUrl });
    const reader = new PageReader<Patient>(fhir, {
      kind: 'query',
      resourceType: 'Patient',
      params: { _count: '7' },
    });
    const seen: string[] = [];
    const held: number[] = [];

    // Act: three pages, then the rest from the stored position by a second reader (another call).
    for (let i = 0; i < 3; i++) {
      for (const p of (await reader.read()) ?? []) seen.push(p.id ?? '');
      held.push(reader.held);
    }
    const stored = JSON.parse(JSON.stringify(reader.position)) as typeof reader.position;
    const resumed = new PageReader<Patient>(fhir, stored);
    for (let page = await resumed.read(); page; page = await resumed.read()) {
      for (const p of page) seen.push(p.id ?? '');
      held.push(resumed.held);
    }

    // Assess
    expect(stored.kind).toBe('next');
    expect(held.every((n) => n <= 7)).toBe(true);
    expect(Math.max(reader.maxHeld, resumed.maxHeld)).toBe(7);
    expect(reader.pages + resumed.pages).toBe(Math.ceil(PATIENTS / 7));
    expect(resumed.done).toBe(true);
    expect(new Set(seen)).toEqual(new Set(stack.ids));
    expect(seen).toHaveLength(PATIENTS);
  });

  it('Begin answers searching; Search calls with a tiny budget stage page by page; the same reports and scores as one call and as the export path', async () => {
    // Act: the steps.
    const h = await handlers();
    const begun = await h.startHandler(json({ definition: definition('paged'), sweepId: 'paged-1' }), LAMBDA);
    const states = await searchUntilStaged(h, begun);
    const staged = states[states.length - 1] as SweepState;
    const cursor = await readJson<SearchCursor>(begun.searchKey ?? '');
    const stepped = await itemsAndFinish(h, staged);
    // The same sweep in one process (default budget: one Search call), then by the export path.
    const oneCall = await runSweep(await stack.context(), definition('one-call'));
    stack.bulk.setFaults({ unsupported: false });
    const exported = await runSweep(await stack.context(), definition('exported')).finally(() => {
      stack.bulk.setFaults({ unsupported: true });
    });

    // Assess: several calls, each one page of patients (and their Observations), one page held at a time.
    expect(begun).toMatchObject({ phase: 'searching', searchCalls: 0, maxSearchCalls: 1000 });
    expect(JSON.stringify(begun)).not.toContain('://');
    expect(states.length - 1).toBe(Math.ceil(PATIENTS / PAGE)); // one call a page; the last has no next link
    expect(staged).toMatchObject({ phase: 'staged', mode: 'full', resumed: false });
    expect(cursor).toMatchObject({ pass: 'done', patients: PATIENTS, calls: states.length - 1 });
    expect(cursor.maxHeld).toBeLessThanOrEqual(1000);
    expect(stepped.source).toBe('search');
    expect(stepped.patients).toMatchObject({
      processed: PATIENTS,
      written: ELIGIBLE,
      insufficientData: PATIENTS - ELIGIBLE,
      failed: 0,
    });
    expect(stepped.export.resources).toEqual(oneCall.export.resources);
    expect(stepped.export.resources.Patient).toBe(PATIENTS);
    for (const other of [oneCall, exported]) {
      expect(other.patients).toMatchObject({
        processed: PATIENTS,
        written: 0,
        unchanged: ELIGIBLE,
        failed: 0,
      });
      expect(other.histograms).toEqual(stepped.histograms);
    }
    expect(oneCall.source).toBe('search');
    expect(exported.source).toBe('export');
    const counts = await reportsBySubject();
    expect(counts.size).toBe(ELIGIBLE);
    expect([...counts.values()].every((n) => n === 1)).toBe(true);
  });

  it('resumes after a crash mid-call and a fresh process between calls: no duplicate report, no patient skipped', async () => {
    // Prepare: a fresh cohort in its own Group (no reports yet).
    const fresh = await loadSyntheticCohort(stack.fhir.repo, { patients: 30, seed: 13, offset: 7000 });
    const group = await stack.fhir.repo.createResource<Group>({
      resourceType: 'Group',
      type: 'person',
      actual: true,
      member: fresh.map((id) => ({ entity: { reference: `Patient/${id}` } })),
    });
    const def = definition('crash', { cohort: { kind: 'group', group: group.id } });
    const first = await handlers();
    let state = await first.startHandler(json({ definition: def, sweepId: 'crash-1' }), LAMBDA);
    for (let i = 0; i < 2; i++) state = await first.searchHandler(json(state), LAMBDA);
    // A call that dies after two pages, with parts already written (small parts).
    let pages = 0;
    const crashing = await handlers({ searchBudgetMs: 60_000, partBytes: 512 }, () => {
      if (++pages === 2) throw new Error('killed');
    });

    // Act: the crash; then, on a fresh process, Begin again (a redrive) and the loop from there.
    await expect(crashing.searchHandler(json(state), LAMBDA)).rejects.toThrow('killed');
    // It left parts of its two pages behind, which its cursor never names.
    const left = await stack.s3.send(
      new ListObjectsV2Command({ Bucket: stack.bucket, Prefix: 'sweeps/crash-1/search/s00003' }),
    );
    const second = await handlers();
    const resumed = await second.startHandler(json({ definition: def, sweepId: 'crash-1' }), LAMBDA);
    const states = await searchUntilStaged(second, state);
    const summary = await itemsAndFinish(second, states[states.length - 1] as SweepState);
    // The same cohort searched in one clean call: what the crashed sweep must have staged, no more.
    await runSweep(await stack.context(), def, { sweepId: 'crash-clean' });

    // Assess
    expect(left.KeyCount).toBeGreaterThan(0);
    // The retry wrote its own parts: none the crashed attempt left is named (or overwritten).
    const named = (await readJson<SearchCursor>('sweeps/crash-1/search/cursor.json')).partitions.flatMap(
      (p) => p.keys,
    );
    expect(named.filter((k) => (left.Contents ?? []).some((c) => c.Key === k))).toEqual([]);
    expect(resumed).toMatchObject({ phase: 'searching', searchKey: state.searchKey });
    const staged = await readJson<StagedExport>(`sweeps/crash-1/staged.json`);
    expect(staged.counts.resources.Patient).toBe(fresh.length);
    // Every line in the parts its cursor names, read back: the clean sweep's lines, none twice.
    const stagedLines = await namedPartLines('crash-1');
    const cleanLines = await namedPartLines('crash-clean');
    expect(stagedLines.length).toBeGreaterThan(fresh.length);
    expect(new Set(stagedLines).size).toBe(stagedLines.length);
    expect([...stagedLines].sort()).toEqual([...cleanLines].sort());
    expect(summary.patients).toMatchObject({ processed: fresh.length, failed: 0 });
    const counts = await reportsBySubject();
    const mine = fresh.map((id) => counts.get(`Patient/${id}`) ?? 0);
    expect(mine.filter((n) => n > 1)).toEqual([]);
    expect(mine.filter((n) => n === 1)).toHaveLength(summary.patients.written);
    expect(summary.patients.written + summary.patients.insufficientData).toBe(fresh.length);
  });

  it('incremental, every patient: only the patient whose Observation changed is scored again', async () => {
    // Prepare: a baseline under this name (it advances the next `_since`), then one glucose changes.
    const baseline = await runSweep(
      await stack.context(),
      definition('search-inc', { since: 'incremental' }),
    );
    const target = stack.ids[5] ?? '';
    const [glucose] = await stack.fhir.repo.searchResources<Observation>({
      resourceType: 'Observation',
      filters: [
        { code: 'subject', operator: 'eq', value: `Patient/${target}` },
        { code: 'code', operator: 'eq', value: `http://loinc.org|${GLUCOSE_CODE}` },
      ],
    });
    if (!glucose) throw new Error('fixture has no glucose');
    await new Promise((r) => setTimeout(r, 5));
    await stack.fhir.repo.updateResource({
      ...glucose,
      valueQuantity: { ...glucose.valueQuantity, value: 260 },
    });
    const before = (await reportsBySubject()).get(`Patient/${target}`) ?? 0;

    // Act: the steps.
    const h = await handlers();
    const begun = await h.startHandler(
      json({ definition: definition('search-inc', { since: 'incremental' }), sweepId: 'search-inc-2' }),
      LAMBDA,
    );
    const states = await searchUntilStaged(h, begun);
    const summary = await itemsAndFinish(h, states[states.length - 1] as SweepState);

    // Assess
    expect(baseline.source).toBe('search');
    expect(summary).toMatchObject({ mode: 'incremental', since: baseline.transactionTime, source: 'search' });
    expect(summary.patients).toMatchObject({ processed: 1, written: 1, failed: 0 });
    expect((await reportsBySubject()).get(`Patient/${target}`)).toBe(before + 1);
  });

  it('a Group cohort: its members only, page by page; the bound on calls holds', async () => {
    const group = await firstTenGroup();
    const h = await handlers({ searchPageSize: 4 });
    const begun = await h.startHandler(
      json({
        definition: definition('group', { cohort: { kind: 'group', group: group.id } }),
        sweepId: 'group-1',
      }),
      LAMBDA,
    );
    // Past the loop's bound a call refuses to run (the state machine records the failure).
    const bounded = h.searchHandler(json({ ...begun, searchCalls: 2, maxSearchCalls: 2 }), LAMBDA);
    await expect(bounded).rejects.toBeInstanceOf(SearchLimitError);
    const states = await searchUntilStaged(h, begun);
    const summary = await itemsAndFinish(h, states[states.length - 1] as SweepState);
    expect(states.length - 1).toBe(Math.ceil(10 / 4) + 1); // the last finds no members left
    expect(summary.patients).toMatchObject({ processed: 10, failed: 0 });
    expect(summary.export.resources.Patient).toBe(10);
  });

  it('a Group cohort on a server that pages an `_id` search further than `_count` asks: every member staged', async () => {
    // Arrange: a server that answers at most 2 resources a page (`_count` is a hint in FHIR).
    const group = await firstTenGroup();
    const ctx = await stack.context({ extra: { stage: { searchBudgetMs: 60_000, searchPageSize: 4 } } });
    const fhir = ctx.ports.fhir;
    const capped: SweepContext = {
      ...ctx,
      ports: {
        ...ctx.ports,
        fhir: { ...fhir, searchPage: (t, params) => fhir.searchPage(t, { ...params, _count: '2' }) },
      },
    };
    const h = createPopulationSweepHandlers(silentLogger, () => Promise.resolve(capped));

    // Act
    const begun = await h.startHandler(
      json({
        definition: definition('group-capped', { cohort: { kind: 'group', group: group.id } }),
        sweepId: 'group-capped-1',
      }),
      LAMBDA,
    );
    const states = await searchUntilStaged(h, begun);
    const summary = await itemsAndFinish(h, states[states.length - 1] as SweepState);

    // Assess
    expect(summary.export.resources.Patient).toBe(10);
    expect(summary.patients).toMatchObject({ processed: 10, failed: 0 });
  });
  it('a Group cohort on a server whose `_id` search pages never end: the call fails, it does not spin', async () => {
    // Arrange: every next link answers the first page again, with its next link.
    const group = await firstTenGroup();
    const ctx = await stack.context({ extra: { stage: { searchBudgetMs: 60_000, searchPageSize: 4 } } });
    const fhir = ctx.ports.fhir;
    let first: Parameters<typeof fhir.searchPage> | undefined;
    const looping: SweepContext = {
      ...ctx,
      ports: {
        ...ctx.ports,
        fhir: {
          ...fhir,
          searchPage: (t, params) => {
            first = [t, { ...params, _count: '2' }];
            return fhir.searchPage(t, { ...params, _count: '2' });
          },
          nextPage: () => (first ? fhir.searchPage(...first) : Promise.reject(new Error('no first page'))),
        },
      },
    };
    const h = createPopulationSweepHandlers(silentLogger, () => Promise.resolve(looping));

    // Act
    const begun = await h.startHandler(
      json({
        definition: definition('group-loop', { cohort: { kind: 'group', group: group.id } }),
        sweepId: 'group-loop-1',
      }),
      LAMBDA,
    );
    const call = h.searchHandler(json(begun), LAMBDA);

    // Assess
    await expect(call).rejects.toThrow(/Patient\?_id pages do not end/);
  });
});
