/**
 * The floor of the event path's delivery (issue 6), for bench/event-path.ts: what any
 * at-least-once, queue-based delivery of one event costs on this stack, measured bare in the
 * same run and through the same clients as the product's path, so that the end-to-end ratio
 * can be read against the best any receiver could score here (as bench/inference-http.ts does
 * for issue 4). One sample, in order:
 *
 * 1. `notifyPost`: one notification POST through the FHIR server's own delivery client
 *    (`createDeliver`: the rest-hook headers, the `X-Signature` HMAC, fetch) with a real
 *    notification body of the series' content (the bundle the server sends for one event on a
 *    stored Observation), to a node:http server that reads the body, makes the send below and
 *    then answers 200 with an OperationOutcome of notify's answer's size, doing nothing else;
 *    timed until the body has arrived (the answer's leg runs after the send, as notify's does,
 *    off the path to the consumer);
 * 2. `sqsSend`: one SendMessageBatch of the message notify would build for that event
 *    (`buildMessage`, the resource carried with full-resource content) through notify's own
 *    queue port (`createNotifyPorts(...).queue`), to a FIFO queue on the stack's fauxqs made
 *    like the event queue (same visibility timeout, its own name, so that the running consumer
 *    never sees these messages), started by the receiver when the body has arrived;
 * 3. `receiveWake`: from the send's return until a ReceiveMessage long poll already waiting on
 *    that queue (issued before the bare calls that precede the delivery, with the event poller's
 *    parameters, through the poller's client) returns the message (near 0, or slightly below
 *    when the poll wakes before the send's response is read).
 *
 * `total`, from the POST's start to the long poll's return: the delivery part of
 * `floorRatio = (bare calls p50 + total p50) / bare calls p50`.
 *
 * Included: loopback HTTP for the notification and both SQS calls, the SDK's work on them
 * (SigV4, middleware, XML/JSON), fauxqs's enqueue and its wake-up of the waiting poll, the
 * HMAC signing on the sender's side.
 * Excluded (the product's own delivery cost, the difference between the path and the floor):
 * the functions gateway's request → API Gateway event conversion, notify's work (HMAC check,
 * JSON parse, zod validation, the cached state read, building the message), notify's
 * event-number state write (after the send: off the critical path in AWS, but it shares this
 * process with the consumer in the bench), the subscription worker's queueing and bundle
 * building, the poller's hand-off to the handler and its record parsing, and the delete.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';
import {
  CreateQueueCommand,
  DeleteMessageCommand,
  ReceiveMessageCommand,
  type Message,
} from '@aws-sdk/client-sqs';
import type { Observation } from '@medplum/fhirtypes';
import type { WithId } from '@medplum/core';
import { createDeliver, newCounters } from '../local/fhir/subscription-delivery.js';
import { notificationBundle, type StoredEvent } from '../local/fhir/subscription-bundles.js';
import { readSubscription } from '../local/fhir/subscription-topics.js';
import type { State } from '../local/fhir/subscription-types.js';
import { subscriptionsFor, type PayloadContent } from '../local/live.js';
import { LOCAL_NOTIFY_SECRET, type RunningStack } from '../local/stack.js';
import { parseNotificationBundle } from '../shared/events/notification.js';
import type { ModelManifest } from '../shared/inference/manifest.js';
import { silentLogger } from '../shared/log.js';
import { createNotifyPorts } from '../shared/notify/ports.js';
import { buildMessage } from '../shared/notify/queue.js';
import { stats, type Stats } from './event-common.js';

export interface DeliverySamples {
  notifyPost: number[];
  sqsSend: number[];
  receiveWake: number[];
  total: number[];
}

export const newDeliverySamples = (): DeliverySamples => ({
  notifyPost: [],
  sqsSend: [],
  receiveWake: [],
  total: [],
});

export const deliveryStats = (s: DeliverySamples): Record<keyof DeliverySamples, Stats> => ({
  notifyPost: stats(s.notifyPost),
  sqsSend: stats(s.sqsSend),
  receiveWake: stats(s.receiveWake),
  total: stats(s.total),
});

export interface DeliveryFloor {
  /**
   * Starts the long poll of the next delivery. Call it before other work (the bare calls), so
   * that the poll is waiting when the delivery starts and this process has not sat idle: a
   * loopback call after an idle pause costs about 1 ms more here than one made on a busy loop,
   * as the path's calls are.
   */
  listen(): Promise<Message[]>;
  /** One bare delivery of `focus` (a stored Observation) to the poll `listen` started, timed into `into`. */
  once(
    focus: WithId<Observation>,
    content: PayloadContent,
    into: DeliverySamples,
    polled: Promise<Message[]>,
  ): Promise<void>;
  close(): Promise<void>;
}

/** notify's 200 answer for one queued event, as `shared/notify/request.ts` writes it. */
const ACCEPTED = JSON.stringify({
  resourceType: 'OperationOutcome',
  issue: [{ severity: 'information', code: 'informational', diagnostics: 'accepted; 1 queued' }],
});

/**
 * A receiver that reads the body, runs `onArrival` (the SQS send, as notify sends before it
 * answers), then answers; nothing else.
 */
