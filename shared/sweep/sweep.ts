/**
 * The population sweep, in three phases that infra wires into a Step Functions state machine
 * (and that `runSweep` chains in-process):
 *
 * 1. `startSweep` (coordinator; in AWS the steps of steps.ts, one Lambda call each): parse the
 *    definition, pick `_since`, export (or search) the cohort, stage it in S3 by patient
 *    partition, and return the items. A sweep id already staged is resumed without exporting
 *    again.
 * 2. `processItem` (worker, one Distributed Map item): stream the item's staged parts from S3,
 *    group by patient in bounded memory (external sort), run batches (features → one predict
 *    per model per batch → concurrent report transactions), and checkpoint after each batch.
 *    A crashed worker started again with the same item resumes after its last checkpoint.
 * 3. `finishSweep` (coordinator): merge the item checkpoints into the summary, record the
 *    sweep's transactionTime as the next incremental `_since` when no patient failed.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { createNdjsonPrefilter, parseNdjsonLines } from '../features/index.js';
import type { Resource } from '@medplum/fhirtypes';
import type { ModelManifest } from '../inference/manifest.js';
import {
  mapLimit,
  fetchInputs,
  preparePatient,
  scoreBatch,
  type PreparedPatient,
  type SweepPorts,
} from './batch.js';
import type { BulkClient, PollStats } from './bulk-client.js';
import type { CheckpointStore, ItemCheckpoint } from './checkpoint.js';
import { selectModels } from './definition.js';
import { ExportExpiredError, SweepError, SweepInputError } from './errors.js';
import { groupByKey } from './external-sort.js';
import { observationSearchCodes } from '../features/search-codes.js';
import { createHeapCollector } from './heap.js';
import type { StageKnobs } from './stage.js';
import { exportFiles, planItems, stageExportFile } from './stage-files.js';
import { begin, itemsOf, pollExport, prefixOf, readStaged } from './steps.js';
import { readItem } from './read-item.js';
import { runSearch } from './search-steps.js';
import { putObject, type StagingStore } from './staging.js';
import { buildSummary, renderSummaryHtml, type SweepSummary } from './summary.js';
import { emptyTally, mergeTally } from './tally.js';

/**
 * One Distributed Map item: a partition of the staged export (every resource of the
 * partition's patients, in one or more S3 objects of keyed NDJSON, listed in the JSON array at
 * `keysKey`: one part per export file or more, so never in the item, whose input Step Functions
 * bounds at 256 KiB). `items.json` next to the staged export is the array of these, readable
 * by the map's ItemReader:
 * `{ "sweepId": "nightly-…", "partition": 3, "keysKey": "sweeps/<id>/attempt-1/items/p0003.json",
 *    "mode": "full" | "incremental", "lines": 81234 }`.
 */
export interface SweepItem {
  readonly sweepId: string;
  readonly partition: number;
  readonly keysKey: string;
  /**
   * The part keys themselves: items of executions started by the release before key lists
   * (its state machine passes them inline), read as they are.
   */
  readonly keys?: readonly string[];
  readonly mode: 'full' | 'incremental';
  readonly lines: number;
}

export interface SweepProgress {
  readonly phase: 'export' | 'stage' | 'process';
  readonly done: number;
  readonly total: number;
}

export interface SweepContext {
  readonly ports: SweepPorts;
  readonly models: { all(): readonly ModelManifest[] };
  readonly bulk: BulkClient;
  readonly store: StagingStore;
  readonly checkpoints: CheckpointStore;
  /** Where sorted runs spill. */
  readonly tmpDir: string;
  /** S3 key prefix. Default `sweeps`. */
  readonly prefix?: string;
  /** The bound on total wait for the export (the bulk client's too). Default 30 minutes. */
  readonly exportMaxWaitMs?: number;
  /** Staging knobs (partition size, part size, export attempts; poll pauses live in the bulk client). */
  readonly stage?: StageKnobs;
  /** Bytes of keyed lines held before a sorted run spills. Default 4 MiB. */
  readonly runBytes?: number;
  /** Incremental runs: patients whose inputs are read at once. Default 8. */
  readonly fetchConcurrency?: number;
  /**
   * Text in the JSON of every resource `ports.isOwnWrite` accepts (its tag code, quoted): lets
   * staging route export lines without parsing them. Absent: staging parses every line.
   */
  readonly ownWriteMarker?: string;
  readonly onProgress?: (event: SweepProgress) => void;
  /** Releases what the context holds open (kept-alive sockets). */
  readonly close?: () => void;
  /** Called after each checkpoint is stored (logs; tests). */
  readonly onCheckpoint?: (checkpoint: ItemCheckpoint) => void;
}

