/**
 * The paged-search fallback (servers without `$export`, and `search` cohorts) as resumable
 * steps, the way the export path is: `beginSearch` (from `begin`) writes a cursor to S3 and
 * answers phase `searching`; each `searchStep` (one Lambda call, the state machine's Search
 * loop) reads the cursor, stages page after page — a page of Patients, then their Observations
 * (`Observation?subject=<the page>&code=…`, followed page by page) — until its time budget is
 * spent or the search ends, writes the parts it staged and the new cursor, and answers
 * `searching` again, or, at the end, records the staged search (the same key lists, staged.json
 * and items.json as the export path: Plan's output) and answers `staged`.
 *
 * What carries over between calls lives in the cursor (`<prefix>/search/cursor.json`): where
 * the search stands (the next page's URL, or the Group member offset), the parts staged so far,
 * the counts, transactionTime and `_since`. The state only names it. Nothing holds more than a
 * page of resources (`PageReader`), plus the partition writer's bounded buffers.
 *
 * A call that crashes is retried with the same state: it reads the same cursor and writes its
 * own part keys (`search/s<call>-<attempt id>/…`, so an attempt still running, e.g. after a
 * client-side timeout, never overwrites the parts another names); only the parts a successful
 * close names are kept, so no resource is staged twice and none is skipped. A retried call after
 * the cursor was written goes on from there.
 */
import { randomUUID } from 'node:crypto';
import type { Observation, Patient, Resource } from '@medplum/fhirtypes';
import type { Logger } from '../log.js';
import type { SweepRecord } from './checkpoint.js';
import { cohortQueryParams, type Cohort } from './definition.js';
import { ExportFailedError, SearchLimitError, SweepError, SweepInputError } from './errors.js';
import { PageReader, type SearchPosition } from './search-pages.js';
import { partitionsFor } from './stage.js';
import { prefixOf, readStaged, recordStaged, stagedResult } from './staged.js';
import { getJson, PartitionWriter, putObject, type StageCounts, type StagedPartition } from './staging.js';
import type { SweepState } from './steps.js';
import type { StartResult, SweepContext } from './sweep.js';

/** A Search call's time budget when the context names none: ample margin under Lambda's 15 minutes. */
export const DEFAULT_SEARCH_BUDGET_MS = 10 * 60_000;
/**
 * The Search loop's bound on calls. Each call adds 7 events to the execution's history (Task
 * entered, scheduled, started, succeeded, exited; Choice entered, exited): 1,000 calls are
 * 7,000 events, and with the export poll loop's bound (1,500 polls × 9 = 13,500, for a sweep
 * that kicked off an export before falling back) 20,500, under the 25,000 an execution may have.
 * At the default budget 1,000 calls are ~166 hours: the 24-hour execution timeout comes first.
 */
export const DEFAULT_MAX_SEARCH_CALLS = 1_000;
/** Patients per page (and per Observation search) by default. */
export const DEFAULT_SEARCH_PAGE_SIZE = 100;
/** Observations per page. */
const OBSERVATION_PAGE = '1000';

/** `<prefix>/search/cursor.json`: everything a Search call hands the next. */
export interface SearchCursor {
  readonly sweepId: string;
  readonly cohort: Cohort;
  /** `system|code` of the Observations the models read. */
  readonly codes: readonly string[];
  readonly since?: string;
  readonly transactionTime: string;
  readonly pageSize: number;
  /** Partitions (fixed for the sweep: a patient's lines meet in one item). */
  readonly width: number;
  /** Patients, then (incremental, every patient) Observations changed since, whoever's. */
  pass: 'patients' | 'recent' | 'done';
  /** The pass's search (not used for a Group's patients: `memberOffset`). */
  position: SearchPosition;
  memberOffset: number;
  /** Search calls completed. */
  calls: number;
  pages: number;
  patients: number;
  /** The most resources a page reader held at once, over every call. */
  maxHeld: number;
  readonly partitions: StagedPartition[];
  readonly counts: StageCounts;
}

export const searchCursorKey = (ctx: SweepContext, sweepId: string): string =>
  `${prefixOf(ctx, sweepId)}/search/cursor.json`;

const lastUpdated = (since: string | undefined): Record<string, string> =>
  since ? { _lastUpdated: `gt${since}` } : {};

