/**
 * The sweep's coordinator, as steps a Step Functions state machine drives one Lambda call at a
 * time (infra/constructs/sweep.ts), so that no call waits for a whole export or reads a whole
 * export (Lambda stops at 15 minutes; a 10^7-patient export takes hours and tens of GB):
 *
 *   beginSweep  → { phase: 'exporting', statusUrl, waitSeconds } (or 'staged': resumed; or
 *                 'searching': no `$export`, or a search cohort — search-steps.ts)
 *   searchStep  → pages of a paged search until its time budget: 'searching' again (a cursor in
 *                 S3), or 'staged' as planItems answers
 *   pollExport  → ONE status request: 'exporting' again with waitSeconds (Retry-After, whole
 *                 seconds, at least the loop's floor), or 'exported': manifest.json, the files'
 *                 entries (files/c<n>.json, download URLs included) and files.json (the Stage
 *                 map's items: { sweepId, attempt, index } only, no URL) in S3
 *   stageFile   × files.json (a Distributed Map): one file's lines into partition parts,
 *                 f<index>/staged.json beside them; idempotent (a retry rewrites the same keys)
 *   planItems   → merges the files' partitions: one key list per partition (items/p<n>.json),
 *                 staged.json and items.json (small items that name their key list): 'staged'
 *
 * `startSweep` (sweep.ts) chains the same steps in one process. The state is small JSON with
 * no token and no patient data (the status URL and S3 keys only).
 */
import { randomUUID } from 'node:crypto';
import { observationSearchCodes } from '../features/search-codes.js';
import { exportTypeFilters } from './type-filters.js';
import type { PollStats } from './bulk-client.js';
import type { SweepRecord } from './checkpoint.js';
import { parseSweepDefinition, selectModels } from './definition.js';
import { ExportFailedError, ExportTimeoutError, ExportUnsupportedError, SweepInputError } from './errors.js';
import { beginSearch, resumedSearchState } from './search-steps.js';
import { partitionsFor } from './stage.js';
import { attemptPrefix, readStaged, stagedResult } from './staged.js';
import { putObject } from './staging.js';
import type { SweepContext, SweepItem } from './sweep.js';

export { attemptPrefix, itemsOf, prefixOf, readStaged, recordStaged, stagedResult } from './staged.js';

/**
 * The deployed Wait/Choice loop's floor between polls (seconds; the state machine passes its
 * own, `minPollInterval`), and its bound on polls: each poll adds about 9 events to the
 * execution's history (Wait, Task, Choice entered and exited; the task scheduled, started,
 * succeeded), so 1,500 polls stay near 13,500 of the 25,000 a standard execution may have.
 * The in-process loop (`startSweep`) has no history: it waits what the server asks (≥ 100 ms).
 */
export const DEFAULT_MIN_POLL_SECONDS = 30;
export const DEFAULT_MAX_POLLS = 1_500;
/** The bound on total wait when the context names none (as the bulk client's default). */
export const DEFAULT_EXPORT_MAX_WAIT_MS = 30 * 60_000;

export interface SweepState {
  readonly sweepId: string;
  /** The staging bucket: the Distributed Maps' ItemReaders read files.json and items.json from it. */
  readonly bucket: string;
  readonly phase: 'exporting' | 'searching' | 'exported' | 'staged';
  /** Export kick-offs so far, this one included (0: paged search). */
  readonly attempt: number;
  /** Across polls and kick-offs: the bound on total wait (`SWEEP_EXPORT_MAX_WAIT_MS`) holds over them. */
  readonly poll: PollStats;
  readonly statusUrl?: string;
  /** exporting: the wait before the next poll (Retry-After, clamped); seconds for a Wait state. */
  readonly waitMs?: number;
  readonly waitSeconds?: number;
  readonly serverErrorsInARow?: number;
  /**
   * The Wait/Choice loop's floor (whole seconds) and bound on polls; absent in one process.
   * With them the wait counted towards the bound is the Wait state's: waitSeconds × 1000.
   */
  readonly minPollSeconds?: number;
  readonly maxPolls?: number;
  /** searching: S3 key of the search cursor (search-steps.ts), the Search calls so far and their bound. */
  readonly searchKey?: string;
  readonly searchCalls?: number;
  readonly maxSearchCalls?: number;
  /** exported: S3 key of files.json (`StageFileItem[]`) and how many. */
  readonly filesKey?: string;
  readonly files?: number;
  /** staged: S3 key of items.json (`SweepItem[]`) and how many. */
  readonly itemsKey?: string;
  readonly items?: number;
  readonly mode?: 'full' | 'incremental';
  /** The sweep was staged before this call (a resumed run: no export). */
  readonly resumed?: boolean;
}

