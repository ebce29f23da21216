/**
 * The harness of the event-path chaos tests (event-path-chaos.test.ts): the embedded stack with
 * Subscriptions registered for a cohort's history, the log lines the functions write, and the
 * reads that tell what reached the FHIR server and the dead-letter queue.
 */
import * as path from 'node:path';
import { ReceiveMessageCommand, type Message } from '@aws-sdk/client-sqs';
import type { DiagnosticReport } from '@medplum/fhirtypes';
import { expect } from 'vitest';
import { buildDemoCohort, loadHeldOutRows, type DemoPatient } from '../../local/demo/cohort.js';
import { loadHistory } from '../../local/demo/load.js';
import { buildPbcCohort, loadPbcPatients } from '../../local/demo/pbc-cohort.js';
import { registerSubscriptions, type PayloadContent } from '../../local/live.js';
import { queueDepth, type Poller } from '../../local/queue.js';
import { ROOT, startStack, type RunningStack } from '../../local/stack.js';
import { createFhirGateway, type FhirGateway } from '../../shared/fhir/gateway.js';
import type { ModelManifest } from '../../shared/inference/manifest.js';
import { loadRegistry } from '../../shared/inference/registry.js';
import { createLogger } from '../../shared/log.js';
import { IDEMPOTENCY_KEY_SYSTEM } from '../../shared/reports/labels.js';

export const DATA = path.join(ROOT, 'local', 'demo', 'data');
export const MODELS = ['diabetes-gbm', 'pbc-gru', 'pbc-attention'] as const;
export const LOINC = 'http://loinc.org';
/**
 * Longer than one batch can take under the faults (a record retries a FHIR write up to 4 times
 * with 200/400/800 ms backoff, and the SDK retries throttling), as AWS asks of a visibility
 * timeout. With 1 s, a slow batch outlives it: its records are received again while still being
 * processed, their deletes fail on stale receipt handles, and after 3 receives records that had
 * succeeded go to the DLQ with no failure logged (seen in this test, hence the check below).
 */
export const VISIBILITY_TIMEOUT_S = 10;

export type LogLine = Record<string, unknown> & { msg: string };

export interface Harness {
  stack: RunningStack;
  patientRefs: string[];
  fhir: FhirGateway;
  logs: LogLine[];
  models: ModelManifest[];
  consumer?: Poller;
}

let current: Harness | undefined;

/** Stops the consumer and closes the stack of the last `setUp` (the test file's `afterEach`). */
export async function tearDown(): Promise<void> {
  if (!current) return;
  await current.consumer?.stop();
  await current.stack.close();
  current = undefined;
}

export function cohort(diabetes: number, pbc: number): DemoPatient[] {
  const today = new Date();
  return [
    ...buildDemoCohort(loadHeldOutRows(path.join(DATA, 'diabetes-heldout.json')).slice(0, diabetes), today),
    ...buildPbcCohort(loadPbcPatients(path.join(DATA, 'pbc-heldout.json')).slice(0, pbc), today),
  ];
}

/** Starts the stack, loads the cohort's history and registers the Subscriptions (no faults yet). */
export async function setUp(
  patients: readonly DemoPatient[],
  content: PayloadContent = 'id-only',
): Promise<Harness> {
  const logs: LogLine[] = [];
  const logger = createLogger({
    level: 'info',
    sink: (line) => logs.push(JSON.parse(line) as LogLine),
  });
  const stack = await startStack({
    anyPorts: true,
    logger,
    visibilityTimeoutSeconds: VISIBILITY_TIMEOUT_S,
    maxReceiveCount: 3,
  });
  const fhir = createFhirGateway({ baseUrl: stack.fhir.baseUrl });
  const models = (await loadRegistry(stack.modelsDir)).all();
  const h: Harness = { stack, fhir, logs, models, patientRefs: [] };
  current = h; // afterEach stops `h.consumer` and closes the stack
  for (const p of patients) h.patientRefs.push(await loadHistory(fhir, p));
  const statuses = await registerSubscriptions(stack, fhir, models, content);
  expect(statuses.every((s) => s.endsWith(':active'))).toBe(true);
  return h;
}

/** `Observation/1` from `Observation/1/_history/2`. */
export const bare = (ref: string): string => ref.split('/_history/')[0] ?? ref;

/** Every message now in the dead-letter queue (they stay invisible for the rest of the test). */
export async function deadLetters(stack: RunningStack): Promise<Message[]> {
  const out: Message[] = [];
  for (;;) {
    const { Messages } = await stack.queues.client.send(
      new ReceiveMessageCommand({
        QueueUrl: stack.queues.dlqUrl,
        MaxNumberOfMessages: 10,
        VisibilityTimeout: 300,
        WaitTimeSeconds: 0,
      }),
    );
    if (!Messages?.length) return out;
    out.push(...Messages);
  }
}

/**
 * Waits (bounded) until the Subscriptions have sent everything, every focus in `expected` was
 * processed (or failed for good) and the queue is empty. Returns when settled or at the deadline;
 * the assertions that follow say what was missing.
 */
export async function settle(h: Harness, expected: ReadonlySet<string>, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  await h.stack.subscriptions?.flush();
  while (Date.now() < deadline) {
    const processed = new Set(h.logs.filter((l) => l.msg === 'event processed').map((l) => String(l.focus)));
    const depth = await queueDepth(h.stack.queues.client, h.stack.queues.queueUrl);
    const dlq = await queueDepth(h.stack.queues.client, h.stack.queues.dlqUrl);
    const missing = [...expected].filter((f) => !processed.has(f)).length;
    if (depth === 0 && missing <= dlq) return;
    await new Promise((r) => setTimeout(r, 100));
  }
}

export async function reportsOf(fhir: FhirGateway, patient: string): Promise<DiagnosticReport[]> {
  return fhir.searchAll<DiagnosticReport>('DiagnosticReport', { subject: patient, _count: '100' });
}

export function reportCode(models: readonly ModelManifest[], id: string): string {
  const m = models.find((x) => x.id === id);
  if (!m) throw new Error(`no model ${id}`);
  return m.report.code.code;
}

export function keyOf(r: DiagnosticReport): string | undefined {
  return r.identifier?.find((i) => i.system === IDEMPOTENCY_KEY_SYSTEM)?.value;
}
