/**
 * The event consumer in a process of its own, for bench/event-path.ts: the same poller
 * (`startPoller`, Lambda's SQS event source locally) and the same resource-event handler as
 * `startEventConsumer`, forked with this process's loader flags. In AWS the handler runs in its
 * own Lambda sandbox, apart from the FHIR server, notify and DynamoDB; in the one-process
 * layout it shares their event loop, so notify's work after its SQS send (the event-number
 * state write: the SDK's signing and serialising, dynalite's handling) runs between the queue's
 * answer and the handler's first call. The stack (FHIR, SageMaker, fauxqs, dynalite, notify)
 * stays in the parent, where the bench watches the commits.
 *
 * The child forwards the pipeline's 'report written', 'event processed' and 'record failed'
 * log lines with their time (`timeOrigin + now`, the same wall clock in both processes) and,
 * asked, makes the bare calls (bench/event-bare.ts) through its own ports: the peer of this
 * layout, from where the handler makes them.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import type { WithId } from '@medplum/core';
import type { Observation } from '@medplum/fhirtypes';
import { SQSClient } from '@aws-sdk/client-sqs';
import { createResourceEventHandler } from '../functions/resource-event/handler.js';
import { startPoller, type Poller } from '../local/queue.js';
import type { RunningStack } from '../local/stack.js';
import type { Config } from '../shared/config.js';
import { loadRegistry } from '../shared/inference/registry.js';
import { createLogger, silentLogger, type Logger } from '../shared/log.js';
import { createPipelinePorts } from '../shared/ports.js';
import { bareCalls, newBareSamples, type BareSamples } from './event-bare.js';

interface StartMessage {
  type: 'start';
  config: Config;
  queueUrl: string;
  queueArn: string;
  sqsEndpoint: string;
  concurrency: number;
  model: string;
}
type ToChild =
  StartMessage | { type: 'bare'; ref: string } | { type: 'pause' } | { type: 'resume' } | { type: 'stop' };
type FromChild =
  | { type: 'ready' }
  | { type: 'log'; line: string; at: number }
  | { type: 'bare'; samples: BareSamples; focus: WithId<Observation> }
  | { type: 'error'; message: string }
  | { type: 'paused' }
  | { type: 'stopped' };

const FORWARDED = ['"report written"', '"event processed"', '"record failed"'];

/** A consumer whose poller can be paused (its handler, ports and process kept warm). */
export interface PausableConsumer {
  /** Polls again (it starts polling). */
  resume(): Promise<void>;
  /** Stops polling once the invocations in flight end (up to the long poll's 1 s wait). */
  pause(): Promise<void>;
  /** The bare calls for one patient, made where the handler runs; adds its samples to `into`. */
  bare(ref: string, into: BareSamples): Promise<WithId<Observation>>;
  close(): Promise<void>;
}

interface PollerTarget {
  readonly client: SQSClient;
  readonly queueUrl: string;
  readonly queueArn: string;
  readonly concurrency: number;
}

/** `startEventConsumer`'s handler and poller, with the poller restartable. */
function pausable(target: PollerTarget, config: Config, logger: Logger) {
  const handler = createResourceEventHandler(logger, () => createPipelinePorts(config, logger));
  let poller: Poller | undefined;
  return {
    resume: () => {
      poller ??= startPoller({
        client: target.client,
        queueUrl: target.queueUrl,
        queueArn: target.queueArn,
        handler: (event, context) => handler(event as never, context),
        concurrency: target.concurrency,
      });
    },
    pause: async () => {
      await poller?.stop();
      poller = undefined;
    },
  };
}

/** The consumer in this process (the stack's), as `startEventConsumer` runs it. */
export async function startInProcessConsumer(
  stack: RunningStack,
  model: string,
  concurrency: number,
  logger: Logger,
): Promise<PausableConsumer> {
  const { queues } = stack;
  const target = { client: queues.client, queueUrl: queues.queueUrl, queueArn: queues.queueArn, concurrency };
  const consumer = pausable(target, stack.functionsConfig, logger);
  const manifest = (await loadRegistry(stack.modelsDir)).get(model);
  if (!manifest) throw new Error(`model ${model} not found`);
  const bareOnce = bareCalls(await createPipelinePorts(stack.functionsConfig, silentLogger), manifest);
  return {
    resume: () => {
      consumer.resume();
      return Promise.resolve();
    },
    pause: consumer.pause,
    bare: bareOnce,
    close: consumer.pause,
  };
}

