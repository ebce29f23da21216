/**
 * The resource-event consumer in a worker thread (`local/consumer-thread.ts`): the real path
 * (FHIR write → Subscription → notify → SQS FIFO → poller → handler → transaction), with the
 * poller and the handler on their own event loop; their log lines reach the caller's logger.
 */
import * as path from 'node:path';
import type { DiagnosticReport } from '@medplum/fhirtypes';
import { afterEach, describe, expect, it } from 'vitest';
import { buildDemoCohort, loadHeldOutRows } from '../../local/demo/cohort.js';
import { loadHistory, loadTrigger } from '../../local/demo/load.js';
import { startEventConsumerThread } from '../../local/consumer-thread.js';
import { registerSubscriptions } from '../../local/live.js';
import { queueDepth, type Poller } from '../../local/queue.js';
import { ROOT, startStack, type RunningStack } from '../../local/stack.js';
import { createFhirGateway } from '../../shared/fhir/gateway.js';
import { loadRegistry } from '../../shared/inference/registry.js';
import { createLogger } from '../../shared/log.js';

let stack: RunningStack | undefined;
let consumer: Poller | undefined;

afterEach(async () => {
  await consumer?.stop();
  await stack?.close();
  consumer = undefined;
  stack = undefined;
});

describe('resource-event consumer in a worker thread', () => {
  it('processes the Subscription events into reports and logs through the caller', async () => {
    const lines: Record<string, unknown>[] = [];
    const logger = createLogger({
      level: 'info',
      sink: (l) => lines.push(JSON.parse(l) as Record<string, unknown>),
    });
    stack = await startStack({ anyPorts: true, visibilityTimeoutSeconds: 10 });
    const fhir = createFhirGateway({ baseUrl: stack.fhir.baseUrl });
    const rows = loadHeldOutRows(path.join(ROOT, 'local/demo/data/diabetes-heldout.json')).slice(0, 3);
    const patients = buildDemoCohort(rows, new Date()).filter((p) => !p.expectedGap);
    const refs: string[] = [];
    for (const p of patients) refs.push(await loadHistory(fhir, p));
    await registerSubscriptions(stack, fhir, (await loadRegistry(stack.modelsDir)).all(), 'full-resource');
    const thread = startEventConsumerThread(
      {
        config: stack.functionsConfig,
        endpoint: stack.queues.endpoint,
        queueUrl: stack.queues.queueUrl,
        queueArn: stack.queues.queueArn,
        concurrency: 2,
      },
      logger,
    );
    consumer = thread;
    await thread.ready;
    const focuses = new Set<string>();
    for (const [i, p] of patients.entries()) {
      for (const ref of await loadTrigger(fhir, p, refs[i] ?? ''))
        focuses.add(ref.split('/_history/')[0] ?? '');
    }
    await stack.subscriptions?.flush();
    const processed = () => lines.filter((l) => l.msg === 'event processed' && focuses.has(String(l.focus)));
    for (let k = 0; k < 300 && processed().length < focuses.size; k++)
      await new Promise((r) => setTimeout(r, 100));
    await thread.stop();
    consumer = undefined;

    expect(
      processed()
        .map((l) => l.focus)
        .sort(),
    ).toEqual([...focuses].sort());
    expect(processed().every((l) => l.written === 1 && l.focusFrom === 'message')).toBe(true);
    const reports = await fhir.searchAll<DiagnosticReport>('DiagnosticReport', { _count: '100' });
    expect(reports.map((r) => r.subject?.reference).sort()).toEqual([...refs].sort());
    expect(await queueDepth(stack.queues.client, stack.queues.queueUrl)).toBe(0);
  }, 60_000);
});
