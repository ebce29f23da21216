/**
 * Population-sweep benchmark, all figures in one run:
 * - N synthetic patients (default 100,000; diabetes-gbm inputs resampled from the held-out
 *   rows with seeded noise) loaded straight into the embedded FHIR server's repository;
 * - the ceiling: the same `$export` read alone (kick-off, poll, download, parse every line),
 *   read twice (right after loading, and after the N/10 sweep): the faster reading counts;
 * - the sweep: patients per second, and its share of the ceiling (target ≥ 25%);
 * - peak RSS of the sweep process at N/10 (a Group of the first N/10 patients) and at N
 *   (target: ≤ 1.2×); each sweep runs in a child process (the FHIR, endpoint and DynamoDB
 *   servers stay in this one, S3 runs in a process of its own, bench/sweep-s3.ts) started
 *   with the flags Lambda's bootstrap gives the item worker for its memory, and
 *   reports `process.resourceUsage().maxRSS`, with sampled peaks by kind (heap, external) and,
 *   under `BENCH_SWEEP_NODE_ARGS=--trace-gc`, the largest heap left after a full GC (what the
 *   process held, apart from what V8 had not collected yet);
 * - the N/10 sweep's reports are deleted before the timed sweep, which so writes every report;
 * - a second run with nothing changed (incremental `_since`), against the first (target ≤ 10%);
 * - the sweep's phases (export + staging, items, summary) in its own wall time.
 *
 * `npx tsx bench/sweep.ts [patients]`, or `benchSweep({ patients })` from the bench runner.
 */
import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { constants, PerformanceObserver } from 'node:perf_hooks';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { createBulkClient } from '../shared/sweep/bulk-client.js';
import { SWEEP_ITEM_MEMORY_MB } from '../shared/sweep/config.js';
import { lambdaNodeFlags } from '../shared/sweep/heap.js';
import { lines } from '../shared/sweep/staging.js';
import { machineInfo } from './machine.js';
import { FHIR_SERVER_NODE_FLAGS, startFhirProcess } from './sweep-fhir.js';
import { startS3Process } from './sweep-s3.js';

// The servers' modules (FHIR router, endpoint server, dynalite, fauxqs) are imported by the
// parent alone, in `benchSweep`: a sweep child holds what the Lambda item worker holds.
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

interface ChildResult {
  readonly ms: number;
  /** The child's CPU time (user + system), all threads. */
  readonly cpuMs: number;
  /** This process's (the servers') CPU time while the child ran. */
  serversCpuMs?: number;
  readonly maxRssMb: number;
  readonly patients: number;
  readonly written: number;
  readonly unchanged: number;
  readonly mode: string;
  readonly [key: string]: unknown;
}

/**
 * Node flags of each child: those Lambda's bootstrap starts the sweep item worker with for its
 * memory (`lambdaNodeFlags`: heap sizes, `--expose-gc`), then BENCH_SWEEP_NODE_ARGS, the sweep
 * process alone (e.g. `--cpu-prof --cpu-prof-dir=/tmp/prof`, or `--trace-gc`: what it prints
 * goes to stderr). BENCH_SWEEP_COLLECT=off drops `--expose-gc`: no collection between batches.
 */
const COLLECT = process.env.BENCH_SWEEP_COLLECT !== 'off';
const CHILD_NODE_FLAGS = [
  ...lambdaNodeFlags(SWEEP_ITEM_MEMORY_MB).filter((f) => COLLECT || f !== '--expose-gc'),
  ...(process.env.BENCH_SWEEP_NODE_ARGS?.split(' ').filter(Boolean) ?? []),
];

/**
 * Report transactions in flight: the product's default (SWEEP_WRITE_CONCURRENCY in AWS, the CLI's
 * `--write-concurrency`), 8. The embedded FHIR server runs one transaction at a time; with a few
 * waiting in it, it goes from one to the next without waiting on the sweep. Measured at 100,000
 * patients, one run each, load ≈ 2: items phase 41.1 s with 2 in flight, 39.4 s with 4, 36.5 and
 * 35.4 s with 8, 33.7 s with 16. BENCH_SWEEP_WRITE_CONCURRENCY overrides it.
 */
const WRITE_CONCURRENCY = Number(process.env.BENCH_SWEEP_WRITE_CONCURRENCY ?? 8);

const cpuMs = (u: NodeJS.CpuUsage): number => Math.round((u.user + u.system) / 1000);

/**
 * Runs one sweep (or the read-only ceiling) in a child process; its last stdout line is JSON.
 * CPU time is counted on both sides (the child's, and this process's servers' while it ran):
 * on a shared machine it moves less than wall time does.
 */