/** Forks the consumer; `onLine` gets each forwarded log line with its time on this process's clock. */
export async function startChildConsumer(
  stack: RunningStack,
  model: string,
  concurrency: number,
  onLine: (line: string, at: number) => void,
): Promise<PausableConsumer> {
  const child: ChildProcess = fork(fileURLToPath(import.meta.url), [], {
    execArgv: process.execArgv,
    env: { ...process.env, FHIR_ANALYTICS_BENCH_CONSUMER: '1' },
    stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
    serialization: 'advanced',
  });
  let waiting: ((m: FromChild) => void) | undefined;
  const exited = new Promise<void>((resolve) =>
    child.once('exit', (code) => {
      // A request still waiting is answered: the process is gone.
      waiting?.({ type: 'error', message: `exited (${String(code)})` });
      resolve();
    }),
  );
  child.on('message', (raw) => {
    const m = raw as FromChild;
    if (m.type === 'log') onLine(m.line, m.at - performance.timeOrigin);
    else waiting?.(m);
  });
  const ask = (m: ToChild): Promise<FromChild> =>
    new Promise((resolve, reject) => {
      waiting = (answer) => {
        waiting = undefined;
        if (answer.type === 'error') reject(new Error(`consumer process: ${answer.message}`));
        else resolve(answer);
      };
      child.send(m);
    });
  await ask({
    type: 'start',
    config: stack.functionsConfig,
    queueUrl: stack.queues.queueUrl,
    queueArn: stack.queues.queueArn,
    sqsEndpoint: stack.queues.endpoint,
    concurrency,
    model,
  });
  return {
    resume: async () => {
      await ask({ type: 'resume' });
    },
    pause: async () => {
      await ask({ type: 'pause' });
    },
    async bare(ref, into) {
      const answer = await ask({ type: 'bare', ref });
      if (answer.type !== 'bare') throw new Error('consumer process: no bare samples');
      for (const k of Object.keys(into) as (keyof BareSamples)[]) into[k].push(...answer.samples[k]);
      return answer.focus;
    },
    async close() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      await ask({ type: 'stop' });
      await exited;
    },
  };
}

/** The child's side. */
function runChild(): void {
  const send = (m: FromChild, then?: () => void): void => {
    process.send?.(m, undefined, {}, then);
  };
  let consumer: ReturnType<typeof pausable> | undefined;
  let bareOnce: ((ref: string, bare: BareSamples) => Promise<WithId<Observation>>) | undefined;
  const logger = createLogger({
    level: 'info',
    sink: (line) => {
      if (FORWARDED.some((f) => line.includes(f)))
        send({ type: 'log', line, at: performance.timeOrigin + performance.now() });
    },
  });
  const handle = async (m: ToChild): Promise<FromChild> => {
    switch (m.type) {
      case 'start': {
        const client = new SQSClient({
          endpoint: m.sqsEndpoint,
          region: 'us-east-1',
          credentials: { accessKeyId: 'local', secretAccessKey: 'local' },
        });
        const target = { client, queueUrl: m.queueUrl, queueArn: m.queueArn, concurrency: m.concurrency };
        consumer = pausable(target, m.config, logger);
        const manifest = (await loadRegistry(m.config.MODELS_DIR)).get(m.model);
        if (!manifest) throw new Error(`model ${m.model} not found`);
        bareOnce = bareCalls(await createPipelinePorts(m.config, silentLogger), manifest);
        return { type: 'ready' };
      }
      case 'bare': {
        if (!bareOnce) throw new Error('not started');
        const samples = newBareSamples();
        const focus = await bareOnce(m.ref, samples);
        return { type: 'bare', samples, focus };
      }
      case 'resume':
        consumer?.resume();
        return { type: 'ready' };
      case 'pause':
        await consumer?.pause();
        return { type: 'paused' };
      case 'stop':
        await consumer?.pause();
        return { type: 'stopped' };
    }
  };
  process.on('message', (m) => {
    handle(m as ToChild).then(
      (answer) => {
        // Stopped: the pipeline's keep-alive sockets would hold the process; it ends here.
        send(answer, answer.type === 'stopped' ? () => process.exit(0) : undefined);
      },
      (err: unknown) => {
        send({ type: 'error', message: err instanceof Error ? err.message : String(err) });
      },
    );
  });
}

if (process.env.FHIR_ANALYTICS_BENCH_CONSUMER === '1' && process.send) runChild();