export interface StartResult {
  readonly sweepId: string;
  readonly items: SweepItem[];
  /** S3 key of `items.json` (the Distributed Map's ItemReader input). */
  readonly itemsKey: string;
  /** True when the sweep was already staged (a resumed run: no export). */
  readonly resumed: boolean;
  readonly mode: 'full' | 'incremental';
}

/** Export files staged at once by the in-process path (`startSweep`). */
const STAGE_CONCURRENCY = 2;

/**
 * The coordinator steps (steps.ts) in one process: begin → poll until the manifest (sleeping as
 * each poll says) → stage each file, two at a time → plan (or the Search steps: search-steps.ts). Export files that expired are
 * kicked off again, up to `stage.maxExportAttempts` (default 2) kick-offs.
 */
export async function startSweep(
  ctx: SweepContext,
  input: unknown,
  opts: { sweepId?: string } = {},
): Promise<StartResult> {
  const maxAttempts = ctx.stage?.maxExportAttempts ?? 2;
  let sweepId = opts.sweepId;
  let poll: PollStats | undefined;
  for (let attempt = 1; ; attempt++) {
    const begun = await begin(ctx, input, {
      ...(sweepId ? { sweepId } : {}),
      attempt,
      ...(poll ? { poll } : {}),
    });
    let state = begun.state;
    sweepId = state.sweepId;
    if (state.phase === 'searching') return runSearch(ctx, state);
    if (state.phase === 'staged' || !begun.record) {
      return {
        sweepId,
        items: begun.items ?? [],
        itemsKey: state.itemsKey ?? `${prefixOf(ctx, sweepId)}/items.json`,
        resumed: state.resumed === true,
        mode: state.mode ?? 'full',
      };
    }
    const record = begun.record;
    const log = ctx.ports.logger.child({ sweep: sweepId });
    try {
      while (state.phase === 'exporting') {
        if (state.waitMs) await sleep(state.waitMs);
        state = await pollExport(ctx, state);
      }
      const files = await exportFiles(ctx, sweepId, state.attempt, state.files ?? 0);
      const total = files.reduce((n, f) => n + (f.count ?? 10_000), 0);
      let done = 0;
      const onLines = (n: number): void => {
        done += n;
        ctx.onProgress?.({ phase: 'stage', done, total });
      };
      // Every file settles before the outcome counts (no download left running on a re-kick).
      let failure: unknown;
      await mapLimit(files, STAGE_CONCURRENCY, async (f) => {
        if (failure !== undefined) return;
        await stageExportFile(ctx, f, onLines).catch((err: unknown) => {
          failure ??= err;
        });
      });
      if (failure !== undefined) throw failure as Error;
      const planned = await planItems(ctx, state);
      ctx.onProgress?.({ phase: 'stage', done: total, total });
      return planned;
    } catch (err) {
      if (err instanceof ExportExpiredError && attempt < maxAttempts) {
        log.warn('export files expired; kicking off again', { attempt, status: err.status });
        poll = state.poll;
        continue;
      }
      await ctx.checkpoints.putSweep({ ...record, status: 'failed' });
      if (err instanceof ExportExpiredError) {
        throw new ExportExpiredError(
          `export files expired (${err.status}) before they were read, ${attempt} kick-off(s); run the sweep again`,
          err.status,
        );
      }
      throw err;
    }
  }
}

/**
 * Worker: one item, batch by batch, a checkpoint after each. Idempotent; resumes after a crash.
 */