async function child(args: Record<string, string>, s3CpuMs: () => number): Promise<ChildResult> {
  const before = process.cpuUsage();
  const s3Before = s3CpuMs();
  const result = await runChild(args);
  result.serversCpuMs = cpuMs(process.cpuUsage(before)) + s3CpuMs() - s3Before;
  return result;
}

function runChild(args: Record<string, string>): Promise<ChildResult> {
  return new Promise((resolve, reject) => {
    const p = spawn(
      process.execPath,
      [
        ...CHILD_NODE_FLAGS,
        '--import',
        'tsx',
        path.join(ROOT, 'bench', 'sweep.ts'),
        '--child',
        JSON.stringify(args),
      ],
      {
        cwd: ROOT,
        stdio: ['ignore', 'pipe', 'inherit'],
      },
    );
    let out = '';
    p.stdout.on('data', (c: Buffer) => (out += c.toString('utf8')));
    p.on('error', reject);
    p.on('exit', (code) => {
      const all = out.trim().split('\n');
      const last = all.pop() ?? '';
      // With `--trace-gc`: the largest heap left after a full GC, what the process really held.
      const live = all
        .map((l) => /Mark-Compact [\d.]+ \([\d.]+\) -> ([\d.]+)/.exec(l)?.[1])
        .filter((v): v is string => v !== undefined)
        .map(Number);
      // BENCH_SWEEP_CHILD_LOG=<dir>: each child's GC trace kept whole, one file per run (timelines).
      const logDir = process.env.BENCH_SWEEP_CHILD_LOG;
      if (logDir) writeFileSync(path.join(logDir, `${args.name ?? args.mode ?? 'child'}-${p.pid}.log`), out);
      const others = all.filter((l) => !l.includes('Mark-Compact') && !l.includes('Scavenge'));
      if (others.length > 0) process.stderr.write(others.join('\n') + '\n');
      if (code !== 0) reject(new Error(`bench child exited ${code}: ${last}`));
      else {
        const result = JSON.parse(last) as ChildResult;
        resolve(live.length > 0 ? { ...result, liveHeapAfterGcMb: Math.max(...live) } : result);
      }
    });
  });
}

/** Peaks of the child's memory by kind (MB), sampled every 250 ms (memoryUsage() costs ~1 ms): what the RSS is made of. */
function sampleMemory(): () => Record<string, number> {
  const peak = { rss: 0, heapTotal: 0, heapUsed: 0, external: 0, arrayBuffers: 0 };
  const sample = (): void => {
    const m = process.memoryUsage();
    for (const k of Object.keys(peak) as (keyof typeof peak)[]) peak[k] = Math.max(peak[k], m[k] / 2 ** 20);
  };
  const timer = setInterval(sample, 250);
  timer.unref();
  return () => {
    sample();
    clearInterval(timer);
    return Object.fromEntries(Object.entries(peak).map(([k, v]) => [k, Math.round(v)]));
  };
}

/** The child's full (mark-compact) collections: all, and those the sweep forced between batches. */
function observeGc(): () => Record<string, number> {
  const n = { major: 0, majorMs: 0, forced: 0, forcedMs: 0 };
  const observer = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      const { kind, flags } = (e as unknown as { detail: { kind: number; flags: number } }).detail;
      if (kind !== constants.NODE_PERFORMANCE_GC_MAJOR) continue;
      n.major++;
      n.majorMs += e.duration;
      if (flags & constants.NODE_PERFORMANCE_GC_FLAGS_FORCED) {
        n.forced++;
        n.forcedMs += e.duration;
      }
    }
  });
  observer.observe({ entryTypes: ['gc'] });
  return () => {
    observer.disconnect();
    return Object.fromEntries(Object.entries(n).map(([k, v]) => [k, Math.round(v)]));
  };
}

