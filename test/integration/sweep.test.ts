/**
 * Population sweeps against the embedded stack: the FHIR server with `$export`, the
 * SageMaker-runtime endpoint server, dynalite (checkpoints) and fauxqs S3 (staging).
 */
import { spawn } from 'node:child_process';
import { mkdtemp, readdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { S3Client } from '@aws-sdk/client-s3';
import type { DiagnosticReport, Group, Observation } from '@medplum/fhirtypes';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BulkExport } from '../../local/fhir/export.js';
import { GLUCOSE_CODE, loadSyntheticCohort } from '../../local/fhir/export-cohort.js';
import type { RunningFhirServer } from '../../local/fhir/server.js';
import { ROOT } from '../../local/stack.js';
import type { SweepContextOptions } from '../../shared/sweep/context.js';
import type { SweepDefinitionInput } from '../../shared/sweep/definition.js';
import { ExportExpiredError } from '../../shared/sweep/errors.js';
import { renderSummaryHtml } from '../../shared/sweep/summary.js';
import { runSweep, type SweepContext } from '../../shared/sweep/sweep.js';
import { CREDENTIALS, startSweepStack, type SweepStack } from './sweep-harness.js';

const PATIENTS = 60;
/** Every 20th synthetic patient has no glucose: insufficient data. */
const ELIGIBLE = PATIENTS - PATIENTS / 20;
const BUCKET = 'sweep-test';

let stack: SweepStack;
let fhir: RunningFhirServer;
let bulk: BulkExport;
let ids: string[];

beforeAll(async () => {
  stack = await startSweepStack({ bucket: BUCKET, patients: PATIENTS, seed: 7, chunkSize: 200 });
  ({ fhir, bulk, ids } = stack);
});

afterAll(() => stack.stop());

function context(extra: NonNullable<SweepContextOptions['extra']> = {}): Promise<SweepContext> {
  return stack.context({ extra: { stage: { maxExportAttempts: 2 }, ...extra } });
}

const definition = (over: Partial<SweepDefinitionInput> = {}): SweepDefinitionInput => ({
  name: 'test',
  models: ['diabetes-gbm'],
  since: 'full',
  batchSize: 16,
  ...over,
});

async function reportsBySubject(): Promise<Map<string, number>> {
  const reports = await fhir.repo.searchResources<DiagnosticReport>({ resourceType: 'DiagnosticReport' });
  const counts = new Map<string, number>();
  for (const r of reports) {
    const s = r.subject?.reference ?? '';
    counts.set(s, (counts.get(s) ?? 0) + 1);
  }
  return counts;
}