function patientQuery(cohort: Cohort, pageSize: number, since: string | undefined): SearchPosition {
  const query = cohort.kind === 'search' ? Object.fromEntries(cohortQueryParams(cohort.query)) : {};
  return {
    kind: 'query',
    resourceType: 'Patient',
    params: { ...query, _count: String(pageSize), ...(cohort.kind === 'all' ? lastUpdated(since) : {}) },
  };
}

function searchingState(ctx: SweepContext, sweepId: string, calls: number, max?: number): SweepState {
  return {
    sweepId,
    bucket: ctx.store.bucket,
    phase: 'searching',
    attempt: 0,
    poll: { polls: 0, throttled: 0, serverErrors: 0, waitedMs: 0 },
    searchKey: searchCursorKey(ctx, sweepId),
    searchCalls: calls,
    ...(max === undefined ? {} : { maxSearchCalls: max }),
  };
}

export interface BeginSearchOptions {
  readonly record: SweepRecord;
  readonly codes: readonly string[];
  readonly since?: string;
  /** The Search loop's bound on calls (absent in one process). */
  readonly maxSearchCalls?: number;
}

/** The first cursor, the sweep recorded `searching`: the `searching` state. */
export async function beginSearch(ctx: SweepContext, opts: BeginSearchOptions): Promise<SweepState> {
  const { record } = opts;
  const pageSize = ctx.stage?.searchPageSize ?? DEFAULT_SEARCH_PAGE_SIZE;
  const width = partitionsFor((ctx.stage?.expectedPatients ?? 100_000) * (1 + opts.codes.length), {
    ...ctx.stage,
  });
  const cohort = record.definition.cohort;
  const cursor: SearchCursor = {
    sweepId: record.sweepId,
    cohort,
    codes: opts.codes,
    ...(opts.since ? { since: opts.since } : {}),
    transactionTime: new Date().toISOString(),
    pageSize,
    width,
    pass: 'patients',
    position: cohort.kind === 'group' ? { kind: 'end' } : patientQuery(cohort, pageSize, opts.since),
    memberOffset: 0,
    calls: 0,
    pages: 0,
    patients: 0,
    maxHeld: 0,
    partitions: Array.from({ length: width }, (_, partition) => ({
      partition,
      keys: [],
      lines: 0,
      bytes: 0,
    })),
    counts: { resources: {}, malformedLines: 0, ownWrites: 0, unlinked: 0 },
  };
  await putObject(ctx.store, searchCursorKey(ctx, record.sweepId), JSON.stringify(cursor));
  await ctx.checkpoints.putSweep({ ...record, status: 'searching' });
  return searchingState(ctx, record.sweepId, 0, opts.maxSearchCalls);
}

/** A Begin that finds the sweep searching (a retried Begin, a redriven execution): its state. */
export function resumedSearchState(ctx: SweepContext, sweepId: string, maxSearchCalls?: number): SweepState {
  return searchingState(ctx, sweepId, 0, maxSearchCalls);
}

/** The Group's Patient member ids (the Group is read again each call; only a page is searched). */
async function groupMembers(ctx: SweepContext, group: string): Promise<string[]> {
  const found = await ctx.ports.fhir.read<Resource & { member?: { entity?: { reference?: string } }[] }>(
    'Group',
    group,
  );
  if (!found) throw new ExportFailedError(`Group/${group} not found`, 404);
  return (found.member ?? [])
    .map((m) => m.entity?.reference)
    .filter((r): r is string => r?.startsWith('Patient/') === true)
    .map((r) => r.slice(8));
}

/** One call's staging: a writer under `search/s<call>-<attempt id>/`, the units, the cursor updated. */
class SearchCall {
  readonly writer: PartitionWriter;
  private members: string[] | undefined;

  constructor(
    private readonly ctx: SweepContext,
    private readonly cursor: SearchCursor,
  ) {
    this.writer = new PartitionWriter({
      store: ctx.store,
      prefix: `${prefixOf(ctx, cursor.sweepId)}/search/s${String(cursor.calls + 1).padStart(5, '0')}-${randomUUID().slice(0, 8)}`,
      partitions: cursor.width,
      isOwnWrite: (r) => ctx.ports.isOwnWrite(r),
      ...(ctx.stage?.partBytes ? { partBytes: ctx.stage.partBytes } : {}),
    });
  }

