/**
 * The sweep's coordinator, as steps a Step Functions state machine drives one Lambda call at a
 * time (infra/constructs/sweep.ts), so that no call waits for a whole export or reads a whole
 * export (Lambda stops at 15 minutes; a 10^7-patient export takes hours and tens of GB):
 *
 *   beginSweep  → { phase: 'exporting', statusUrl, waitSeconds } (or 'staged': resumed, search)
 *   pollExport  → ONE status request: 'exporting' again with waitSeconds (Retry-After), or
 *                 'exported': manifest.json and files.json (one entry per output file) in S3
 *   stageFile   × files.json (a Distributed Map): one file's lines into partition parts,
 *                 f<index>/staged.json beside them; idempotent (a retry rewrites the same keys)
 *   planItems   → merges the files' partitions into items.json and staged.json: 'staged'
 *
 * `startSweep` (sweep.ts) chains the same steps in one process. The state is small JSON with
 * no token and no patient data (the status URL and S3 keys only).
 */
import { randomUUID } from 'node:crypto';
import type { Logger } from '../log.js';
import { observationCodes } from './batch.js';
import { exportTypeFilters } from './type-filters.js';
import type { PollStats } from './bulk-client.js';
import type { SweepRecord } from './checkpoint.js';
import { parseSweepDefinition, selectModels } from './definition.js';
import { ExportUnsupportedError, SweepInputError } from './errors.js';
import { partitionsFor, stageSearch, type StagedExport, type StageOptions } from './stage.js';
import { getJson, putObject } from './staging.js';
import type { StartResult, SweepContext, SweepItem } from './sweep.js';

export interface SweepState {
  readonly sweepId: string;
  /** The staging bucket: the Distributed Maps' ItemReaders read files.json and items.json from it. */
  readonly bucket: string;
  readonly phase: 'exporting' | 'exported' | 'staged';
  /** Export kick-offs so far, this one included (0: paged search). */
  readonly attempt: number;
  /** Across polls and kick-offs: the bound on total wait (`SWEEP_EXPORT_MAX_WAIT_MS`) holds over them. */
  readonly poll: PollStats;
  readonly statusUrl?: string;
  /** exporting: the wait before the next poll (Retry-After, clamped); seconds for a Wait state. */
  readonly waitMs?: number;
  readonly waitSeconds?: number;
  readonly serverErrorsInARow?: number;
  /** exported: S3 key of files.json (`ExportFile[]`) and how many. */
  readonly filesKey?: string;
  readonly files?: number;
  /** staged: S3 key of items.json (`SweepItem[]`) and how many. */
  readonly itemsKey?: string;
  readonly items?: number;
  readonly mode?: 'full' | 'incremental';
  /** The sweep was staged before this call (a resumed run: no export). */
  readonly resumed?: boolean;
}

/** One entry of files.json: a Distributed Map item, one `stageFile` call. */
export interface ExportFile {
  readonly sweepId: string;
  readonly attempt: number;
  /** Position in the manifest's `output`. */
  readonly index: number;
  readonly type: string;
  readonly url: string;
  readonly requiresAccessToken: boolean;
  /** The manifest's resource count for the file, when it gives one (progress only). */
  readonly count?: number;
  /** The attempt's partition count: the same for every file (a patient's lines meet in one item). */
  readonly partitions: number;
}

export const prefixOf = (ctx: SweepContext, sweepId: string): string =>
  `${ctx.prefix ?? 'sweeps'}/${sweepId}`;
export const attemptPrefix = (ctx: SweepContext, sweepId: string, attempt: number): string =>
  `${prefixOf(ctx, sweepId)}/attempt-${attempt}`;
export const filePrefix = (ctx: SweepContext, f: ExportFile): string =>
  `${attemptPrefix(ctx, f.sweepId, f.attempt)}/f${String(f.index).padStart(4, '0')}`;
const emptyPoll = (): PollStats => ({ polls: 0, throttled: 0, serverErrors: 0, waitedMs: 0 });
const modeOf = (staged: StagedExport): 'full' | 'incremental' => (staged.since ? 'incremental' : 'full');