/**
 * One entry of files.json: a Stage map item, one `stageFile` call. No download URL (it is often
 * a bearer URL, and map items are kept in the execution's history): stageFile reads its
 * `ExportFile` from S3 (`fileChunkKey`).
 */
export interface StageFileItem {
  readonly sweepId: string;
  readonly attempt: number;
  /** Position in the manifest's `output`. */
  readonly index: number;
}

/** An export file as staging needs it, in `attempt-N/files/c<n>.json` (S3 only). */
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

export const filePrefix = (ctx: SweepContext, f: StageFileItem): string =>
  `${attemptPrefix(ctx, f.sweepId, f.attempt)}/f${String(f.index).padStart(4, '0')}`;
/** Export file entries per S3 object: a stageFile call reads one object of at most this many. */
export const FILES_PER_CHUNK = 1000;
export const fileChunkKey = (ctx: SweepContext, f: StageFileItem): string =>
  `${attemptPrefix(ctx, f.sweepId, f.attempt)}/files/c${String(Math.floor(f.index / FILES_PER_CHUNK)).padStart(4, '0')}.json`;
const emptyPoll = (): PollStats => ({ polls: 0, throttled: 0, serverErrors: 0, waitedMs: 0 });

export interface BeginOptions {
  /** Resume this sweep (Step Functions passes the execution name). */
  readonly sweepId?: string;
  /** The kick-off this is: 1, or the next after files expired. */
  readonly attempt?: number;
  /** The polls of the earlier kick-offs. */
  readonly poll?: PollStats;
  /** The Wait/Choice loop's floor between polls (seconds) and bound on polls; absent in one process. */
  readonly minPollSeconds?: number;
  readonly maxPolls?: number;
  /** The Search loop's bound on calls (the state machine's; absent in one process: no bound). */
  readonly maxSearchCalls?: number;
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
    const staged = await readStaged(ctx, sweepId, existing.stagedKey);
    if (staged) {
      log.info('sweep resumed from staged export', { partitions: staged.partitions.length });
      const { state, items } = stagedResult(ctx, sweepId, staged, true);
      return { state, items };
    }
  }
  if (existing?.status === 'searching') {
    log.info('sweep resumed: search in progress');
    return { state: resumedSearchState(ctx, sweepId, opts.maxSearchCalls), record: existing };
  }
  // A retried Begin whose first call kicked the export off (and failed after): that job, polled,
  // while the server still has it (a job gone, e.g. cancelled once staged, is kicked off anew).
  if (
    existing?.status === 'exporting' &&
    existing.statusUrl &&
    existing.exportAttempt === attempt &&
    (await exportJobExists(ctx, existing.statusUrl))
  ) {
    log.info('sweep resumed: export in progress', { attempt });
    return { state: exportingState(ctx, sweepId, attempt, existing.statusUrl, opts), record: existing };
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

  const codes = observationSearchCodes(models);
  const search = async (): Promise<{ state: SweepState; record: SweepRecord }> => ({
    state: await beginSearch(ctx, {
      record,
      codes,
      ...(since ? { since } : {}),
      ...(opts.maxSearchCalls === undefined ? {} : { maxSearchCalls: opts.maxSearchCalls }),
    }),
    record,
  });
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
      typeFilters: exportTypeFilters(codes),
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
  const kicked: SweepRecord = { ...record, statusUrl, exportAttempt: attempt };
  await ctx.checkpoints.putSweep(kicked);
  return { state: exportingState(ctx, sweepId, attempt, statusUrl, opts), record: kicked };
}

