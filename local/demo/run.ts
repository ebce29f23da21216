/**
 * `fhir-analytics demo` (what `npm start` runs): start the stack (or use a running FHIR
 * server), load the demo cohort, send one resource event per patient through the SQS FIFO
 * queue, let the local poller invoke the real resource-event handler, and print a summary.
 */
import * as path from 'node:path';
import { createResourceEventHandler } from '../../functions/resource-event/handler.js';
import { loadConfig } from '../../shared/config.js';
import type { ResourceEventMessage } from '../../shared/events/resource-event.js';
import { createFhirGateway } from '../../shared/fhir/gateway.js';
import { createLogger, type LogLevel } from '../../shared/log.js';
import { createPipelinePorts } from '../../shared/ports.js';
import { queueDepth, sendMessages, startPoller } from '../queue.js';
import { ROOT, startStack, type RunningStack, type StackOptions } from '../stack.js';
import { buildDemoCohort, DEMO_SYSTEM, loadHeldOutRows } from './cohort.js';
import { createProgress } from '../progress.js';
import { loadDemoPatient } from './load.js';

export interface DemoOptions extends StackOptions {
  /** Keep the servers up after the summary. */
  serve?: boolean;
  /** Log level of the pipeline's own JSON logs (stderr). Default `warn`. */
  logLevel?: LogLevel;
  /** Where progress and the summary go. Default stdout. */
  out?: NodeJS.WritableStream;
  /** Stop waiting for the queue to drain after this many ms. Default 120,000. */
  drainTimeoutMs?: number;
}

export interface DemoSummary {
  patients: number;
  events: number;
  written: number;
  unchanged: number;
  insufficientData: number;
  ignored: number;
  failedRecords: number;
  deadLettered: number;
  reportsOnServer: number;
  /** Per event, from the handler receiving it to its report being written. */
  latencyMs: { p50: number; p95: number };
  /** Per event, from being sent to the queue to being processed (queueing included). */
  endToEndMs: { p50: number; p95: number };
  durationMs: number;
  fhirBaseUrl: string;
}

const HELD_OUT = path.join(ROOT, 'local', 'demo', 'data', 'diabetes-heldout.json');

