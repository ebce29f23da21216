/**
 * `fhir-analytics demo` (what `npm start` runs). On the embedded stack it runs the real path:
 * the FHIR server's Subscriptions → notify → SQS FIFO → resource-event → FHIR server.
 *
 * 1. Load the demo cohorts' history (held-out patients of the diabetes, PBC and lung models).
 * 2. Register the Subscriptions and wait for their handshakes.
 * 3. Write each patient's new result (an Observation or an ImagingStudy): the FHIR server
 *    notifies, notify queues, the local event source mapping runs resource-event.
 * 4. Wait until the queue is drained and print a summary.
 * Against another FHIR server (`--fhir`) there are no Subscriptions: the demo sends the
 * events to the queue itself, as an EHR integration engine would.
 */
import * as path from 'node:path';
import { createFhirGateway } from '../../shared/fhir/gateway.js';
import { loadRegistry } from '../../shared/inference/registry.js';
import type { ResourceEventMessage } from '../../shared/events/resource-event.js';
import { createLogger, type LogLevel } from '../../shared/log.js';
import { registerSubscriptions, startEventConsumer } from '../live.js';
import { createProgress } from '../progress.js';
import { queueDepth, sendMessages } from '../queue.js';
import { ROOT, startStack, type RunningStack, type StackOptions } from '../stack.js';
import { buildDemoCohort, DEMO_SYSTEM, loadHeldOutRows, type DemoPatient } from './cohort.js';
import { buildImagingCohort, demoEndpoint, DEMO_ENDPOINT_ID, loadDicomIndex } from './imaging-cohort.js';
import { loadHistory, loadTrigger } from './load.js';
import { buildPbcCohort, loadPbcPatients } from './pbc-cohort.js';
import { printSummary, summarise, type DemoSummary, type Tally } from './summary.js';

export type { DemoSummary } from './summary.js';

export interface DemoOptions extends StackOptions {
  /** Log level of the pipeline's own JSON logs (stderr). Default `warn`. */
  logLevel?: LogLevel;
  /** Where progress and the summary go. Default stdout. */
  out?: NodeJS.WritableStream;
  /** Stop waiting for the queue to drain after this many ms. Default 180,000. */
  drainTimeoutMs?: number;
}

const DATA = path.join(ROOT, 'local', 'demo', 'data');

function demoCohorts(today: Date): DemoPatient[] {
  return [
    ...buildDemoCohort(loadHeldOutRows(path.join(DATA, 'diabetes-heldout.json')), today),
    ...buildPbcCohort(loadPbcPatients(path.join(DATA, 'pbc-heldout.json')), today),
    ...buildImagingCohort(loadDicomIndex(path.join(DATA, 'dicom', 'index.json'))),
  ];
}