export async function processItem(ctx: SweepContext, item: SweepItem): Promise<ItemCheckpoint> {
  const record = await ctx.checkpoints.getSweep(item.sweepId);
  if (!record) throw new SweepInputError(`no sweep ${item.sweepId}`);
  const definition = record.definition;
  const models = selectModels(ctx.models.all(), definition);
  const codes = observationSearchCodes(models);
  const prefilter = createNdjsonPrefilter([
    { codeValues: codes.map((c) => c.slice(c.lastIndexOf('|') + 1)) },
  ]);
  const previous = await ctx.checkpoints.getItem(item.sweepId, item.partition);
  if (previous?.done) {
    return previous;
  }
  const tally = previous?.tally ?? emptyTally();
  const resumeAfter = previous?.lastPatient;
  let last = resumeAfter;
  let batches = previous?.batches ?? 0;
  const log = ctx.ports.logger.child({ sweep: item.sweepId, partition: item.partition });
  const isOwnWrite = (r: Resource): boolean => ctx.ports.isOwnWrite(r);

  const sorter = await readItem(ctx, item);
  const clock = ctx.ports.clock ?? ((): Date => new Date());
  // A full GC after a checkpoint when the heap has grown well past what the last one left (why: heap.ts).
  const heap = createHeapCollector();
  const counts = (): Record<string, number> => {
    const gc = heap.stats();
    return { batches, patients: tally.patients, gcCollections: gc.collections, gcMs: gc.ms };
  };
  const checkpointOf = (done: boolean): ItemCheckpoint => ({
    sweepId: item.sweepId,
    partition: item.partition,
    ...(last === undefined ? {} : { lastPatient: last }),
    done,
    tally,
    batches,
    updatedAt: new Date().toISOString(),
  });
  interface Batch {
    readonly asOf: Date;
    /** Incremental runs: the ids whose inputs are read from the server when the batch is full. */
    readonly ids: string[];
    readonly prepared: PreparedPatient[];
    malformed: number;
  }
  const newBatch = (): Batch => ({ asOf: clock(), ids: [], prepared: [], malformed: 0 });
  // One batch is scored and written while the next is grouped and featurised: the FHIR
  // server works on batch k while this process parses batch k + 1. Checkpoints stay in order.
  let inflight: Promise<void> = Promise.resolve();
  let failure: unknown;
  const score = async (batch: Batch): Promise<void> => {
    const prepared =
      item.mode === 'incremental'
        ? await mapLimit(batch.ids, ctx.fetchConcurrency ?? 8, async (id) =>
            preparePatient(
              ctx.ports,
              models,
              await fetchInputs(ctx.ports.fhir, id, codes, isOwnWrite),
              batch.asOf,
            ),
          )
        : batch.prepared;
    await inflight;
    if (failure !== undefined) throw failure as Error;
    inflight = (async (): Promise<void> => {
      await scoreBatch(ctx.ports, models, prepared, tally, batch.asOf);
      if (batch.malformed > 0) tally.malformedLines = (tally.malformedLines ?? 0) + batch.malformed;
      last = prepared[prepared.length - 1]?.id ?? last;
      batches++;
      const checkpoint = checkpointOf(false);
      await ctx.checkpoints.putItem(checkpoint);
      heap.maybeCollect();
      log.info('sweep checkpoint', { ...counts(), failed: tally.outcomes.failed });
      ctx.onCheckpoint?.(checkpoint);
      ctx.onProgress?.({ phase: 'process', done: prepared.length, total: item.lines });
    })().catch((err: unknown) => {
      failure = err;
    });
  };
  try {
    let batch = newBatch();
    for await (const group of groupByKey(sorter.sorted())) {
      if (resumeAfter !== undefined && group.key <= resumeAfter) continue;
      if (item.mode === 'incremental') batch.ids.push(group.key);
      else {
        // One parse per line, here: Observation lines that name none of the models' codes are
        // skipped unparsed (the features' prefilter); what does not parse is counted.
        const parsed = parseNdjsonLines(group.lines, prefilter);
        batch.malformed += parsed.malformed;
        const observations = parsed.observations.filter((o) => !isOwnWrite(o));
        batch.prepared.push(
          preparePatient(
            ctx.ports,
            models,
            { id: group.key, patient: parsed.patient, observations },
            batch.asOf,
          ),
        );
      }
      if (batch.ids.length + batch.prepared.length >= definition.batchSize) {
        await score(batch);
        batch = newBatch();
      }
    }
    if (batch.ids.length + batch.prepared.length > 0) await score(batch);
    await inflight;
    if (failure !== undefined) throw failure as Error;
  } finally {
    await inflight;
    await sorter.dispose();
  }
  const done = checkpointOf(true);
  await ctx.checkpoints.putItem(done);
  log.info('sweep item done', counts());
  return done;
}