async function childMain(args: Record<string, string>): Promise<void> {
  const started = Date.now();
  const memory = sampleMemory();
  const gcs = observeGc();
  const base = args.fhir ?? '';
  if (args.mode === 'ceiling') {
    // The export read alone: kick-off, poll, download and parse every line (no staging, no scoring).
    const bulk = createBulkClient({ baseUrl: base, minPollMs: 50 });
    // The sweep's own kick-off: the same `_typeFilter` (Observations of the model's codes).
    const typeFilters = JSON.parse(args.typeFilters ?? '[]') as string[];
    const status = await bulk.kickOff({ level: 'patient', types: ['Patient', 'Observation'], typeFilters });
    const manifest = await bulk.waitForManifest(status);
    let resources = 0;
    let patients = 0;
    for (const o of manifest.output) {
      for await (const line of lines(await bulk.download(o.url, false))) {
        const r = JSON.parse(line) as { resourceType: string };
        resources++;
        if (r.resourceType === 'Patient') patients++;
      }
    }
    await bulk.cancel(status);
    const ms = Date.now() - started;
    process.stdout.write(
      JSON.stringify({
        ms,
        maxRssMb: process.resourceUsage().maxRSS / 1024,
        cpuMs: cpuMs(process.cpuUsage()),
        patients,
        resources,
        memoryPeaksMb: memory(),
        written: 0,
        unchanged: 0,
        mode: 'ceiling',
      }) + '\n',
    );
    return;
  }
  const { sweepCommand } = await import('../local/sweep-cli.js');
  const out = path.join(tmpdir(), `bench-sweep-${process.pid}`);
  const code = await sweepCommand([
    '--fhir',
    base,
    '--models',
    'diabetes-gbm',
    ...(args.modelsDir ? ['--models-dir', args.modelsDir] : []),
    '--since',
    args.since ?? 'full',
    '--name',
    args.name ?? 'bench',
    ...(args.group ? ['--group', args.group] : []),
    '--batch-size',
    args.batchSize ?? '1000',
    '--write-concurrency',
    String(WRITE_CONCURRENCY),
    '--sagemaker-endpoint',
    args.sagemaker ?? '',
    '--dynamodb-endpoint',
    args.dynamodb ?? '',
    '--s3-endpoint',
    args.s3 ?? '',
    '--bucket',
    'bench',
    '--out',
    out,
    '--quiet',
    '--log-level',
    'error',
  ]);
  if (code !== 0) throw new Error(`sweep exited ${code}`);
  const { readFile } = await import('node:fs/promises');
  const summary = JSON.parse(await readFile(path.join(out, 'summary.json'), 'utf8')) as {
    mode: string;
    patients: { processed: number; written: number; unchanged: number; skippedUnchanged: number };
    phasesMs?: Record<string, number>;
  };
  process.stdout.write(
    JSON.stringify({
      ms: Date.now() - started,
      maxRssMb: process.resourceUsage().maxRSS / 1024,
      cpuMs: cpuMs(process.cpuUsage()),
      patients: summary.patients.processed,
      written: summary.patients.written,
      unchanged: summary.patients.unchanged,
      skipped: summary.patients.skippedUnchanged,
      mode: summary.mode,
      phasesMs: summary.phasesMs,
      memoryPeaksMb: memory(),
      fullGcs: gcs(),
    }) + '\n',
  );
}

const round = (n: number, d = 2): number => Number(n.toFixed(d));
const perK = (r: ChildResult, patients: number): { sweep: number; servers: number } => ({
  sweep: round((r.cpuMs / patients) * 1000, 0),
  servers: round(((r.serversCpuMs ?? 0) / patients) * 1000, 0),
});

