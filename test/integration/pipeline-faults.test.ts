/**
 * The event path under faults, on the embedded stack with the real clients: SQS FIFO
 * (fauxqs) with a redrive policy, the local poller invoking the real handler, the local FHIR
 * and SageMaker endpoint servers with fault injection.
 */
import * as path from 'node:path';
import { ReceiveMessageCommand } from '@aws-sdk/client-sqs';
import type { DiagnosticReport } from '@medplum/fhirtypes';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createResourceEventHandler } from '../../functions/resource-event/handler.js';
import { buildDemoCohort, loadHeldOutRows } from '../../local/demo/cohort.js';
import { loadDemoPatient } from '../../local/demo/load.js';
import { queueDepth, sendMessages, startPoller, type Poller } from '../../local/queue.js';
import { ROOT, startStack, type RunningStack } from '../../local/stack.js';
import { loadConfig } from '../../shared/config.js';
import type { ResourceEventMessage } from '../../shared/events/resource-event.js';
import { createFhirGateway } from '../../shared/fhir/gateway.js';
import { createLogger } from '../../shared/log.js';
import { createPipelinePorts } from '../../shared/ports.js';

let stack: RunningStack;
let poller: Poller | undefined;
let logLines: Record<string, unknown>[];

beforeEach(async () => {
  stack = await startStack({
    anyPorts: true,
    visibilityTimeoutSeconds: 1,
    maxReceiveCount: 3,
  });
  logLines = [];
});

afterEach(async () => {
  await poller?.stop();
  poller = undefined;
  await stack.close();
});

/** Loads `n` demo patients and returns the event for each. */
async function loadPatients(n: number): Promise<ResourceEventMessage[]> {
  const fhir = createFhirGateway({ baseUrl: stack.fhir.baseUrl });
  const rows = loadHeldOutRows(path.join(ROOT, 'local/demo/data/diabetes-heldout.json')).slice(0, n);
  const events: ResourceEventMessage[] = [];
  for (const p of buildDemoCohort(rows, new Date())) {
    const e = await loadDemoPatient(fhir, p);
    if (e) events.push(e);
  }
  return events;
}

function start(): void {
  const logger = createLogger({
    level: 'debug',
    sink: (line) => logLines.push(JSON.parse(line) as Record<string, unknown>),
  });
  const config = loadConfig({
    FHIR_BASE_URL: stack.fhir.baseUrl,
    SAGEMAKER_ENDPOINT_URL: stack.sagemaker.url,
    MODELS_DIR: stack.modelsDir,
  });
  const handler = createResourceEventHandler(logger, () => createPipelinePorts(config, logger));
  poller = startPoller({
    client: stack.queues.client,
    queueUrl: stack.queues.queueUrl,
    queueArn: stack.queues.queueArn,
    handler: (event, context) => handler(event as never, context),
  });
}

async function send(events: readonly ResourceEventMessage[], tag = ''): Promise<void> {
  await sendMessages(
    stack.queues.client,
    stack.queues.queueUrl,
    events.map((e) => ({
      body: JSON.stringify(e),
      groupId: e.patient ?? e.focus,
      deduplicationId: `${e.focus}-${e.versionId ?? '0'}${tag}`.replace(/[^A-Za-z0-9_.-]/g, '-'),
    })),
  );
}

async function drained(timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if ((await queueDepth(stack.queues.client, stack.queues.queueUrl)) === 0) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('queue did not drain');
}

async function reportCount(): Promise<number> {
  const fhir = createFhirGateway({ baseUrl: stack.fhir.baseUrl });
  return (await fhir.searchAll<DiagnosticReport>('DiagnosticReport', { _count: '500' })).length;
}