export function itemsOf(sweepId: string, staged: StagedExport): SweepItem[] {
  const mode = modeOf(staged);
  return staged.partitions
    .filter((p) => p.lines > 0)
    .map((p) => ({ sweepId, partition: p.partition, keys: p.keys, mode, lines: p.lines }));
}

function stageOptions(ctx: SweepContext, prefix: string, logger: Logger): StageOptions {
  return {
    store: ctx.store,
    prefix,
    isOwnWrite: (r) => ctx.ports.isOwnWrite(r),
    ...(ctx.ownWriteMarker ? { ownWriteMarker: ctx.ownWriteMarker } : {}),
    logger,
    ...ctx.stage,
    onProgress: (e) => ctx.onProgress?.(e),
  };
}

/** staged.json, items.json, then the record `staged` with the export's transactionTime. */
export async function recordStaged(
  ctx: SweepContext,
  record: SweepRecord,
  staged: StagedExport,
  log: Logger,
): Promise<StartResult & { state: SweepState }> {
  const prefix = prefixOf(ctx, record.sweepId);
  const stagedKey = `${prefix}/staged.json`;
  const itemsKey = `${prefix}/items.json`;
  const items = itemsOf(record.sweepId, staged);
  await putObject(ctx.store, stagedKey, JSON.stringify(staged));
  await putObject(ctx.store, itemsKey, JSON.stringify(items));
  await ctx.checkpoints.putSweep({
    ...record,
    status: 'staged',
    stagedKey,
    transactionTime: staged.transactionTime,
  });
  log.info('sweep staged', {
    source: staged.source,
    items: items.length,
    lines: staged.partitions.reduce((n, p) => n + p.lines, 0),
    malformed: staged.counts.malformedLines,
    exportErrors: staged.exportErrors.length,
  });
  return stagedResult(ctx, record.sweepId, staged, false);
}

/** The start result and the `staged` state of a staged export (`resumed`: staged by an earlier call). */
export function stagedResult(
  ctx: SweepContext,
  sweepId: string,
  staged: StagedExport,
  resumed: boolean,
): StartResult & { state: SweepState } {
  const items = itemsOf(sweepId, staged);
  const itemsKey = `${prefixOf(ctx, sweepId)}/items.json`;
  const mode = modeOf(staged);
  return {
    sweepId,
    items,
    itemsKey,
    resumed,
    mode,
    state: {
      sweepId,
      bucket: ctx.store.bucket,
      phase: 'staged',
      attempt: staged.attempts,
      poll: staged.poll,
      itemsKey,
      items: items.length,
      mode,
      resumed,
    },
  };
}

export interface BeginOptions {
  /** Resume this sweep (Step Functions passes the execution name). */
  readonly sweepId?: string;
  /** The kick-off this is: 1, or the next after files expired. */
  readonly attempt?: number;
  /** The polls of the earlier kick-offs. */
  readonly poll?: PollStats;
}