  private readonly changed = (r: Resource): boolean =>
    this.cursor.since === undefined ||
    (r.meta?.lastUpdated !== undefined && r.meta.lastUpdated > this.cursor.since);

  /** Reads every page at `position` into the writer, one page held at a time. */
  private async drain(position: SearchPosition): Promise<void> {
    const reader = new PageReader<Resource>(this.ctx.ports.fhir, position);
    for (let page = await reader.read(); page; page = await reader.read()) {
      for (const r of page) await this.writer.addResource(r);
    }
    this.noteReader(reader);
  }

  private noteReader(reader: PageReader<Resource>): void {
    this.cursor.pages += reader.pages;
    this.cursor.maxHeld = Math.max(this.cursor.maxHeld, reader.maxHeld);
  }

  /** A page of patients staged (those changed since), and their Observations. */
  private async stagePatients(patients: readonly Patient[], observations: boolean): Promise<void> {
    const c = this.cursor;
    for (const p of patients) if (this.changed(p)) await this.writer.addResource(p);
    const ids = patients.map((p) => p.id ?? '').filter((id) => id !== '');
    if (observations && ids.length > 0 && c.codes.length > 0) {
      await this.drain({
        kind: 'query',
        resourceType: 'Observation',
        params: {
          subject: ids.map((id) => `Patient/${id}`).join(','),
          code: c.codes.join(','),
          _count: OBSERVATION_PAGE,
          ...lastUpdated(c.since),
        },
      });
    }
    c.patients += patients.length;
  }

  private endPatients(): void {
    const c = this.cursor;
    if (c.since && c.cohort.kind === 'all' && c.codes.length > 0) {
      c.pass = 'recent';
      c.position = {
        kind: 'query',
        resourceType: 'Observation',
        params: { code: c.codes.join(','), _count: OBSERVATION_PAGE, ...lastUpdated(c.since) },
      };
    } else {
      c.pass = 'done';
      c.position = { kind: 'end' };
    }
  }

  /** One unit: a page of patients with their Observations, or a page of changed Observations. */
  async unit(): Promise<void> {
    const c = this.cursor;
    if (c.pass === 'patients' && c.cohort.kind === 'group') {
      this.members ??= await groupMembers(this.ctx, c.cohort.group);
      const ids = this.members.slice(c.memberOffset, c.memberOffset + c.pageSize);
      if (ids.length === 0) {
        this.endPatients();
        return;
      }
      const reader = new PageReader<Patient>(this.ctx.ports.fhir, {
        kind: 'query',
        resourceType: 'Patient',
        params: { _id: ids.join(','), _count: String(c.pageSize) },
      });
      // Every page of the `_id` search (`_count` is a hint: a server may page one block further).
      const patients: Patient[] = [];
      while (!reader.done) {
        patients.push(...((await reader.read()) ?? []));
        // A block of n ids has at most n Patients: more pages than that is a server paging in a loop.
        if (reader.pages > ids.length + 1)
          throw new SweepError(`sweep ${c.sweepId}: Patient?_id pages do not end`);
      }
      await this.stagePatients(patients, true);
      this.noteReader(reader);
      c.memberOffset += ids.length;
      this.ctx.onProgress?.({ phase: 'stage', done: c.memberOffset, total: this.members.length });
      return;
    }
    const reader = new PageReader<Resource>(this.ctx.ports.fhir, c.position);
    const page = (await reader.read()) ?? [];
    this.noteReader(reader);
    if (c.pass === 'patients') {
      // Every patient, incremental: changed Observations are searched in the next pass, whoever's.
      const patients = page.filter((r): r is Patient => r.resourceType === 'Patient');
      await this.stagePatients(patients, !(c.since && c.cohort.kind === 'all'));
      this.ctx.onProgress?.({ phase: 'stage', done: c.patients, total: 0 });
    } else {
      for (const o of page as Observation[]) await this.writer.addResource(o);
    }
    c.position = reader.position;
    if (reader.done) {
      if (c.pass === 'patients') this.endPatients();
      else c.pass = 'done';
    }
  }

