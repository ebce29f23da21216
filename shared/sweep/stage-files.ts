/**
 * The export's files, staged one per Distributed Map item (`stageFile`), and the plan that
 * merges what they staged into the sweep's items (`planItems`): steps 3 and 4 of steps.ts.
 */
import { mapLimit } from './batch.js';
import { ExportExpiredError, SweepError, SweepInputError } from './errors.js';
import { readErrors } from './stage.js';
import {
  getJson,
  lines,
  PartitionWriter,
  putObject,
  type StageCounts,
  type StagedPartition,
} from './staging.js';
import {
  attemptPrefix,
  fileChunkKey,
  filePrefix,
  FILES_PER_CHUNK,
  readStaged,
  recordStaged,
  stagedResult,
  type ExportFile,
  type StageFileItem,
  type SweepState,
} from './steps.js';
import type { StartResult, SweepContext } from './sweep.js';

/** `f<index>/staged.json`: what one file put where. */
export interface FileStaged {
  readonly index: number;
  readonly type: string;
  readonly lines: number;
  readonly routedUnparsed: number;
  readonly partitions: StagedPartition[];
  readonly counts: StageCounts;
}

/** A Stage map item's export file: its entry in `files/c<n>.json` (where its URL is). */
export async function exportFileOf(ctx: SweepContext, item: StageFileItem): Promise<ExportFile> {
  const chunk = await getJson<ExportFile[]>(ctx.store, fileChunkKey(ctx, item));
  const file = chunk?.[item.index % FILES_PER_CHUNK];
  if (file?.index !== item.index || file.sweepId !== item.sweepId) {
    throw new SweepInputError(
      `sweep ${item.sweepId}: no export file ${item.index} in attempt ${item.attempt}`,
    );
  }
  return file;
}

/** Every export file of an attempt (`count` of them), in manifest order. */
export async function exportFiles(
  ctx: SweepContext,
  sweepId: string,
  attempt: number,
  count: number,
): Promise<ExportFile[]> {
  const chunks: ExportFile[][] = [];
  for (let index = 0; index < count; index += FILES_PER_CHUNK) {
    chunks.push(
      (await getJson<ExportFile[]>(ctx.store, fileChunkKey(ctx, { sweepId, attempt, index }))) ?? [],
    );
  }
  return chunks.flat();
}

/**
 * Step 3, one Distributed Map item (`stageFile`: its entry read from S3 first): one export
 * file's lines routed into partition parts under
 * `attempt-N/f<index>/p<partition>/`, then `f<index>/staged.json`. A retry writes the same keys
 * (the same file gives the same parts) and plan reads only the keys staged.json names, so no
 * line counts twice. Files that expired (404/410): `ExportExpiredError`, after an
 * `expired.json` marker that plan turns into a re-kick.
 */
export async function stageFile(
  ctx: SweepContext,
  item: StageFileItem,
  onLines?: (n: number) => void,
): Promise<FileStaged> {
  return stageExportFile(ctx, await exportFileOf(ctx, item), onLines);
}

/** Step 3 with the file's entry at hand (`startSweep` read them all). */
export async function stageExportFile(
  ctx: SweepContext,
  file: ExportFile,
  onLines?: (n: number) => void,
): Promise<FileStaged> {
  const prefix = filePrefix(ctx, file);
  const writer = new PartitionWriter({
    store: ctx.store,
    prefix,
    partitions: file.partitions,
    isOwnWrite: (r) => ctx.ports.isOwnWrite(r),
    ...(ctx.ownWriteMarker ? { ownWriteMarker: ctx.ownWriteMarker } : {}),
    ...(ctx.stage?.partBytes ? { partBytes: ctx.stage.partBytes } : {}),
  });
  let n = 0;
  try {
    for await (const line of lines(await ctx.bulk.download(file.url, file.requiresAccessToken))) {
      await writer.addLine(line);
      if (++n % 5000 === 0) onLines?.(5000);
    }
  } catch (err) {
    if (err instanceof ExportExpiredError) {
      await putObject(ctx.store, `${prefix}/expired.json`, JSON.stringify({ status: err.status }));
    }
    throw err;
  }
  onLines?.(n % 5000);
  const staged: FileStaged = {
    index: file.index,
    type: file.type,
    lines: n,
    routedUnparsed: writer.routedUnparsed,
    partitions: (await writer.close()).filter((p) => p.lines > 0),
    counts: writer.counts,
  };
  await putObject(ctx.store, `${prefix}/staged.json`, JSON.stringify(staged));
  ctx.ports.logger
    .child({ sweep: file.sweepId })
    .info('export file staged', { file: file.index, type: file.type, lines: n });
  return staged;
}