export async function runDemo(
  opts: DemoOptions = {},
): Promise<{ summary: DemoSummary; stack: RunningStack }> {
  const out = opts.out ?? process.stdout;
  const say = (line: string): void => {
    out.write(line + '\n');
  };
  const started = Date.now();
  const stack = await startStack(opts);
  const fhirBaseUrl = stack.fhir.baseUrl;
  say(`fhir-analytics demo`);
  say(`  FHIR server        ${fhirBaseUrl}`);
  say(`  SageMaker runtime  ${stack.sagemaker.url}`);
  say(`  SQS (FIFO)         ${stack.queues.endpoint}`);

  // 1. Load the cohort, one transaction per patient, every entry a conditional create.
  const fhir = createFhirGateway({ baseUrl: fhirBaseUrl });
  const cohort = buildDemoCohort(loadHeldOutRows(HELD_OUT), new Date());
  const load = createProgress(out, 'load cohort', cohort.length);
  const events: ResourceEventMessage[] = [];
  for (const p of cohort) {
    const focus = await loadDemoPatient(fhir, p);
    if (focus) events.push(focus);
    load.tick();
  }
  load.done();

  // 2. The real handler, with the pipeline's logs parsed for the summary (they carry no patient data).
  const config = loadConfig({
    FHIR_BASE_URL: fhirBaseUrl,
    SAGEMAKER_ENDPOINT_URL: stack.sagemaker.url,
    MODELS_DIR: stack.modelsDir,
  });
  const tally = { written: 0, unchanged: 0, insufficient: 0, ignored: 0, processed: 0, failed: 0 };
  const sentAt = new Map<string, number>();
  const latencies: number[] = [];
  const endToEnd: number[] = [];
  const level = opts.logLevel ?? 'warn';
  const logger = createLogger({
    level: 'info',
    sink: (line, lineLevel) => {
      const entry = JSON.parse(line) as Record<string, unknown>;
      if (entry.msg === 'event processed') {
        tally.processed++;
        tally.written += Number(entry.written ?? 0);
        tally.unchanged += Number(entry.unchanged ?? 0);
        tally.insufficient += Number(entry.insufficient ?? 0);
        if (entry.ignored) tally.ignored++;
        const t = sentAt.get(String(entry.focus));
        if (t !== undefined) endToEnd.push(Date.now() - t);
        if (typeof entry.ms === 'number') latencies.push(entry.ms);
        progress.tick();
      } else if (entry.msg === 'record failed') {
        tally.failed++;
      }
      if (rank(lineLevel) >= rank(level)) process.stderr.write(line + '\n');
    },
  });
  const handler = createResourceEventHandler(logger, () => createPipelinePorts(config, logger));

  // 3. One event per patient through the FIFO queue (group = patient, dedup = focus + version).
  const progress = createProgress(out, 'process events', events.length);
  const poller = startPoller({
    client: stack.queues.client,
    queueUrl: stack.queues.queueUrl,
    queueArn: stack.queues.queueArn,
    handler: (event, context) => handler(event as never, context),
    concurrency: 2,
  });
  for (const e of events) sentAt.set(e.focus, Date.now());
  await sendMessages(
    stack.queues.client,
    stack.queues.queueUrl,
    events.map((e) => ({
      body: JSON.stringify(e),
      groupId: e.patient ?? e.focus,
      deduplicationId: `${e.focus}/_history/${e.versionId ?? '0'}`.replace(/[^A-Za-z0-9_/.-]/g, '-'),
    })),
  );
  const deadline = Date.now() + (opts.drainTimeoutMs ?? 120_000);
  while (Date.now() < deadline && (await queueDepth(stack.queues.client, stack.queues.queueUrl)) > 0) {
    await new Promise((r) => setTimeout(r, 100));
  }
  await poller.stop();
  progress.done();
  const deadLettered = await queueDepth(stack.queues.client, stack.queues.dlqUrl);
  const reports = await fhir.searchAll('DiagnosticReport', { _count: '1000' }, { maxResources: 1_000_000 });

  const summary: DemoSummary = {
    patients: cohort.length,
    events: events.length,
    written: tally.written,
    unchanged: tally.unchanged,
    insufficientData: tally.insufficient,
    ignored: tally.ignored,
    failedRecords: tally.failed,
    deadLettered,
    reportsOnServer: reports.length,
    latencyMs: { p50: percentile(latencies, 0.5), p95: percentile(latencies, 0.95) },
    endToEndMs: { p50: percentile(endToEnd, 0.5), p95: percentile(endToEnd, 0.95) },
    durationMs: Date.now() - started,
    fhirBaseUrl,
  };
  printSummary(say, summary);
  return { summary, stack };
}

function rank(level: LogLevel): number {
  return { debug: 0, info: 1, warn: 2, error: 3 }[level];
}

function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] ?? 0;
}

function printSummary(say: (line: string) => void, s: DemoSummary): void {
  say('');
  say('summary');
  say(`  patients loaded          ${s.patients}`);
  say(`  events sent              ${s.events}`);
  say(`  reports written          ${s.written}`);
  say(`  reports already present  ${s.unchanged}`);
  say(`  insufficient data        ${s.insufficientData}`);
  say(`  events ignored           ${s.ignored}`);
  say(`  failed deliveries        ${s.failedRecords}  (dead-lettered: ${s.deadLettered})`);
  say(`  DiagnosticReports stored ${s.reportsOnServer}`);
  say(`  per-event latency        p50 ${s.latencyMs.p50} ms, p95 ${s.latencyMs.p95} ms (handler)`);
  say(
    `  queue to report          p50 ${s.endToEndMs.p50} ms, p95 ${s.endToEndMs.p95} ms (all events sent at once)`,
  );
  say(`  duration                 ${(s.durationMs / 1000).toFixed(1)} s`);
  say('');
  say(`Look at the reports:  curl -s '${s.fhirBaseUrl}/DiagnosticReport?_count=5' | head -c 2000`);
  say(`Demo patients carry the identifier system ${DEMO_SYSTEM}.`);
}
