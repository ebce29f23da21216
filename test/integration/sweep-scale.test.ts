/**
 * The sweep's Step Functions inputs at the scale of issue 7 (10^6–10^7 patients: thousands of
 * export files, 64 partitions): a Distributed Map item's input, and every state a step
 * answers, must stay under Step Functions' 256 KiB, whatever the number of export files. The
 * part keys live in one S3 list per partition; against fauxqs S3 and dynalite.
 */
import { GetObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { silentLogger } from '../../shared/log.js';
import type { SweepRecord } from '../../shared/sweep/checkpoint.js';
import { parseSweepDefinition } from '../../shared/sweep/definition.js';
import type { StagedExport } from '../../shared/sweep/stage.js';
import { mergeFiles, type FileStaged } from '../../shared/sweep/stage-files.js';
import { beginSweep, prefixOf, recordStaged } from '../../shared/sweep/steps.js';
import type { SweepContext, SweepItem } from '../../shared/sweep/sweep.js';
import { startSweepStack, type SweepStack } from './sweep-harness.js';

/** Step Functions' limit on a state's input or output, and so on a map item. */
const STATE_LIMIT = 256 * 1024;
const FILES = 10_000;
const PARTITIONS = 64;

let stack: SweepStack;
let ctx: SweepContext;

beforeAll(async () => {
  stack = await startSweepStack({ bucket: 'sweep-scale-test', patients: 4, seed: 3, chunkSize: 100 });
  ctx = await stack.context();
});

afterAll(() => stack.stop());

const pad = (n: number, width = 4): string => String(n).padStart(width, '0');

async function readJson<T>(key: string): Promise<T> {
  const out = await stack.s3.send(new GetObjectCommand({ Bucket: stack.bucket, Key: key }));
  return JSON.parse((await out.Body?.transformToString()) ?? 'null') as T;
}

async function recordOf(sweepId: string): Promise<SweepRecord> {
  const record: SweepRecord = {
    sweepId,
    definition: parseSweepDefinition({ name: sweepId, models: ['diabetes-gbm'], since: 'full' }),
    status: 'exporting',
    startedAt: new Date().toISOString(),
  };
  await ctx.checkpoints.putSweep(record);
  return record;
}

/** What stageFile leaves for each of `files` files: one part in every partition. */
function filesStaged(sweepId: string, files: number): FileStaged[] {
  return Array.from({ length: files }, (_, index) => ({
    index,
    type: index % 2 === 0 ? 'Patient' : 'Observation',
    lines: PARTITIONS * 40,
    routedUnparsed: PARTITIONS * 40,
    counts: { resources: { Patient: PARTITIONS * 40 }, malformedLines: 0, ownWrites: 0, unlinked: 0 },
    partitions: Array.from({ length: PARTITIONS }, (_, partition) => ({
      partition,
      keys: [
        `${prefixOf(ctx, sweepId)}/attempt-1/f${pad(index)}/p${pad(partition)}/${pad(index * PARTITIONS + partition + 1, 6)}.kndjson`,
      ],
      lines: 40,
      bytes: 10_000,
    })),
  }));
}

describe('sweep items and states at 10,000 export files × 64 partitions', () => {
  it('each item names its key list: items, items.json, staged.json and the states stay far under 256 KiB', async () => {
    // Arrange
    const sweepId = 'scale-1';
    const record = await recordOf(sweepId);
    const summaries = filesStaged(sweepId, FILES);

    // Act: what Plan does after reading the files' staged.json, then a resumed Begin.
    const { partitions, counts } = mergeFiles(sweepId, summaries, PARTITIONS);
    const planned = await recordStaged(
      ctx,
      record,
      {
        source: 'export',
        transactionTime: '2026-01-01T02:00:00.000Z',
        partitions,
        counts,
        exportErrors: [],
        poll: { polls: 40, throttled: 0, serverErrors: 0, waitedMs: 1_200_000 },
        attempts: 1,
      },
      silentLogger,
    );
    const items = await readJson<SweepItem[]>(planned.itemsKey);
    const staged = await readJson<StagedExport>(`${prefixOf(ctx, sweepId)}/staged.json`);
    const resumed = await beginSweep(ctx, record.definition, { sweepId });
    const item = items.find((i) => i.partition === 12);
    const keys = await readJson<string[]>(item?.keysKey ?? '');

    // Assess
    expect(items).toHaveLength(PARTITIONS);
    expect(Math.max(...items.map((i) => JSON.stringify(i).length))).toBeLessThan(1024);
    expect(JSON.stringify(items).length).toBeLessThan(STATE_LIMIT / 16);
    expect(JSON.stringify(staged).length).toBeLessThan(STATE_LIMIT / 16);
    // The states the steps answer (Plan's, a resumed Begin's): small JSON.
    expect(JSON.stringify(planned.state).length).toBeLessThan(2048);
    expect(resumed).toMatchObject({ phase: 'staged', resumed: true, items: PARTITIONS });
    expect(JSON.stringify(resumed).length).toBeLessThan(2048);
    // The item's list holds every file's part of its partition, in file order.
    expect(item).toMatchObject({ sweepId, partition: 12, mode: 'full', lines: FILES * 40 });
    expect(keys).toEqual(summaries.map((s) => s.partitions[12]?.keys[0]));
  });

  it('resumes a sweep whose staged.json still lists each partition’s keys: the lists are written, the items small', async () => {
    // Arrange: staged.json as it was written before the key lists.
    const sweepId = 'scale-old';
    const record = await recordOf(sweepId);
    const stagedKey = `${prefixOf(ctx, sweepId)}/staged.json`;
    const old = {
      source: 'export',
      transactionTime: '2026-01-01T02:00:00.000Z',
      partitions: [
        { partition: 0, keys: ['a/p0000/000001.kndjson', 'a/p0000/000003.kndjson'], lines: 7, bytes: 700 },
        { partition: 1, keys: [], lines: 0, bytes: 0 },
      ],
      counts: { resources: { Patient: 7 }, malformedLines: 0, ownWrites: 0, unlinked: 0 },
      exportErrors: [],
      poll: { polls: 1, throttled: 0, serverErrors: 0, waitedMs: 1000 },
      attempts: 1,
    };
    await stack.s3.send(
      new PutObjectCommand({ Bucket: stack.bucket, Key: stagedKey, Body: JSON.stringify(old) }),
    );
    await ctx.checkpoints.putSweep({ ...record, status: 'staged', stagedKey });

    // Act
    const resumed = await beginSweep(ctx, record.definition, { sweepId });
    const items = await readJson<SweepItem[]>(resumed.itemsKey ?? '');
    const rewritten = await readJson<StagedExport>(stagedKey);

    // Assess
    expect(resumed).toMatchObject({ phase: 'staged', resumed: true, items: 1 });
    expect(rewritten.partitions).toEqual([
      { partition: 0, lines: 7, bytes: 700, keysKey: items[0]?.keysKey },
    ]);
    expect(await readJson<string[]>(items[0]?.keysKey ?? '')).toEqual(old.partitions[0]?.keys);
  });
});
