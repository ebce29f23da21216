/**
 * The staged export as the steps record it: the S3 layout under a sweep's prefix, each
 * partition's key list (`items/p<n>.json`), staged.json, items.json (the Items map's small
 * items) and the `staged` state the steps answer.
 */
import type { Logger } from '../log.js';
import { mapLimit } from './batch.js';
import type { SweepRecord } from './checkpoint.js';
import type { PartitionSummary, StagedExport, StagedParts } from './stage.js';
import { getJson, putObject, type StagedPartition } from './staging.js';
import type { SweepState } from './steps.js';
import type { StartResult, SweepContext, SweepItem } from './sweep.js';

export const prefixOf = (ctx: SweepContext, sweepId: string): string =>
  `${ctx.prefix ?? 'sweeps'}/${sweepId}`;
export const attemptPrefix = (ctx: SweepContext, sweepId: string, attempt: number): string =>
  `${prefixOf(ctx, sweepId)}/attempt-${attempt}`;

/** A partition's part keys (a JSON array), which its item names (`SweepItem.keysKey`). */
export const keysKeyOf = (ctx: SweepContext, sweepId: string, attempt: number, partition: number): string =>
  `${attemptPrefix(ctx, sweepId, attempt)}/items/p${String(partition).padStart(4, '0')}.json`;
const modeOf = (staged: StagedExport): 'full' | 'incremental' => (staged.since ? 'incremental' : 'full');

/** The Items map's items: a few fields each, whatever the number of export files. */
export function itemsOf(sweepId: string, staged: StagedExport): SweepItem[] {
  const mode = modeOf(staged);
  return staged.partitions
    .filter((p) => p.lines > 0)
    .map((p) => ({ sweepId, partition: p.partition, keysKey: p.keysKey, mode, lines: p.lines }));
}

/** Each non-empty partition's key list written to S3 (`keysKeyOf`); what staged.json holds of it. */
export async function writeKeyLists(
  ctx: SweepContext,
  sweepId: string,
  attempt: number,
  partitions: readonly StagedPartition[],
): Promise<PartitionSummary[]> {
  return mapLimit(
    partitions.filter((p) => p.lines > 0),
    8,
    async (p) => {
      const keysKey = keysKeyOf(ctx, sweepId, attempt, p.partition);
      await putObject(ctx.store, keysKey, JSON.stringify(p.keys));
      return { partition: p.partition, lines: p.lines, bytes: p.bytes, keysKey };
    },
  );
}

/**
 * A staged.json as read back: one written before the key lists (each partition's keys inline)
 * gets its lists written, and it and items.json are rewritten, so a sweep staged by an earlier
 * version resumes.
 */
export async function readStaged(
  ctx: SweepContext,
  sweepId: string,
  key: string,
): Promise<StagedExport | undefined> {
  const staged = await getJson<StagedExport | StagedParts>(ctx.store, key);
  if (!staged || staged.partitions.every((p) => 'keysKey' in p)) return staged as StagedExport | undefined;
  const parts = staged as StagedParts;
  const upgraded: StagedExport = {
    ...parts,
    partitions: await writeKeyLists(ctx, sweepId, parts.attempts, parts.partitions),
  };
  await putObject(ctx.store, key, JSON.stringify(upgraded));
  await putObject(
    ctx.store,
    `${prefixOf(ctx, sweepId)}/items.json`,
    JSON.stringify(itemsOf(sweepId, upgraded)),
  );
  return upgraded;
}

/** The key lists, staged.json, items.json, then the record `staged` with the export's transactionTime. */
export async function recordStaged(
  ctx: SweepContext,
  record: SweepRecord,
  parts: StagedParts,
  log: Logger,
): Promise<StartResult & { state: SweepState }> {
  const prefix = prefixOf(ctx, record.sweepId);
  const stagedKey = `${prefix}/staged.json`;
  const itemsKey = `${prefix}/items.json`;
  const staged: StagedExport = {
    ...parts,
    partitions: await writeKeyLists(ctx, record.sweepId, parts.attempts, parts.partitions),
  };
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