export async function benchSweep(opts: { patients?: number } = {}): Promise<Record<string, unknown>> {
  const patients = opts.patients ?? 100_000;
  const small = Math.max(1, Math.round(patients / 10));
  const { CreateBucketCommand, S3Client } = await import('@aws-sdk/client-s3');
  const { createTables, startLocalDynamo } = await import('../local/dynamo.js');
  const { startEndpointServer } = await import('../local/sagemaker/server.js');
  const { MODELS_DIR } = await import('../local/stack.js');
  const { sweepTableDefinition } = await import('../shared/sweep/checkpoint.js');
  // The FHIR server (and the cohort, written into its repository) in a process of its own.
  const fhir = await startFhirProcess({ patients, small, seed: 2024 });
  const sagemaker = await startEndpointServer({ modelsDir: MODELS_DIR, port: 0 });
  const dynamo = await startLocalDynamo({ port: 0, createTables: false });
  await createTables(dynamo.client, [sweepTableDefinition()]);
  const fauxqs = await startS3Process();
  const s3 = new S3Client({
    endpoint: fauxqs.address,
    forcePathStyle: true,
    region: 'us-east-1',
    credentials: { accessKeyId: 'x', secretAccessKey: 'x' },
  });
  await s3.send(new CreateBucketCommand({ Bucket: 'bench' }));
  // The servers' CPU outside this process: S3's and the FHIR server's.
  const otherCpuMs = (): number => fauxqs.cpuMs() + fhir.cpuMs();
  try {
    const common = {
      modelsDir: MODELS_DIR,
      fhir: fhir.baseUrl,
      sagemaker: sagemaker.url,
      dynamodb: dynamo.endpoint,
      s3: fauxqs.address,
    };

    const { loadRegistry } = await import('../shared/inference/registry.js');
    const { observationSearchCodes } = await import('../shared/features/search-codes.js');
    const { exportTypeFilters } = await import('../shared/sweep/type-filters.js');
    const gbm = (await loadRegistry(MODELS_DIR)).get('diabetes-gbm');
    const typeFilters = exportTypeFilters(observationSearchCodes(gbm ? [gbm] : []));
    const readCeiling = (): Promise<ChildResult> =>
      child({ ...common, mode: 'ceiling', typeFilters: JSON.stringify(typeFilters) }, otherCpuMs);
    const ceilingCold = await readCeiling();
    const smallRun = await child(
      { ...common, name: 'bench-small', group: fhir.groupId, since: 'full' },
      otherCpuMs,
    );
    // The first N/10 patients' reports go, so that the timed sweep writes every report (not a
    // tenth of them found already written), and the ceiling is read again, the server warm as
    // for the sweep: the faster of the two readings is the ceiling.
    const droppedReports = await fhir.dropReports();
    const ceilingWarm = await readCeiling();
    const ceiling = ceilingWarm.ms <= ceilingCold.ms ? ceilingWarm : ceilingCold;
    // BENCH_SWEEP_SERVERS_PROF=<file.cpuprofile>: the FHIR server's CPU profile during the first sweep.
    const stopProfile = await fhir.profile(process.env.BENCH_SWEEP_SERVERS_PROF);
    const first = await child({ ...common, name: 'bench', since: 'incremental' }, otherCpuMs);
    await stopProfile();
    const rerun = await child({ ...common, name: 'bench', since: 'incremental' }, otherCpuMs);

    const ceilingRate = patients / (ceiling.ms / 1000);
    const sweepRate = first.patients / (first.ms / 1000);
    return {
      machine: machineInfo(),
      patients,
      // As Lambda's bootstrap starts the item worker at SWEEP_ITEM_MEMORY_MB (+ BENCH_SWEEP_NODE_ARGS).
      childNodeFlags: CHILD_NODE_FLAGS.join(' '),
      itemMemoryMb: SWEEP_ITEM_MEMORY_MB,
      writeConcurrency: WRITE_CONCURRENCY,
      resources: ceiling.resources,
      loadMs: fhir.loadMs,
      fhirServerNodeFlags: FHIR_SERVER_NODE_FLAGS.join(' '),
      ceiling: {
        ms: ceiling.ms,
        // Both readings: right after the cohort was loaded, and after the N/10 sweep.
        readingsMs: [ceilingCold.ms, ceilingWarm.ms],
        patientsPerSecond: round(ceilingRate, 0),
        cpuMsPerKPatients: perK(ceiling, patients),
      },
      sweep: {
        ms: first.ms,
        patientsPerSecond: round(sweepRate, 0),
        written: first.written,
        phasesMs: first.phasesMs,
        // CPU per 1,000 patients: the sweep process, and the servers (FHIR, endpoint, S3, DynamoDB).
        cpuMsPerKPatients: perK(first, first.patients),
        shareOfCeiling: round(sweepRate / ceilingRate),
        target: '≥ 0.25',
      },
      peakRssMb: {
        [`at${small}`]: round(smallRun.maxRssMb, 0),
        [`at${patients}`]: round(first.maxRssMb, 0),
        ratio: round(first.maxRssMb / smallRun.maxRssMb),
        target: '≤ 1.2',
        // The sweep child alone (the servers run in this process): sampled peaks by kind.
        // With BENCH_SWEEP_NODE_ARGS=--trace-gc: the largest heap left after a full GC.
        liveHeapAfterGcMb: {
          [`at${small}`]: smallRun.liveHeapAfterGcMb,
          [`at${patients}`]: first.liveHeapAfterGcMb,
        },
        [`peaksAt${small}`]: smallRun.memoryPeaksMb,
        [`peaksAt${patients}`]: first.memoryPeaksMb,
        // Full collections in the child (forced: the sweep's own between batches, shared/sweep/heap.ts).
        [`fullGcsAt${small}`]: smallRun.fullGcs,
        [`fullGcsAt${patients}`]: first.fullGcs,
      },
      unchangedRerun: {
        ms: rerun.ms,
        mode: rerun.mode,
        processed: rerun.patients,
        skipped: rerun.skipped,
        ratioToFirst: round(rerun.ms / first.ms, 3),
        target: '≤ 0.10',
      },
      exportKickOffs: await fhir.kickOffs(),
      // Reports of the N/10 sweep deleted before the timed sweep (so it writes every report).
      droppedReports,
    };
  } finally {
    await fhir.stop();
    await sagemaker.close();
    await dynamo.close();
    fauxqs.stop();
  }
}

const invokedDirectly =
  process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href;
if (invokedDirectly) {
  const i = process.argv.indexOf('--child');
  const run =
    i >= 0
      ? childMain(JSON.parse(process.argv[i + 1] ?? '{}') as Record<string, string>)
      : benchSweep({ patients: Number(process.argv[2] ?? 100_000) }).then((r) => {
          process.stdout.write(JSON.stringify(r, null, 2) + '\n');
        });
  run.then(
    () => process.exit(0),
    (err: unknown) => {
      process.stderr.write(`${String(err)}\n`);
      process.exit(1);
    },
  );
}
