/**
 * Where an event's time goes on the embedded stack: every outbound call of the whole process
 * (fetch, and the SQS, DynamoDB and SageMaker clients) is timed, and for each event, one at a
 * time, the calls between the Observation's commit and its 'event processed' log line are put
 * on a timeline relative to the commit. Printed: per call, in order, the median start and the
 * median duration and end over `events` events (until the response headers for fetch: the body is
 * read after), e.g. the notification POST, the SQS send, the long poll's return (the receive wake-up),
 * then the handler's FHIR reads and search, the idempotency lookup, InvokeEndpoint, the
 * transaction and the delete.
 *
 * A profiling aid, not a figure with a peer: it patches `globalThis.fetch` and the clients'
 * `send` in this process only. Run alone:
 * `npx tsx bench/event-stages.ts [events] [id-only|full-resource] [consumer concurrency]` (the
 * Subscriptions' payload content, default id-only, the demo's; the poller's concurrency, default 1).
 */
import * as os from 'node:os';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { SageMakerRuntimeClient } from '@aws-sdk/client-sagemaker-runtime';
import { SQSClient } from '@aws-sdk/client-sqs';
import { buildDemoCohort, loadHeldOutRows } from '../local/demo/cohort.js';
import { loadHistory, loadTrigger } from '../local/demo/load.js';
import { registerSubscriptions, startEventConsumer, type PayloadContent } from '../local/live.js';
import { ROOT, startStack } from '../local/stack.js';
import { createFhirGateway } from '../shared/fhir/gateway.js';
import { loadRegistry } from '../shared/inference/registry.js';
import { createLogger } from '../shared/log.js';
import { isWrittenByFhirAnalytics } from '../shared/reports/index.js';
import { runWhenInvoked } from './machine.js';

interface Span {
  readonly label: string;
  readonly start: number;
  readonly end: number;
}

const WARMUP = 20;
let spans: Span[] = [];

/** `GET /fhir/Observation?subject&code` without ids or values. */
function callLabel(method: string, url: string): string {
  const u = new URL(url);
  const route = u.pathname.replace(/\/[0-9a-f-]{6,}|\/\d+/g, '/:id');
  const keys = [...u.searchParams.keys()];
  return `${method} ${route}${keys.length ? `?${keys.join('&')}` : ''}`;
}

function instrument(): void {
  const fetchImpl = globalThis.fetch;
  globalThis.fetch = async (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
    const start = performance.now();
    try {
      return await fetchImpl(input, init);
    } finally {
      const url = input instanceof Request ? input.url : String(input);
      const method = init?.method ?? (input instanceof Request ? input.method : 'GET');
      spans.push({ label: `fetch ${callLabel(method, url)}`, start, end: performance.now() });
    }
  };
  for (const client of [SQSClient, DynamoDBClient, SageMakerRuntimeClient]) {
    const proto = client.prototype as { send: (command: object, ...rest: unknown[]) => Promise<unknown> };
    const send = proto.send;
    proto.send = async function timedSend(this: unknown, command: object, ...rest: unknown[]) {
      const start = performance.now();
      try {
        return await send.call(this, command, ...rest);
      } finally {
        spans.push({ label: `${client.name} ${command.constructor.name}`, start, end: performance.now() });
      }
    };
  }
}

const median = (xs: readonly number[]): number =>
  [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;

export async function benchEventStages(
  events = 200,
  content: PayloadContent = 'id-only',
  concurrency = 1,
): Promise<Record<string, unknown>> {
  instrument();
  const loadAtStart = os.loadavg();
  let processedAt = 0;
  const logger = createLogger({
    level: 'info',
    sink: (line) => {
      if (line.includes('"event processed"')) processedAt = performance.now();
    },
  });
  const stack = await startStack({ anyPorts: true, visibilityTimeoutSeconds: 30 });
  try {
    const fhir = createFhirGateway({ baseUrl: stack.fhir.baseUrl });
    const registry = await loadRegistry(stack.modelsDir);
    const rows = loadHeldOutRows(path.join(ROOT, 'local/demo/data/diabetes-heldout.json'));
    const many = Array.from({ length: 4 }, (_, k) =>
      rows.map((r) => ({ ...r, rowId: r.rowId + k * 1e6 })),
    ).flat();
    const cohort = buildDemoCohort(many, new Date())
      .filter((p) => !p.expectedGap)
      .slice(0, WARMUP + events);
    const refs: string[] = [];
    for (const p of cohort) refs.push(await loadHistory(fhir, p));
    await registerSubscriptions(stack, fhir, registry.all(), content);
    let commit = 0;
    const server = stack.fhir.server;
    if (!server) throw new Error('the embedded FHIR server is needed');
    server.onChange((e) => {
      if (
        e.type === 'create' &&
        e.resource.resourceType === 'Observation' &&
        !isWrittenByFhirAnalytics(e.resource)
      )
        commit = performance.now();
    });
    const consumer = startEventConsumer(stack, logger, concurrency);
    const timeline = new Map<string, { starts: number[]; durations: number[]; ends: number[] }>();
    const totals: number[] = [];
    for (const [i, p] of cohort.entries()) {
      spans = [];
      processedAt = 0;
      await loadTrigger(fhir, p, refs[i] ?? '');
      for (let k = 0; k < 5000 && processedAt === 0; k++) await new Promise((r) => setTimeout(r, 1));
      await new Promise((r) => setTimeout(r, 5)); // the delete after the invocation
      if (i < WARMUP || processedAt === 0) continue;
      totals.push(processedAt - commit);
      const nth = new Map<string, number>();
      for (const s of spans.filter((x) => x.end >= commit).sort((a, b) => a.start - b.start)) {
        const n = nth.get(s.label) ?? 0;
        nth.set(s.label, n + 1);
        const key = n === 0 ? s.label : `${s.label} #${String(n + 1)}`;
        const t = timeline.get(key) ?? { starts: [], durations: [], ends: [] };
        t.starts.push(s.start - commit);
        t.durations.push(s.end - s.start);
        t.ends.push(s.end - commit);
        timeline.set(key, t);
      }
    }
    await consumer.stop();
    const round = (x: number): number => Math.round(x * 100) / 100;
    return {
      loadAverage: { atStart: loadAtStart.map(round), atEnd: os.loadavg().map(round) },
      content,
      concurrency,
      events: totals.length,
      commitToProcessedP50Ms: round(median(totals)),
      callsFromCommitMs: [...timeline.entries()]
        .filter(([, t]) => t.starts.length >= totals.length / 2)
        .map(([call, t]) => ({
          call,
          n: t.starts.length,
          startP50: round(median(t.starts)),
          durationP50: round(median(t.durations)),
          endP50: round(median(t.ends)),
        }))
        .sort((a, b) => a.startP50 - b.startP50),
    };
  } finally {
    await stack.close();
  }
}

runWhenInvoked(import.meta.url, 200, (n) =>
  benchEventStages(
    n,
    process.argv[3] === 'full-resource' ? 'full-resource' : 'id-only',
    Number(process.argv[4] ?? 1),
  ),
);