/** Kick-off (the step, and `startSweep`'s first): the items too when it staged already. */
export async function begin(
  ctx: SweepContext,
  input: unknown,
  opts: BeginOptions = {},
): Promise<{ state: SweepState; items?: SweepItem[]; record?: SweepRecord }> {
  const definition = parseSweepDefinition(input);
  const models = selectModels(ctx.models.all(), definition);
  const sweepId =
    opts.sweepId ??
    `${definition.name}-${new Date().toISOString().replace(/[-:.]/g, '')}-${randomUUID().slice(0, 8)}`;
  if (!/^[A-Za-z0-9_.-]{1,128}$/.test(sweepId)) throw new SweepInputError('invalid sweep id');
  const attempt = opts.attempt ?? 1;
  const log = ctx.ports.logger.child({ sweep: sweepId });

  const existing = await ctx.checkpoints.getSweep(sweepId);
  if (existing?.stagedKey) {
    const staged = await getJson<StagedExport>(ctx.store, existing.stagedKey);
    if (staged) {
      log.info('sweep resumed from staged export', { partitions: staged.partitions.length });
      const { state, items } = stagedResult(ctx, sweepId, staged, true);
      return { state, items };
    }
  }

  // A re-kick exports what the first kick-off asked for (the same `_since`).
  const since =
    attempt > 1 && existing
      ? existing.since
      : definition.since === 'full'
        ? undefined
        : definition.since === 'incremental'
          ? (await ctx.checkpoints.getLatest(definition.name))?.transactionTime
          : definition.since;
  const record: SweepRecord = {
    sweepId,
    definition,
    status: 'exporting',
    startedAt: existing?.startedAt ?? new Date().toISOString(),
    ...(since ? { since } : {}),
  };
  await ctx.checkpoints.putSweep(record);

  const search = async (): Promise<{ state: SweepState; items: SweepItem[] }> => {
    const staged = await stageSearch({
      ...stageOptions(ctx, prefixOf(ctx, sweepId), log),
      fhir: ctx.ports.fhir,
      cohort: definition.cohort,
      codes: observationCodes(models),
      ...(since ? { since } : {}),
    });
    return recordStaged(ctx, record, staged, log);
  };
  if (definition.cohort.kind === 'search') return search();
  let statusUrl: string;
  try {
    statusUrl = await ctx.bulk.kickOff({
      level: definition.cohort.kind === 'group' ? 'group' : 'patient',
      ...(definition.cohort.kind === 'group' ? { group: definition.cohort.group } : {}),
      types: [
        'Patient',
        'Observation',
        ...definition.extraTypes.filter((t) => t !== 'Patient' && t !== 'Observation'),
      ],
      ...(since ? { since } : {}),
      typeFilters: exportTypeFilters(observationCodes(models)),
    });
  } catch (err) {
    if (!(err instanceof ExportUnsupportedError)) {
      await ctx.checkpoints.putSweep({ ...record, status: 'failed' });
      throw err;
    }
    log.warn('no $export on the server; paged search instead', { status: err.status });
    return search();
  }
  log.info('export kicked off', { attempt });
  const state: SweepState = {
    sweepId,
    bucket: ctx.store.bucket,
    phase: 'exporting',
    attempt,
    poll: opts.poll ?? emptyPoll(),
    statusUrl,
    waitMs: 0,
    waitSeconds: 1,
  };
  return { state, record };
}

/** Step 1: kick the export off (or stage by search, or find the sweep staged already). */
export async function beginSweep(
  ctx: SweepContext,
  input: unknown,
  opts: BeginOptions = {},
): Promise<SweepState> {
  return (await begin(ctx, input, opts)).state;
}

/**
 * Step 2: one status request. Still running: `exporting` with the wait. Done: the manifest and
 * files.json in S3, `exported`; the partition count is decided here, from the manifest's counts.
 */
export async function pollExport(ctx: SweepContext, state: SweepState): Promise<SweepState> {
  if (state.phase !== 'exporting' || !state.statusUrl) {
    throw new SweepInputError(`sweep ${state.sweepId}: poll needs an export in progress`);
  }
  const poll = { ...state.poll };
  const result = await ctx.bulk.poll(state.statusUrl, poll, state.serverErrorsInARow ?? 0);
  const { waitMs: _w, waitSeconds: _s, serverErrorsInARow: _e, ...rest } = state;
  if (!result.done) {
    return {
      ...rest,
      poll,
      waitMs: result.waitMs,
      waitSeconds: Math.max(1, Math.ceil(result.waitMs / 1000)),
      serverErrorsInARow: result.serverErrorsInARow,
    };
  }
  const { manifest } = result;
  const prefix = attemptPrefix(ctx, state.sweepId, state.attempt);
  const total = manifest.output.reduce((n, o) => n + (o.count ?? 10_000), 0);
  const partitions = partitionsFor(total, ctx.stage ?? {});
  const files: ExportFile[] = manifest.output.map((o, index) => ({
    sweepId: state.sweepId,
    attempt: state.attempt,
    index,
    type: o.type,
    url: o.url,
    requiresAccessToken: manifest.requiresAccessToken,
    ...(o.count === undefined ? {} : { count: o.count }),
    partitions,
  }));
  const filesKey = `${prefix}/files.json`;
  await putObject(ctx.store, `${prefix}/manifest.json`, JSON.stringify(manifest));
  await putObject(ctx.store, filesKey, JSON.stringify(files));
  ctx.ports.logger
    .child({ sweep: state.sweepId })
    .info('export complete', { files: files.length, errorFiles: manifest.error.length, partitions });
  return { ...rest, poll, phase: 'exported', filesKey, files: files.length };
}