describe('population sweep over $export (embedded stack)', () => {
  it('scores every eligible patient once; the summary has counts and a histogram; a re-run writes nothing', async () => {
    // Act
    const ctx = await context();
    const first = await runSweep(ctx, definition());
    const second = await runSweep(ctx, definition());

    // Assess
    expect(first.source).toBe('export');
    expect(first.patients).toMatchObject({
      processed: PATIENTS,
      written: ELIGIBLE,
      insufficientData: PATIENTS - ELIGIBLE,
      failed: 0,
    });
    expect(first.histograms['diabetes-gbm']?.n).toBe(ELIGIBLE);
    expect(first.histograms['diabetes-gbm']?.bins.reduce((a, b) => a + b, 0)).toBeGreaterThan(0);
    expect(second.patients).toMatchObject({
      processed: PATIENTS,
      written: 0,
      unchanged: ELIGIBLE,
      failed: 0,
    });
    const counts = await reportsBySubject();
    expect(counts.size).toBe(ELIGIBLE);
    expect([...counts.values()].every((n) => n === 1)).toBe(true);
    const html = renderSummaryHtml(first);
    expect(html).toContain('<svg');
    expect(html).not.toMatch(/<(script|link|img)\b/);
  });

  it("exports only the models' Observations (_typeFilter), and gives the same scores where the server refuses it", async () => {
    // Prepare: heart rates (no model reads them) for five patients.
    for (const id of ids.slice(0, 5)) {
      await fhir.repo.createResource<Observation>({
        resourceType: 'Observation',
        status: 'final',
        code: { coding: [{ system: 'http://loinc.org', code: '8867-4' }] },
        subject: { reference: `Patient/${id}` },
        valueQuantity: { value: 72, unit: '/min' },
      });
    }
    const observations = await fhir.repo.searchResources<Observation>({ resourceType: 'Observation' });
    const external = observations.filter((o) => o.meta?.tag === undefined);
    const heartRates = external.filter((o) => o.code.coding?.[0]?.code === '8867-4').length;
    const ctx = await context();

    // Act
    const filtered = await runSweep(ctx, definition({ name: 'type-filter' }));
    bulk.setFaults({ refuseTypeFilter: 1 });
    const refused = await runSweep(ctx, definition({ name: 'type-filter-refused' }));

    // Assess: the filtered export staged no heart rate; without the filter they were staged
    // (and dropped by the features), and every score was the same (conditional creates: 200).
    expect(heartRates).toBe(5);
    expect(filtered.export.resources['Observation']).toBe(external.length - heartRates);
    expect(refused.export.resources['Observation']).toBe(external.length);
    expect(refused.patients).toMatchObject({ processed: PATIENTS, written: 0, failed: 0 });
    expect(refused.patients.unchanged).toBe(filtered.patients.written + filtered.patients.unchanged);
  });

  it('several items, one after the other: the scores of one item, no sort runs left', async () => {
    // Prepare: partitions of ~100 resources (several items) and runs of 2 KB (spilled to disk).
    const dir = await mkdtemp(path.join(tmpdir(), 'sweep-items-'));
    const many = {
      ...(await context({ stage: { maxExportAttempts: 2, resourcesPerPartition: 100 }, runBytes: 2048 })),
      tmpDir: dir,
    };

    // Act
    const one = await runSweep(await context(), definition({ name: 'items-one' }));
    const split = await runSweep(many, definition({ name: 'items-many' }));

    // Assess
    expect(one.items).toBe(1);
    expect(split.items).toBeGreaterThan(2);
    expect(split.patients).toMatchObject({ processed: PATIENTS, failed: 0, written: 0 });
    expect(split.patients.unchanged).toBe(one.patients.written + one.patients.unchanged);
    expect(split.histograms['diabetes-gbm']).toEqual(one.histograms['diabetes-gbm']);
    expect(await readdir(dir)).toEqual([]);
  });

  it('a resumed sweep whose items are done reads none of them', async () => {
    // Prepare: several items, all done; then a context whose S3 client records the keys it gets.
    const many = { stage: { maxExportAttempts: 2, resourcesPerPartition: 100 }, runBytes: 2048 };
    const first = await runSweep(await context(many), definition({ name: 'items-done' }));
    const gets: string[] = [];
    const s3 = new S3Client({
      endpoint: stack.s3Endpoint,
      forcePathStyle: true,
      region: 'us-east-1',
      credentials: CREDENTIALS,
    });
    s3.middlewareStack.add(
      (next, mw) => async (args) => {
        const key = (args.input as { Key?: string }).Key;
        if (mw.commandName === 'GetObjectCommand' && key) gets.push(key);
        return next(args);
      },
      { step: 'initialize' },
    );
    const counted = { ...(await context(many)), store: { s3, bucket: BUCKET } };

    // Act
    const resumed = await runSweep(counted, definition({ name: 'items-done' }), { sweepId: first.sweepId });

    // Assess: the staged export and its items were read; no item's key list or parts.
    expect(first.items).toBeGreaterThan(2);
    expect(resumed).toMatchObject({ resumed: true, items: first.items, patients: first.patients });
    expect(gets.filter((k) => k.endsWith('/staged.json'))).not.toEqual([]);
    expect(gets.filter((k) => k.includes('/items/') || k.endsWith('.kndjson'))).toEqual([]);
  });

  it('an item that fails leaves no sorted runs on disk', async () => {
    // Prepare: several items, runs of 2 KB (spilled), and a checkpoint that cannot be stored.
    const dir = await mkdtemp(path.join(tmpdir(), 'sweep-fail-'));
    const failing = {
      ...(await context({
        stage: { maxExportAttempts: 2, resourcesPerPartition: 100 },
        runBytes: 2048,
        onCheckpoint: () => {
          throw new Error('checkpoint store down');
        },
      })),
      tmpDir: dir,
    };

    // Act
    const run = runSweep(failing, definition({ name: 'items-fail' }));

    // Assess
    await expect(run).rejects.toThrow('checkpoint store down');
    expect(await readdir(dir)).toEqual([]);
  });

  it('incremental: only the patient whose Observation changed is scored again', async () => {
    // Prepare: a baseline under this name, then one glucose value changes.
    const ctx = await context();
    const baseline = await runSweep(ctx, definition({ name: 'incremental', since: 'incremental' }));
    expect(baseline.mode).toBe('full');
    const target = ids[3] ?? '';
    const [glucose] = await fhir.repo.searchResources<Observation>({
      resourceType: 'Observation',
      filters: [
        { code: 'subject', operator: 'eq', value: `Patient/${target}` },
        { code: 'code', operator: 'eq', value: `http://loinc.org|${GLUCOSE_CODE}` },
      ],
    });
    if (!glucose) throw new Error('fixture has no glucose');
    await new Promise((r) => setTimeout(r, 5)); // lastUpdated must move past the baseline's transactionTime
    await fhir.repo.updateResource({ ...glucose, valueQuantity: { ...glucose.valueQuantity, value: 250 } });

    // Act
    const next = await runSweep(ctx, definition({ name: 'incremental', since: 'incremental' }));

    // Assess
    expect(next.mode).toBe('incremental');
    expect(next.since).toBe(baseline.transactionTime);
    expect(next.patients).toMatchObject({ processed: 1, written: 1, skippedUnchanged: PATIENTS - 1 });
    const counts = await reportsBySubject();
    expect(counts.get(`Patient/${target}`)).toBe(2); // the old inputs' report and the new one
    expect([...counts.entries()].filter(([, n]) => n > 1)).toHaveLength(1);
  });

  it('counts malformed NDJSON lines and goes on', async () => {
    bulk.setFaults({ malformedLines: 3 });
    const summary = await runSweep(await context(), definition());
    expect(summary.export.malformedLines).toBe(3);
    expect(summary.patients).toMatchObject({ processed: PATIENTS, failed: 0 });
  });

  it("reports the manifest's error entries", async () => {
    bulk.setFaults({ errorEntries: 1 });
    const summary = await runSweep(await context(), definition());
    expect(summary.export.errors).toEqual([{ type: 'OperationOutcome', codes: { processing: 1 }, count: 1 }]);
    expect(summary.patients.processed).toBe(PATIENTS);
  });

  it('honours 429 with Retry-After while polling', async () => {
    bulk.setFaults({ throttlePolls: 2, throttleRetryAfterSeconds: 1 });
    const summary = await runSweep(await context(), definition());
    expect(summary.export.throttled).toBe(2);
    expect(summary.export.waitedMs).toBeGreaterThanOrEqual(2000);
    expect(summary.patients.processed).toBe(PATIENTS);
  });

  it('kicks the export off again when its download URLs expired, and fails clearly when they keep expiring', async () => {
    bulk.setFaults({ expiredJobs: 1 });
    const kicks = bulk.kickOffs();
    const summary = await runSweep(await context(), definition());
    expect(summary.export.attempts).toBe(2);
    expect(bulk.kickOffs() - kicks).toBe(2);
    expect(summary.patients.processed).toBe(PATIENTS);

    bulk.setFaults({ expiredJobs: 2 });
    await expect(runSweep(await context(), definition())).rejects.toBeInstanceOf(ExportExpiredError);
  });

  it('falls back to paged search on a server without $export', async () => {
    bulk.setFaults({ unsupported: true });
    try {
      const summary = await runSweep(await context(), definition());
      expect(summary.source).toBe('search');
      expect(summary.patients).toMatchObject({
        processed: PATIENTS,
        unchanged: ELIGIBLE,
        written: 0,
        failed: 0,
      });
    } finally {
      bulk.setFaults({ unsupported: false });
    }
  });

  it('exports a Group: its members only', async () => {
    const group = await fhir.repo.createResource<Group>({
      resourceType: 'Group',
      type: 'person',
      actual: true,
      member: ids.slice(0, 10).map((id) => ({ entity: { reference: `Patient/${id}` } })),
    });
    const summary = await runSweep(
      await context(),
      definition({ cohort: { kind: 'group', group: group.id } }),
    );
    expect(summary.patients.processed).toBe(10);
  });

  it('resumes after kill -9: no duplicate report, no patient skipped, no second export', async () => {
    // Prepare: a fresh cohort in its own Group, and a slow model so the sweep is caught mid-way.
    const crashIds = await loadSyntheticCohort(fhir.repo, { patients: 100, seed: 11, offset: 5000 });
    const group = await fhir.repo.createResource<Group>({
      resourceType: 'Group',
      type: 'person',
      actual: true,
      member: crashIds.map((id) => ({ entity: { reference: `Patient/${id}` } })),
    });
    stack.sagemaker.setFault('diabetes-gbm', { latencyMs: 250 });
    const args = [
      '--import',
      'tsx',
      path.join(ROOT, 'local', 'sweep-cli.ts'),
      '--fhir',
      fhir.baseUrl,
      '--group',
      group.id,
      '--models',
      'diabetes-gbm',
      '--since',
      'full',
      '--batch-size',
      '10',
      '--sweep-id',
      'crash-test',
      '--sagemaker-endpoint',
      stack.sagemaker.url,
      '--dynamodb-endpoint',
      stack.dynamoEndpoint,
      '--s3-endpoint',
      stack.s3Endpoint,
      '--bucket',
      BUCKET,
      '--out',
      path.join(tmpdir(), 'sweep-crash-test'),
      '--log-level',
      'info',
      '--quiet',
    ];
    const kicks = bulk.kickOffs();

    // Act 1: kill -9 right after the first checkpoint.
    const killed = await new Promise<{ signal: string | null; checkpoints: number }>((resolve, reject) => {
      const child = spawn(process.execPath, args, { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'] });
      let checkpoints = 0;
      let buffer = '';
      child.stderr.on('data', (chunk: Buffer) => {
        buffer += chunk.toString('utf8');
        const lines = buffer.split('\n');
        buffer = lines.pop() ?? '';
        for (const line of lines) {
          if (line.includes('"sweep checkpoint"') && ++checkpoints === 1) child.kill('SIGKILL');
        }
      });
      child.on('error', reject);
      child.on('exit', (_code, signal: string | null) => {
        resolve({ signal, checkpoints });
      });
    });
    stack.sagemaker.setFault('diabetes-gbm', undefined);
    const between = await reportsBySubject();
    const writtenBefore = crashIds.filter((id) => between.has(`Patient/${id}`)).length;

    // Act 2: the same command again.
    const code = await new Promise<number | null>((resolve, reject) => {
      const child = spawn(process.execPath, args, { cwd: ROOT, stdio: 'ignore' });
      child.on('error', reject);
      child.on('exit', resolve);
    });

    // Assess
    expect(killed.signal).toBe('SIGKILL');
    expect(killed.checkpoints).toBeGreaterThanOrEqual(1);
    expect(writtenBefore).toBeGreaterThan(0);
    expect(writtenBefore).toBeLessThan(95);
    expect(code).toBe(0);
    expect(bulk.kickOffs() - kicks).toBe(1); // the resumed run streamed the staged export from S3
    const after = await reportsBySubject();
    const eligible = crashIds.filter((_, i) => i % 20 !== 19 - (5000 % 20));
    for (const id of crashIds) expect(after.get(`Patient/${id}`) ?? 0).toBeLessThanOrEqual(1);
    expect(crashIds.filter((id) => after.get(`Patient/${id}`) === 1)).toHaveLength(eligible.length);
  });
});
