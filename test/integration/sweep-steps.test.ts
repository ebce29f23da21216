/**
 * The sweep driven step by step, the way the state machine drives it (infra/constructs/sweep.ts):
 * each step a call of its Lambda entry point (zod-parsed event, JSON in and out), the export polled
 * in a loop, its files staged one call each — in a shuffled order, one of them twice — then
 * plan, every item, finish; against the embedded stack (FHIR server with `$export`, endpoint
 * server, dynalite, fauxqs S3), compared with `runSweep` in one process.
 */
import { GetObjectCommand } from '@aws-sdk/client-s3';
import type { DiagnosticReport } from '@medplum/fhirtypes';
import type { Context } from 'aws-lambda';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPopulationSweepHandlers } from '../../functions/population-sweep/handler.js';
import { installBulkExport, type BulkExport } from '../../local/fhir/export.js';
import { startFhirServer, type RunningFhirServer } from '../../local/fhir/server.js';
import { silentLogger } from '../../shared/log.js';
import type { SweepDefinitionInput } from '../../shared/sweep/definition.js';
import { ExportExpiredError, ExportTimeoutError } from '../../shared/sweep/errors.js';
import { DEFAULT_MIN_POLL_SECONDS, type StageFileItem, type SweepState } from '../../shared/sweep/steps.js';
import type { SweepSummary } from '../../shared/sweep/summary.js';
import { runSweep, type SweepContext, type SweepItem } from '../../shared/sweep/sweep.js';
import { startSweepStack, type SweepStack } from './sweep-harness.js';

const PATIENTS = 60;
/** Every 20th synthetic patient has no glucose: insufficient data. */
const ELIGIBLE = PATIENTS - PATIENTS / 20;
const LAMBDA = { awsRequestId: 'req-1', functionName: 'population-sweep' } as Context;

let stack: SweepStack;
let fhir: RunningFhirServer;
let bulk: BulkExport;

beforeAll(async () => {
  // 100 resources per file: several files of each type, so staging has files to fan out over.
  stack = await startSweepStack({ bucket: 'sweep-steps-test', patients: PATIENTS, seed: 5, chunkSize: 100 });
  ({ fhir, bulk } = stack);
});

afterAll(() => stack.stop());

function context(fhirBaseUrl = fhir.baseUrl, exportMaxWaitMs?: number): Promise<SweepContext> {
  return stack.context({ fhirBaseUrl, ...(exportMaxWaitMs ? { exportMaxWaitMs } : {}) });
}

const definition = (name: string): SweepDefinitionInput => ({
  name,
  models: ['diabetes-gbm'],
  since: 'full',
  batchSize: 16,
});

/**
 * Step Functions hands each Lambda JSON: nothing but what survives a round trip, untyped until
 * the entry point's zod schema parses it.
 */
const json = (value: unknown): never => JSON.parse(JSON.stringify(value)) as never;

/** What a Distributed Map's ItemReader reads: a JSON array in S3. */
async function readList<T>(bucket: string, key: string): Promise<T[]> {
  const out = await stack.s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
  return JSON.parse((await out.Body?.transformToString()) ?? '[]') as T[];
}

type Handlers = ReturnType<typeof createPopulationSweepHandlers>;

/**
 * Begin, then the Wait/Choice loop: poll (after the wait it asks for) until the phase changes.
 * The loop's floor is 1 s here (the deployed default, 30 s, is tested without waiting).
 */
async function beginAndPoll(h: Handlers, name: string, sweepId: string, attempt = 1): Promise<SweepState> {
  let state = await h.startHandler(
    json({ definition: definition(name), sweepId, attempt, minPollSeconds: 1 }),
    LAMBDA,
  );
  while (state.phase === 'exporting') {
    expect(Number.isInteger(state.waitSeconds) && (state.waitSeconds ?? 0) >= 1).toBe(true);
    await new Promise((r) => setTimeout(r, state.waitMs ?? 0));
    state = await h.pollHandler(json(state), LAMBDA);
  }
  return state;
}

/** The Stage map (the files in `order`), Plan, the Items map, Finish. */
async function stageAndRun(
  h: Handlers,
  exported: SweepState,
  order: (files: StageFileItem[]) => StageFileItem[],
): Promise<{ summary: SweepSummary; staged: SweepState; items: SweepItem[] }> {
  const files = await readList<StageFileItem>(exported.bucket, exported.filesKey ?? '');
  for (const f of order(files)) await h.stageFileHandler(json(f), LAMBDA);
  const staged = await h.planHandler(json(exported), LAMBDA);
  const items = await readList<SweepItem>(staged.bucket, staged.itemsKey ?? '');
  for (const item of items) await h.itemHandler(json(item), LAMBDA);
  const summary = await h.finishHandler(json({ sweepId: staged.sweepId }), LAMBDA);
  return { summary, staged, items };
}