async function startNoopReceiver(): Promise<{
  url: string;
  server: Server;
  onArrival: { current: () => Promise<void>; failure?: unknown };
}> {
  const onArrival: { current: () => Promise<void>; failure?: unknown } = {
    current: (): Promise<void> => Promise.resolve(),
  };
  const server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      // A failed send is kept for the sample to throw (not left unhandled); the answer goes out.
      void onArrival
        .current()
        .catch((err: unknown) => (onArrival.failure ??= err))
        .finally(() => {
          res.writeHead(200, { 'content-type': 'application/fhir+json' });
          res.end(ACCEPTED);
        });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${String(port)}/notify`, server, onArrival };
}

export async function startDeliveryFloor(
  stack: RunningStack,
  models: readonly ModelManifest[],
): Promise<DeliveryFloor> {
  const receiver = await startNoopReceiver();
  const sqs = stack.queues.client;
  const { QueueUrl: queueUrl } = await sqs.send(
    new CreateQueueCommand({
      QueueName: 'resource-events-floor.fifo',
      Attributes: { FifoQueue: 'true', VisibilityTimeout: '30' },
    }),
  );
  if (!queueUrl) throw new Error('no floor queue');
  const notifyPorts = await createNotifyPorts(
    { ...stack.functionsConfig, QUEUE_URL: queueUrl },
    silentLogger,
  );
  const stopping = new AbortController();
  const deliver = createDeliver({
    fetch: globalThis.fetch,
    signingSecretFor: () => LOCAL_NOTIFY_SECRET,
    timeoutMs: 10_000,
    attempts: 1,
    baseDelayMs: 0,
    maxDelayMs: 0,
    counters: newCounters(),
    stopping: stopping.signal,
    isClosed: () => false,
    log: silentLogger,
    onExhausted: () => undefined,
  });
  const states = new Map<PayloadContent, State>();
  const stateFor = (content: PayloadContent): State => {
    const existing = states.get(content);
    if (existing) return existing;
    const [sub] = subscriptionsFor(models, receiver.url, content);
    if (!sub?.id) throw new Error('no Observation subscription for the models');
    const state: State = {
      id: sub.id,
      resource: { ...sub, id: sub.id },
      key: content,
      seenStatus: 'active',
      status: 'active',
      config: readSubscription(sub),
      eventCount: 0,
      events: [],
      queue: [],
      lastSentAt: 0,
      generation: 0,
    };
    states.set(content, state);
    return state;
  };
  const receive = (): Promise<Message[]> =>
    sqs
      .send(
        new ReceiveMessageCommand({
          QueueUrl: queueUrl,
          MaxNumberOfMessages: 10,
          WaitTimeSeconds: 1,
          MessageSystemAttributeNames: ['All'],
          MessageAttributeNames: ['All'],
        }),
      )
      .then((r) => r.Messages ?? []);

  return {
    listen: receive,
    async once(focus, content, into, polled) {
      const state = stateFor(content);
      const number = ++state.eventCount;
      const version = focus.meta?.versionId ?? '1';
      const event: StoredEvent = {
        number,
        timestamp: new Date().toISOString(),
        interaction: 'create',
        focus: `Observation/${focus.id}/_history/${version}`,
        resource: focus,
      };
      const body = JSON.stringify(
        notificationBundle(
          stack.fhir.baseUrl,
          {
            subscriptionId: state.id,
            topic: state.config?.topic.url ?? '',
            status: 'active',
            type: 'event-notification',
            eventsSinceStart: number,
          },
          [event],
          content,
          event.timestamp,
        ),
      );
      // The focus as notify reads it from the notification (full-resource content), untimed.
      const carried = parseNotificationBundle(JSON.parse(body)).resources.get(`Observation/${focus.id}`);
      const message = buildMessage({
        subscription: `Subscription/${state.id}`,
        focus: `Observation/${focus.id}`,
        versionId: version,
        ...(content === 'full-resource' && focus.subject?.reference
          ? { patient: focus.subject.reference }
          : {}),
        eventNumber: number,
        timestamp: event.timestamp,
        ...(carried ? { resource: carried } : {}),
      });
      // The long poll was started by listen() before the bare calls: it waits, as the consumer's does.
      // The send starts when the notification has arrived and the receiver answers after it, as
      // notify does: the POST's response leg is not on the path to the consumer.
      let t1 = 0;
      let t2 = 0;
      receiver.onArrival.current = async () => {
        t1 = performance.now();
        await notifyPorts.queue.send([message]);
        t2 = performance.now();
      };
      const t0 = performance.now();
      const accepted = deliver(state, { type: 'event-notification', generation: 0, event }, body);
      const got = await polled;
      const t3 = performance.now();
      if (!(await accepted)) throw new Error('floor notification not accepted');
      if (receiver.onArrival.failure !== undefined) throw receiver.onArrival.failure as Error;
      const [m] = got;
      if (!m) throw new Error('the floor long poll returned no message within its wait');
      into.notifyPost.push(t1 - t0);
      into.sqsSend.push(t2 - t1);
      into.receiveWake.push(t3 - t2);
      into.total.push(t3 - t0);
      await sqs.send(new DeleteMessageCommand({ QueueUrl: queueUrl, ReceiptHandle: m.ReceiptHandle ?? '' }));
    },
    async close() {
      stopping.abort();
      await new Promise<void>((resolve) =>
        receiver.server.close(() => {
          resolve();
        }),
      );
    },
  };
}