describe('event path under faults', () => {
  it('retries endpoint throttling in the SDK and still writes every report', async () => {
    const events = await loadPatients(3);
    stack.sagemaker.setFault('diabetes-gbm', { errorType: 'ThrottlingException', failNext: 2 });
    start();
    await send(events);
    await drained();
    expect(await reportCount()).toBe(3);
    const attempts = stack.sagemaker.stats('diabetes-gbm').attempts;
    expect(attempts.filter((a) => a > 1).length).toBeGreaterThanOrEqual(2);
  });

  it('retries FHIR 5xx on write with backoff within one delivery', async () => {
    const events = await loadPatients(2);
    stack.fhir.server?.setFault({ failNextWrites: 2 });
    start();
    await send(events);
    await drained();
    expect(await reportCount()).toBe(2);
    expect(logLines.filter((l) => l.msg === 'fhir retry').length).toBeGreaterThanOrEqual(2);
    expect(logLines.filter((l) => l.msg === 'record failed')).toHaveLength(0);
  });

  it('fails the record for redelivery when the endpoint stays down, then succeeds on a later delivery', async () => {
    const events = await loadPatients(1);
    stack.sagemaker.setFault('diabetes-gbm', { errorType: 'ServiceUnavailable', errorRate: 1 });
    start();
    await send(events);
    const deadline = Date.now() + 10_000;
    while (!logLines.some((l) => l.msg === 'record failed') && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
    }
    stack.sagemaker.setFault('diabetes-gbm', undefined);
    await drained();
    const failed = logLines.filter((l) => l.msg === 'record failed');
    expect(failed.length).toBeGreaterThanOrEqual(1);
    expect(failed[0]).toMatchObject({ error: 'InferenceServiceUnavailableError' });
    expect(await reportCount()).toBe(1);
    const processed = logLines.find((l) => l.msg === 'event processed');
    expect(processed).toMatchObject({ written: 1 });
  });

  it('fails the record for redelivery when FHIR writes fail past the retry limit, then succeeds', async () => {
    const events = await loadPatients(1);
    stack.fhir.server?.setFault({ writeFailureRate: 1 });
    start();
    await send(events);
    const deadline = Date.now() + 15_000;
    while (!logLines.some((l) => l.msg === 'record failed') && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
    }
    stack.fhir.server?.setFault(undefined);
    await drained();
    const failed = logLines.filter((l) => l.msg === 'record failed');
    expect(failed.length).toBeGreaterThanOrEqual(1);
    expect(failed[0]).toMatchObject({ error: 'FhirUnavailableError' });
    expect(await reportCount()).toBe(1);
  });

  it('dead-letters a record after maxReceiveCount failed deliveries, body intact; nothing is lost', async () => {
    const events = await loadPatients(1);
    stack.sagemaker.setFault('diabetes-gbm', { errorType: 'ModelError', errorRate: 1 });
    start();
    await send(events);
    await drained(20_000);
    const { Messages } = await stack.queues.client.send(
      new ReceiveMessageCommand({ QueueUrl: stack.queues.dlqUrl, MaxNumberOfMessages: 10 }),
    );
    expect(Messages).toHaveLength(1);
    expect(JSON.parse(Messages?.[0]?.Body ?? '{}')).toMatchObject({ focus: events[0]?.focus });
    expect(logLines.filter((l) => l.msg === 'record failed')).toHaveLength(3);
    expect(await reportCount()).toBe(0);
  });

  it('answers insufficient-data, never a score, for a missing result and an unconvertible unit', async () => {
    // In the demo cohort the 9th patient has no glucose and the 13th an HDL in a unit nobody can convert.
    const events = await loadPatients(13);
    start();
    await send(events);
    await drained();
    expect(await reportCount()).toBe(11);
    const insufficient = logLines.filter((l) => l.msg === 'insufficient data');
    expect(insufficient.map((l) => l.missing)).toEqual(
      expect.arrayContaining([['glucose'], ['hdl_cholesterol']]),
    );
    expect(insufficient).toHaveLength(2);
  });

  it('delivers every event three times and still writes exactly one report per patient', async () => {
    const events = await loadPatients(4);
    start();
    await send(events, '-a');
    await send([...events].reverse(), '-b');
    await send(events, '-c');
    await drained();
    expect(await reportCount()).toBe(4);
    const processed = logLines.filter((l) => l.msg === 'event processed');
    expect(processed).toHaveLength(12);
    expect(processed.reduce((n, l) => n + Number(l.written), 0)).toBe(4);
  });
});