async function reportsBySubject(): Promise<Map<string, number>> {
  const reports = await fhir.repo.searchResources<DiagnosticReport>({ resourceType: 'DiagnosticReport' });
  const counts = new Map<string, number>();
  for (const r of reports)
    counts.set(r.subject?.reference ?? '', (counts.get(r.subject?.reference ?? '') ?? 0) + 1);
  return counts;
}

describe('population sweep, step by step as the state machine runs it (embedded stack)', () => {
  it('stages files in any order, one twice, and scores as runSweep does: the same reports, counts and scores', async () => {
    // Arrange
    const ctx = await context();
    const h = createPopulationSweepHandlers(silentLogger, () => Promise.resolve(ctx));

    // Act: the steps (files staged last-first, the first one again at the end: a retried item).
    const exported = await beginAndPoll(h, 'steps', 'steps-1');
    const stepped = await stageAndRun(h, exported, (files) => [
      ...files.reverse(),
      files[files.length - 1] as StageFileItem,
    ]);
    // A retried Plan (the export is cancelled by now) answers what the first one staged.
    const replanned = await h.planHandler(json(exported), LAMBDA);
    // Then the same cohort in one process: it finds every report the steps wrote.
    const inProcess = await runSweep(await context(), definition('in-process'));

    // Assess
    expect(exported.phase).toBe('exported');
    expect(exported.files).toBeGreaterThan(2);
    // The maps' items are a few small fields: no download URL (a bearer URL, often) in the
    // Stage items, no part keys in the Items items (their lists are in S3).
    const listed = await readList<object>(exported.bucket, exported.filesKey ?? '');
    expect(listed).toHaveLength(exported.files ?? 0);
    for (const f of listed) expect(Object.keys(f).sort()).toEqual(['attempt', 'index', 'sweepId']);
    expect(JSON.stringify(listed)).not.toContain('://');
    for (const i of stepped.items)
      expect(Object.keys(i).sort()).toEqual(['keysKey', 'lines', 'mode', 'partition', 'sweepId']);
    expect(stepped.staged).toMatchObject({ phase: 'staged', attempt: 1, mode: 'full', resumed: false });
    expect(replanned).toEqual(stepped.staged);
    const { summary } = stepped;
    expect(summary.patients).toMatchObject({
      processed: PATIENTS,
      written: ELIGIBLE,
      insufficientData: PATIENTS - ELIGIBLE,
      failed: 0,
    });
    expect(inProcess.patients).toMatchObject({
      processed: PATIENTS,
      written: 0,
      unchanged: ELIGIBLE,
      failed: 0,
    });
    // The file staged twice counted once: the same resources, lines and scores as in one process.
    expect(summary.export.resources).toEqual(inProcess.export.resources);
    expect(stepped.items.reduce((n, i) => n + i.lines, 0)).toBe(
      Object.values(inProcess.export.resources).reduce((n, c) => n + c, 0),
    );
    expect(summary.histograms).toEqual(inProcess.histograms);
    const counts = await reportsBySubject();
    expect(counts.size).toBe(ELIGIBLE);
    expect([...counts.values()].every((n) => n === 1)).toBe(true);
  });

  it('scores an item of the release before key lists (part keys inline), so executions in flight at a deploy finish', async () => {
    // Arrange: a sweep staged by the steps; its items rewritten as the earlier release passed
    // them (`keys` inline, no `keysKey`); and an item naming both or neither, refused.
    const ctx = await context();
    const h = createPopulationSweepHandlers(silentLogger, () => Promise.resolve(ctx));
    const exported = await beginAndPoll(h, 'legacy-items', 'legacy-1');
    const files = await readList<StageFileItem>(exported.bucket, exported.filesKey ?? '');
    for (const f of files) await h.stageFileHandler(json(f), LAMBDA);
    const staged = await h.planHandler(json(exported), LAMBDA);
    const items = await readList<SweepItem>(staged.bucket, staged.itemsKey ?? '');
    const legacy = await Promise.all(
      items.map(async ({ keysKey, ...rest }) => ({
        ...rest,
        keys: await readList<string>(staged.bucket, keysKey),
      })),
    );

    // Act
    for (const item of legacy) await h.itemHandler(json(item), LAMBDA);
    const summary = await h.finishHandler(json({ sweepId: staged.sweepId }), LAMBDA);
    const both = h.itemHandler(json({ ...legacy[0], keysKey: items[0]?.keysKey }), LAMBDA);
    const neither = h.itemHandler(json({ ...items[0], keysKey: undefined }), LAMBDA);

    // Assess
    expect(legacy.length).toBeGreaterThan(0);
    expect(legacy.every((i) => i.keys.length > 0)).toBe(true);
    expect(summary.patients).toMatchObject({ processed: PATIENTS, failed: 0 });
    expect(summary.patients.written + summary.patients.unchanged).toBe(ELIGIBLE);
    await expect(both).rejects.toThrow(/keysKey/);
    await expect(neither).rejects.toThrow(/keysKey/);
  });

  it('a poll while the export runs answers the wait Retry-After asks for (429 here), in whole seconds', async () => {
    const h = createPopulationSweepHandlers(silentLogger, context);
    bulk.setFaults({ throttlePolls: 1, throttleRetryAfterSeconds: 3 });
    const begun = await h.startHandler(
      json({ definition: definition('throttled'), sweepId: 'throttled-1', minPollSeconds: 1 }),
      LAMBDA,
    );
    const polled = await h.pollHandler(json(begun), LAMBDA);
    // The first Wait (the floor) counts towards the bound too.
    expect(begun).toMatchObject({
      phase: 'exporting',
      attempt: 1,
      waitSeconds: 1,
      poll: { polls: 0, waitedMs: 1000 },
    });
    expect(polled).toMatchObject({
      phase: 'exporting',
      statusUrl: begun.statusUrl,
      waitMs: 3000,
      waitSeconds: 3,
      poll: { polls: 1, throttled: 1, waitedMs: 4000 },
    });
    // The export goes on from there.
    const next = await h.pollHandler(json(polled), LAMBDA);
    expect(['exporting', 'exported']).toContain(next.phase);
  });

  it("the loop's Wait takes whole seconds, at least its floor (30 s by default), and that wait is what counts", async () => {
    // Arrange: 429s asking for no wait at all (the client's own floor is 100 ms).
    const h = createPopulationSweepHandlers(silentLogger, context);
    bulk.setFaults({ throttlePolls: 2, throttleRetryAfterSeconds: 0 });

    // Act: a floor of 1 s, then the deployed default.
    const short = await h.startHandler(
      json({ definition: definition('floor-1'), sweepId: 'floor-1', minPollSeconds: 1 }),
      LAMBDA,
    );
    const shortPolled = await h.pollHandler(json(short), LAMBDA);
    const deployed = await h.startHandler(
      json({ definition: definition('floor-30'), sweepId: 'floor-30' }),
      LAMBDA,
    );
    const deployedPolled = await h.pollHandler(json(deployed), LAMBDA);

    // Assess: what the Wait state takes (1 s, not 100 ms), counted as such.
    expect(shortPolled).toMatchObject({ waitMs: 1000, waitSeconds: 1, poll: { polls: 1, waitedMs: 2000 } });
    expect(deployed).toMatchObject({
      minPollSeconds: DEFAULT_MIN_POLL_SECONDS,
      waitSeconds: DEFAULT_MIN_POLL_SECONDS,
      poll: { waitedMs: DEFAULT_MIN_POLL_SECONDS * 1000 },
    });
    expect(deployedPolled).toMatchObject({
      waitMs: DEFAULT_MIN_POLL_SECONDS * 1000,
      waitSeconds: DEFAULT_MIN_POLL_SECONDS,
      poll: { polls: 1, waitedMs: 2 * DEFAULT_MIN_POLL_SECONDS * 1000 },
    });
  });

  it('bounds the number of polls: past maxPolls, ExportTimeoutError (the history stays small)', async () => {
    const h = createPopulationSweepHandlers(silentLogger, context);
    bulk.setFaults({ throttlePolls: 3, throttleRetryAfterSeconds: 0 });
    let state = await h.startHandler(
      json({ definition: definition('polls'), sweepId: 'polls-1', minPollSeconds: 1, maxPolls: 3 }),
      LAMBDA,
    );
    state = await h.pollHandler(json(state), LAMBDA);
    state = await h.pollHandler(json(state), LAMBDA);
    expect(state).toMatchObject({ phase: 'exporting', maxPolls: 3, poll: { polls: 2 } });
    await expect(h.pollHandler(json(state), LAMBDA)).rejects.toThrow(
      new ExportTimeoutError('export not complete after 3 polls (bound 3)'),
    );
  });

  it('a 202 with Retry-After gives that wait', async () => {
    const slow = await startFhirServer({ port: 0 });
    const slowBulk = installBulkExport(slow, { retryAfterSeconds: 2, startDelayMs: 5_000 });
    try {
      const h = createPopulationSweepHandlers(silentLogger, () => context(slow.baseUrl));
      const begun = await h.startHandler(
        json({ definition: definition('slow'), sweepId: 'slow-1', minPollSeconds: 1 }),
        LAMBDA,
      );
      const polled = await h.pollHandler(json(begun), LAMBDA);
      expect(polled).toMatchObject({ phase: 'exporting', waitSeconds: 2, poll: { polls: 1, throttled: 0 } });
    } finally {
      await slowBulk.close();
      await slow.close();
    }
  });

  it('bounds the total wait across polls: the state carries it', async () => {
    const h = createPopulationSweepHandlers(silentLogger, () => context(fhir.baseUrl, 5_000));
    bulk.setFaults({ throttlePolls: 2, throttleRetryAfterSeconds: 3 });
    const begun = await h.startHandler(
      json({ definition: definition('bounded'), sweepId: 'bounded-1', minPollSeconds: 1 }),
      LAMBDA,
    );
    const first = await h.pollHandler(json(begun), LAMBDA);
    expect(first.poll.waitedMs).toBe(1000 + 3000);
    // 3 s more would pass the 5 s bound.
    await expect(h.pollHandler(json(first), LAMBDA)).rejects.toBeInstanceOf(ExportTimeoutError);
  });

  it('expired files: stageFile throws ExportExpiredError, plan too; a re-kick (attempt 2) completes the sweep', async () => {
    // Arrange
    const ctx = await context();
    const h = createPopulationSweepHandlers(silentLogger, () => Promise.resolve(ctx));
    bulk.setFaults({ expiredJobs: 1 });
    const kicks = bulk.kickOffs();

    // Act
    const exported = await beginAndPoll(h, 'expired', 'expired-1');
    const files = await readList<StageFileItem>(exported.bucket, exported.filesKey ?? '');
    const staging = await Promise.allSettled(files.map((f) => h.stageFileHandler(json(f), LAMBDA)));
    const planned = h.planHandler(json(exported), LAMBDA);
    await expect(planned).rejects.toBeInstanceOf(ExportExpiredError);
    // What the Rekick state sends Begin: attempt + 1, the polls so far.
    const again = await h.startHandler(
      json({
        definition: definition('expired'),
        sweepId: 'expired-1',
        attempt: 2,
        poll: exported.poll,
        minPollSeconds: 1,
      }),
      LAMBDA,
    );
    let state = again;
    while (state.phase === 'exporting') state = await h.pollHandler(json(state), LAMBDA);
    const { summary } = await stageAndRun(h, state, (fs) => fs);

    // Assess
    expect(staging.every((s) => s.status === 'rejected' && s.reason instanceof ExportExpiredError)).toBe(
      true,
    );
    expect(bulk.kickOffs() - kicks).toBe(2);
    expect(again.poll.polls).toBe(exported.poll.polls);
    expect(summary.export.attempts).toBe(2);
    expect(summary.export.polls).toBeGreaterThan(exported.poll.polls);
    expect(summary.patients).toMatchObject({ processed: PATIENTS, failed: 0 });
  });
  it('a retried Begin polls the export its first call kicked off; a job the server no longer has is kicked off anew', async () => {
    // Arrange
    const ctx = await context();
    const h = createPopulationSweepHandlers(silentLogger, () => Promise.resolve(ctx));
    const input = json({
      definition: definition('retried'),
      sweepId: 'retried-1',
      attempt: 1,
      minPollSeconds: 1,
    });
    const gone = json({
      definition: definition('retried'),
      sweepId: 'retried-2',
      attempt: 1,
      minPollSeconds: 1,
    });
    const kicks = bulk.kickOffs();

    // Act: Begin called twice with the same input (Step Functions retrying a call that failed after
    // the kick-off), then the sweep as the state machine runs it.
    const first = await h.startHandler(input, LAMBDA);
    const retried = await h.startHandler(input, LAMBDA);
    const kicksAfterRetry = bulk.kickOffs() - kicks;
    let state = retried;
    while (state.phase === 'exporting') state = await h.pollHandler(json(state), LAMBDA);
    const { summary } = await stageAndRun(h, state, (fs) => fs);
    // A job cancelled on the server before the retry: a new kick-off.
    const before = await h.startHandler(gone, LAMBDA);
    await ctx.bulk.cancel(before.statusUrl ?? '');
    const after = await h.startHandler(gone, LAMBDA);

    // Assess
    expect(kicksAfterRetry).toBe(1);
    expect(retried.statusUrl).toBe(first.statusUrl);
    expect(summary.export.attempts).toBe(1);
    // Earlier tests scored these patients: their reports are found, not written again.
    expect(summary.patients).toMatchObject({
      processed: PATIENTS,
      written: 0,
      unchanged: ELIGIBLE,
      failed: 0,
    });
    expect(after.statusUrl).not.toBe(before.statusUrl);
    expect(bulk.kickOffs() - kicks).toBe(3);
  });
});