function mergeCounts(into: StageCounts, from: StageCounts): void {
  for (const [type, count] of Object.entries(from.resources))
    into.resources[type] = (into.resources[type] ?? 0) + count;
  into.malformedLines += from.malformedLines;
  into.ownWrites += from.ownWrites;
  into.unlinked += from.unlinked;
}

/** The files' partitions merged: each partition's keys from every file, and the counts. */
export function mergeFiles(
  sweepId: string,
  summaries: readonly FileStaged[],
  width: number,
): { partitions: StagedPartition[]; counts: StageCounts } {
  const partitions: StagedPartition[] = Array.from({ length: width }, (_, partition) => ({
    partition,
    keys: [],
    lines: 0,
    bytes: 0,
  }));
  const counts: StageCounts = { resources: {}, malformedLines: 0, ownWrites: 0, unlinked: 0 };
  for (const s of summaries) {
    for (const p of s.partitions) {
      const into = partitions[p.partition];
      if (!into) throw new SweepError(`sweep ${sweepId}: file ${s.index} has partition ${p.partition}`);
      for (const key of p.keys) into.keys.push(key);
      into.lines += p.lines;
      into.bytes += p.bytes;
    }
    mergeCounts(counts, s.counts);
  }
  return { partitions, counts };
}

/**
 * Step 4: every file's staged.json (read a few at once), merged into the items; the manifest's
 * error files read (issue codes only); staged.json and items.json written; the sweep recorded
 * `staged`; the export cancelled (its files may go). A file that expired: `ExportExpiredError`.
 */
export async function planItems(
  ctx: SweepContext,
  state: SweepState,
): Promise<StartResult & { state: SweepState }> {
  if (state.phase !== 'exported' || !state.filesKey) {
    throw new SweepInputError(`sweep ${state.sweepId}: plan needs an exported manifest`);
  }
  const log = ctx.ports.logger.child({ sweep: state.sweepId });
  const record = await ctx.checkpoints.getSweep(state.sweepId);
  if (!record) throw new SweepInputError(`no sweep ${state.sweepId}`);
  // A retried plan after the export was cancelled: what the first one staged.
  const done = record.stagedKey ? await readStaged(ctx, state.sweepId, record.stagedKey) : undefined;
  if (done?.attempts === state.attempt) return stagedResult(ctx, state.sweepId, done, false);
  const prefix = attemptPrefix(ctx, state.sweepId, state.attempt);
  const files = await getJson<StageFileItem[]>(ctx.store, state.filesKey);
  const manifest = await getJson<Parameters<typeof readErrors>[1]>(ctx.store, `${prefix}/manifest.json`);
  if (!files || !manifest) throw new SweepError(`sweep ${state.sweepId}: the export's manifest is missing`);
  const summaries = await mapLimit(files, 8, async (f) => {
    const staged = await getJson<FileStaged>(ctx.store, `${filePrefix(ctx, f)}/staged.json`);
    if (staged) return staged;
    const expired = await getJson<{ status: number }>(ctx.store, `${filePrefix(ctx, f)}/expired.json`);
    if (expired) {
      throw new ExportExpiredError(
        `export files expired (${expired.status}) before they were read, ${state.attempt} kick-off(s); run the sweep again`,
        expired.status,
      );
    }
    throw new SweepError(`sweep ${state.sweepId}: export file ${f.index} was not staged`);
  });
  const width = files[0] ? (await exportFileOf(ctx, files[0])).partitions : 1;
  const { partitions, counts } = mergeFiles(state.sweepId, summaries, width);
  const exportErrors = await readErrors(ctx.bulk, manifest);
  for (const e of exportErrors) log.warn('export error entry', { type: e.type, count: e.count });
  if (counts.malformedLines > 0) log.warn('malformed export lines', { lines: counts.malformedLines });
  log.info('export staged', {
    lines: summaries.reduce((n, s) => n + s.lines, 0),
    routedUnparsed: summaries.reduce((n, s) => n + s.routedUnparsed, 0),
  });
  const result = await recordStaged(
    ctx,
    record,
    {
      source: 'export',
      transactionTime: manifest.transactionTime,
      ...(record.since ? { since: record.since } : {}),
      partitions,
      counts,
      exportErrors,
      poll: state.poll,
      attempts: state.attempt,
    },
    log,
  );
  if (state.statusUrl) await ctx.bulk.cancel(state.statusUrl).catch(() => undefined); // its files may go now
  return result;
}