export async function runDemo(
  opts: DemoOptions = {},
): Promise<{ summary: DemoSummary; stack: RunningStack }> {
  const out = opts.out ?? process.stdout;
  const say = (line: string): void => {
    out.write(line + '\n');
  };
  const started = Date.now();
  const tally: Tally = {
    processed: 0,
    ignored: 0,
    failed: 0,
    perModel: new Map(),
    latencies: [],
    endToEnd: [],
  };
  const sentAt = new Map<string, number>();
  const level = opts.logLevel ?? 'warn';
  const rank = { debug: 0, info: 1, warn: 2, error: 3 } as const;
  let progress = createProgress(out, 'process events', 0);
  // The functions' logs (references, counts, timings; never patient data) feed the summary.
  const logger = createLogger({
    level: 'info',
    sink: (line, lineLevel) => {
      const e = JSON.parse(line) as Record<string, unknown>;
      const model = typeof e.model === 'string' ? e.model : undefined;
      const count = (key: 'written' | 'unchanged' | 'insufficient'): void => {
        if (!model) return;
        const m = tally.perModel.get(model) ?? { written: 0, unchanged: 0, insufficient: 0 };
        m[key]++;
        tally.perModel.set(model, m);
      };
      if (e.msg === 'report written') count('written');
      else if (e.msg === 'report unchanged') count('unchanged');
      else if (e.msg === 'insufficient data') count('insufficient');
      else if (e.msg === 'event processed') {
        tally.processed++;
        if (e.ignored) tally.ignored++;
        if (typeof e.ms === 'number') tally.latencies.push(e.ms);
        const t = sentAt.get(String(e.focus));
        if (t !== undefined) tally.endToEnd.push(Date.now() - t);
        progress.tick();
      } else if (e.msg === 'record failed') tally.failed++;
      if (rank[lineLevel] >= rank[level]) process.stderr.write(line + '\n');
    },
  });

  const stack = await startStack({ ...opts, logger });
  const fhirBaseUrl = stack.fhir.baseUrl;
  const viaSubscriptions = stack.subscriptions !== undefined;
  say('fhir-analytics demo');
  say(
    `  FHIR server        ${fhirBaseUrl}${viaSubscriptions ? ' (topic-based Subscriptions → notify)' : ''}`,
  );
  say(`  SageMaker runtime  ${stack.sagemaker.url}`);
  say(`  DICOMweb           ${stack.dicomweb.url}`);
  say(`  functions          ${stack.gateway.url}  (/notify, /cds-services, /v1)`);
  say(`  SQS (FIFO)         ${stack.queues.endpoint}`);

  // 1. History: patients and what was already on file, plus the DICOMweb Endpoint.
  const fhir = createFhirGateway({ baseUrl: fhirBaseUrl });
  await fhir.transaction({
    resourceType: 'Bundle',
    type: 'transaction',
    entry: [
      {
        resource: demoEndpoint(stack.dicomweb.url),
        request: { method: 'PUT', url: `Endpoint/${DEMO_ENDPOINT_ID}` },
      },
    ],
  });
  const cohort = demoCohorts(new Date());
  const load = createProgress(out, 'load history', cohort.length);
  const patients: string[] = [];
  for (const p of cohort) {
    patients.push(await loadHistory(fhir, p));
    load.tick();
  }
  load.done();

  // 2. Subscriptions and the event source mapping.
  const models = (await loadRegistry(stack.modelsDir)).all();
  if (viaSubscriptions) {
    const statuses = await registerSubscriptions(stack, fhir, models);
    say(`  subscriptions      ${statuses.join(', ')}`);
  }
  const consumer = startEventConsumer(stack, logger);

  // 3. The new results.
  progress = createProgress(out, 'process events', cohort.length);
  const direct: ResourceEventMessage[] = [];
  const write = createProgress(out, 'new results', cohort.length);
  for (const [i, p] of cohort.entries()) {
    const patient = patients[i] ?? '';
    const refs = await loadTrigger(fhir, p, patient);
    for (const ref of refs) {
      const [type, id, , versionId] = ref.split('/');
      const focus = `${type}/${id}`;
      sentAt.set(focus, Date.now());
      if (!viaSubscriptions) {
        direct.push({
          v: 1,
          focus,
          ...(versionId ? { versionId } : {}),
          action: 'create',
          patient,
          timestamp: new Date().toISOString(),
        });
      }
    }
    write.tick();
  }
  write.done();
  if (direct.length) {
    await sendMessages(
      stack.queues.client,
      stack.queues.queueUrl,
      direct.map((e) => ({
        body: JSON.stringify(e),
        groupId: e.patient ?? e.focus,
        deduplicationId: `${e.focus}-${e.versionId ?? '0'}`.replace(/[^A-Za-z0-9_.-]/g, '-'),
      })),
    );
  }

  // 4. Wait for the notifications to be delivered and the queue to drain.
  const deadline = Date.now() + (opts.drainTimeoutMs ?? 180_000);
  await stack.subscriptions?.flush();
  while (Date.now() < deadline) {
    if (
      tally.processed + tally.failed >= cohort.length &&
      (await queueDepth(stack.queues.client, stack.queues.queueUrl)) === 0
    )
      break;
    await new Promise((r) => setTimeout(r, 100));
  }
  await consumer.stop();
  progress.done();
  const deadLettered = await queueDepth(stack.queues.client, stack.queues.dlqUrl);
  const reports = await fhir.searchAll('DiagnosticReport', { _count: '1000' }, { maxResources: 1_000_000 });
  const summary = summarise({
    tally,
    patients: cohort.length,
    deadLettered,
    reportsOnServer: reports.length,
    durationMs: Date.now() - started,
    fhirBaseUrl,
    viaSubscriptions,
  });
  printSummary(say, summary, DEMO_SYSTEM);
  return { summary, stack };
}