  /** Parts written; their keys and counts added to the cursor. */
  async close(): Promise<void> {
    const c = this.cursor;
    for (const p of await this.writer.close()) {
      const into = c.partitions[p.partition];
      if (!into) throw new SweepError(`sweep ${c.sweepId}: search staged partition ${p.partition}`);
      into.keys.push(...p.keys);
      into.lines += p.lines;
      into.bytes += p.bytes;
    }
    const from = this.writer.counts;
    for (const [type, n] of Object.entries(from.resources))
      c.counts.resources[type] = (c.counts.resources[type] ?? 0) + n;
    c.counts.malformedLines += from.malformedLines;
    c.counts.ownWrites += from.ownWrites;
    c.counts.unlinked += from.unlinked;
    c.calls++;
  }
}

export interface SearchStepOptions {
  /** This call's time budget (ms). Default `ctx.stage.searchBudgetMs`, else `DEFAULT_SEARCH_BUDGET_MS`. */
  readonly budgetMs?: number;
}

/**
 * One Search call: pages until the budget is spent (at least one) or the search ends; the
 * cursor written; `searching` again, or the staged search (`staged`, with the items).
 */
export async function searchStep(
  ctx: SweepContext,
  state: SweepState,
  opts: SearchStepOptions = {},
): Promise<{ state: SweepState; started?: StartResult }> {
  if (state.phase !== 'searching' || !state.searchKey) {
    throw new SweepInputError(`sweep ${state.sweepId}: a search step needs a search in progress`);
  }
  const calls = (state.searchCalls ?? 0) + 1;
  if (state.maxSearchCalls !== undefined && calls > state.maxSearchCalls) {
    throw new SearchLimitError(
      `search not complete after ${calls - 1} calls (bound ${state.maxSearchCalls})`,
    );
  }
  const log = ctx.ports.logger.child({ sweep: state.sweepId });
  const record = await ctx.checkpoints.getSweep(state.sweepId);
  if (!record) throw new SweepInputError(`no sweep ${state.sweepId}`);
  // A retried last call, after it recorded the staged search: what it staged.
  if (record.stagedKey) {
    const staged = await readStaged(ctx, state.sweepId, record.stagedKey);
    if (staged) return finished(stagedResult(ctx, state.sweepId, staged, false));
  }
  const cursor = await getJson<SearchCursor>(ctx.store, state.searchKey);
  if (cursor?.sweepId !== state.sweepId) throw new SweepError(`sweep ${state.sweepId}: no search cursor`);
  const done = (): boolean => cursor.pass === 'done';
  if (!done()) {
    const budget = opts.budgetMs ?? ctx.stage?.searchBudgetMs ?? DEFAULT_SEARCH_BUDGET_MS;
    const t0 = Date.now();
    const call = new SearchCall(ctx, cursor);
    do await call.unit();
    while (!done() && Date.now() - t0 < budget);
    await call.close();
    await putObject(ctx.store, state.searchKey, JSON.stringify(cursor));
    log.info('search call', {
      call: cursor.calls,
      pass: cursor.pass,
      patients: cursor.patients,
      pages: cursor.pages,
      ms: Date.now() - t0,
    });
  }
  if (!done()) {
    return { state: { ...state, searchCalls: calls } };
  }
  return finished(await recordSearch(ctx, record, cursor, log));
}

/** The Search steps in one process (`startSweep`): no budget between calls matters, no bound. */
export async function runSearch(ctx: SweepContext, first: SweepState): Promise<StartResult> {
  for (let state = first; ;) {
    const step = await searchStep(ctx, state);
    if (step.started) return step.started;
    state = step.state;
  }
}

const finished = (r: StartResult & { state: SweepState }): { state: SweepState; started: StartResult } => {
  const { state, ...started } = r;
  return { state, started };
};

/** The whole search staged: key lists, staged.json, items.json, the record `staged`. */
function recordSearch(
  ctx: SweepContext,
  record: SweepRecord,
  cursor: SearchCursor,
  log: Logger,
): Promise<StartResult & { state: SweepState }> {
  return recordStaged(
    ctx,
    record,
    {
      source: 'search',
      transactionTime: cursor.transactionTime,
      ...(cursor.since ? { since: cursor.since } : {}),
      partitions: cursor.partitions,
      counts: cursor.counts,
      exportErrors: [],
      poll: { polls: 0, throttled: 0, serverErrors: 0, waitedMs: 0 },
      attempts: 0,
    },
    log,
  );
}
