/**
 * Lambda's SQS event source mapping in a worker thread: the poller and the real resource-event
 * handler run on their own event loop, as the function runs on its own compute in AWS, so the
 * FHIR server, notify, the queue and DynamoDB (the rest of the embedded stack, one process) do
 * not share an event loop with the handler. Log lines come back to the caller's logger.
 *
 * Runs the module itself as the worker (`workerData.role`); the parent calls
 * {@link startEventConsumerThread}. From source, the worker registers tsx's loader first (a
 * worker does not inherit the parent's module hooks).
 */
import { isMainThread, parentPort, Worker, workerData } from 'node:worker_threads';
import { SQSClient } from '@aws-sdk/client-sqs';
import { createResourceEventHandler } from '../functions/resource-event/handler.js';
import type { Config } from '../shared/config.js';
import { createLogger, type Logger, type LogLevel } from '../shared/log.js';
import { createPipelinePorts } from '../shared/ports.js';
import { startPoller, type Poller } from './queue.js';

const ROLE = 'resource-event-consumer';

interface ConsumerData {
  readonly role: typeof ROLE;
  readonly config: Config;
  readonly endpoint: string;
  readonly queueUrl: string;
  readonly queueArn: string;
  readonly concurrency: number;
}

type FromWorker = { kind: 'log'; line: string; level: LogLevel } | { kind: 'stopped' };

/** Starts the consumer in a worker thread; `stop()` ends it after the invocations in flight. */
export function startEventConsumerThread(
  opts: Omit<ConsumerData, 'role'>,
  logger: Logger,
): Poller & { ready: Promise<void> } {
  const data: ConsumerData = { role: ROLE, ...opts };
  const worker = import.meta.url.endsWith('.ts')
    ? // Run from source (tsx): the worker registers tsx's loader before loading this module.
      new Worker(
        `import('tsx/esm/api').then(({ register }) => { register(); return import(${JSON.stringify(import.meta.url)}); })`,
        { eval: true, workerData: data },
      )
    : new Worker(new URL(import.meta.url), { workerData: data });
  let stopped: () => void = () => undefined;
  const done = new Promise<void>((resolve) => {
    stopped = resolve;
  });
  worker.on('message', (m: FromWorker) => {
    if (m.kind === 'stopped') {
      stopped();
      return;
    }
    const { level: _level, time: _time, msg, ...fields } = JSON.parse(m.line) as Record<string, never>;
    logger[m.level](String(msg), fields);
  });
  worker.on('error', (err) => {
    logger.error('consumer thread failed', { error: err.name });
    stopped();
  });
  worker.on('exit', () => {
    stopped();
  });
  const ready = new Promise<void>((resolve) => {
    worker.once('online', () => {
      resolve();
    });
  });
  return {
    ready,
    stop: async () => {
      worker.postMessage('stop');
      await done;
      await worker.terminate();
    },
  };
}

function runWorker(data: ConsumerData): void {
  const port = parentPort;
  if (!port) return;
  const logger = createLogger({
    level: 'info',
    sink: (line, level) => {
      port.postMessage({ kind: 'log', line, level } satisfies FromWorker);
    },
  });
  const client = new SQSClient({
    endpoint: data.endpoint,
    region: 'us-east-1',
    credentials: { accessKeyId: 'local', secretAccessKey: 'local' },
  });
  const handler = createResourceEventHandler(logger, () => createPipelinePorts(data.config, logger));
  const poller = startPoller({
    client,
    queueUrl: data.queueUrl,
    queueArn: data.queueArn,
    handler: (event, context) => handler(event as never, context),
    concurrency: data.concurrency,
  });
  port.once('message', () => {
    void poller.stop().then(() => {
      client.destroy();
      port.postMessage({ kind: 'stopped' } satisfies FromWorker);
    });
  });
}

if (!isMainThread && (workerData as Partial<ConsumerData> | undefined)?.role === ROLE) {
  runWorker(workerData as ConsumerData);
}