/** One status request: false when the server no longer has the job (404, 410); its other answers are the loop's. */
async function exportJobExists(ctx: SweepContext, statusUrl: string): Promise<boolean> {
  try {
    await ctx.bulk.poll(statusUrl, emptyPoll());
    return true;
  } catch (err) {
    if (err instanceof ExportFailedError && (err.status === 404 || err.status === 410)) return false;
    return true;
  }
}

/** The state of an export just kicked off (or found kicked off): the Wait/Poll loop's input. */
function exportingState(
  ctx: SweepContext,
  sweepId: string,
  attempt: number,
  statusUrl: string,
  opts: BeginOptions,
): SweepState {
  // The Wait/Choice loop waits its floor before the first poll, and that wait counts too.
  const floor = opts.minPollSeconds;
  const firstWaitMs = floor === undefined ? 0 : floor * 1000;
  const poll = opts.poll ?? emptyPoll();
  return {
    sweepId,
    bucket: ctx.store.bucket,
    phase: 'exporting',
    attempt,
    poll: { ...poll, waitedMs: poll.waitedMs + firstWaitMs },
    statusUrl,
    waitMs: firstWaitMs,
    waitSeconds: floor ?? 1,
    ...(floor === undefined ? {} : { minPollSeconds: floor, maxPolls: opts.maxPolls ?? DEFAULT_MAX_POLLS }),
  };
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
 * Step 2: one status request. Still running: `exporting` with the wait. In the Wait/Choice loop
 * (`minPollSeconds` in the state) that is whole seconds, at least the floor, and what counts
 * towards the bound on total wait is that wait (what the Wait state takes); past `maxPolls`
 * polls, `ExportTimeoutError`. Done: the manifest, the files' entries and files.json in S3,
 * `exported`; the partition count is decided here, from the manifest's counts.
 */
export async function pollExport(ctx: SweepContext, state: SweepState): Promise<SweepState> {
  if (state.phase !== 'exporting' || !state.statusUrl) {
    throw new SweepInputError(`sweep ${state.sweepId}: poll needs an export in progress`);
  }
  const poll = { ...state.poll };
  const result = await ctx.bulk.poll(state.statusUrl, poll, state.serverErrorsInARow ?? 0);
  const { waitMs: _w, waitSeconds: _s, serverErrorsInARow: _e, ...rest } = state;
  if (!result.done) {
    const floor = state.minPollSeconds;
    const waitSeconds = Math.max(floor ?? 1, Math.ceil(result.waitMs / 1000));
    const waitMs = floor === undefined ? result.waitMs : waitSeconds * 1000;
    // The client counted the wait it asked for; the wait taken is what counts.
    poll.waitedMs = state.poll.waitedMs + waitMs;
    const maxWait = ctx.exportMaxWaitMs ?? DEFAULT_EXPORT_MAX_WAIT_MS;
    if (poll.waitedMs > maxWait) {
      throw new ExportTimeoutError(
        `export not complete after ${state.poll.waitedMs} ms of waiting (bound ${maxWait} ms)`,
      );
    }
    if (state.maxPolls !== undefined && poll.polls >= state.maxPolls) {
      throw new ExportTimeoutError(`export not complete after ${poll.polls} polls (bound ${state.maxPolls})`);
    }
    return { ...rest, poll, waitMs, waitSeconds, serverErrorsInARow: result.serverErrorsInARow };
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
  for (let i = 0; i < files.length; i += FILES_PER_CHUNK) {
    const chunk = files.slice(i, i + FILES_PER_CHUNK);
    await putObject(ctx.store, fileChunkKey(ctx, chunk[0] as ExportFile), JSON.stringify(chunk));
  }
  const items: StageFileItem[] = files.map((f) => ({
    sweepId: f.sweepId,
    attempt: f.attempt,
    index: f.index,
  }));
  await putObject(ctx.store, filesKey, JSON.stringify(items));
  ctx.ports.logger
    .child({ sweep: state.sweepId })
    .info('export complete', { files: files.length, errorFiles: manifest.error.length, partitions });
  return { ...rest, poll, phase: 'exported', filesKey, files: files.length };
}