/** Coordinator, after every item: the summary (also written to S3 as JSON and HTML). */
export async function finishSweep(
  ctx: SweepContext,
  sweepId: string,
  expectedItems?: readonly SweepItem[],
): Promise<SweepSummary> {
  const record = await ctx.checkpoints.getSweep(sweepId);
  if (!record?.stagedKey) throw new SweepInputError(`sweep ${sweepId} was never staged`);
  const staged = await readStaged(ctx, sweepId, record.stagedKey);
  if (!staged) throw new SweepError(`staged export of ${sweepId} is missing`);
  const checkpoints = await ctx.checkpoints.listItems(sweepId);
  const expected = expectedItems ?? itemsOf(sweepId, staged);
  const unfinished = expected.filter((i) => !checkpoints.some((c) => c.partition === i.partition && c.done));
  if (unfinished.length > 0) {
    throw new SweepError(`sweep ${sweepId}: items not done: ${unfinished.map((i) => i.partition).join(',')}`);
  }
  const tally = checkpoints.reduce((t, c) => mergeTally(t, c.tally), emptyTally());
  const latest = await ctx.checkpoints.getLatest(record.definition.name);
  const incremental = staged.since !== undefined;
  const population = incremental ? Math.max(latest?.population ?? 0, tally.patients) : tally.patients;
  const finishedAt = new Date().toISOString();
  const summary = buildSummary({ record, staged, tally, finishedAt, population, items: expected.length });
  if (tally.outcomes.failed === 0) {
    await ctx.checkpoints.putLatest(record.definition.name, {
      sweepId,
      transactionTime: staged.transactionTime,
      finishedAt,
      population,
    });
  }
  await ctx.checkpoints.putSweep({ ...record, status: 'done', finishedAt });
  const prefix = prefixOf(ctx, sweepId);
  await putObject(ctx.store, `${prefix}/summary.json`, JSON.stringify(summary, null, 2));
  await putObject(ctx.store, `${prefix}/summary.html`, renderSummaryHtml(summary));
  return summary;
}

/**
 * Start, every item (one at a time, or a few at once), finish: the whole sweep in one process.
 * The next item is not read ahead while one scores: that held a second item's buffers (peak RSS
 * at 100,000 patients 1.17–1.23× that at 10,000 with it, 1.13× without) for no gain measurable
 * above the run-to-run noise (items phase 35–41 s either way, 8 reports in flight).
 */
export async function runSweep(
  ctx: SweepContext,
  input: unknown,
  opts: { sweepId?: string; itemConcurrency?: number } = {},
): Promise<SweepSummary & { resumed: boolean; phasesMs: { start: number; items: number; finish: number } }> {
  const t0 = Date.now();
  const started = await startSweep(ctx, input, opts);
  const t1 = Date.now();
  const concurrency = opts.itemConcurrency ?? 1;
  if (concurrency > 1) await mapLimit(started.items, concurrency, (item) => processItem(ctx, item));
  else for (const item of started.items) await processItem(ctx, item);
  const t2 = Date.now();
  const summary = await finishSweep(ctx, started.sweepId, started.items);
  return {
    ...summary,
    resumed: started.resumed,
    // This process's wall time per phase: export and staging, the items, the summary.
    phasesMs: { start: t1 - t0, items: t2 - t1, finish: Date.now() - t2 },
  };
}
