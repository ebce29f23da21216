/**
 * The local event source mapping on fauxqs's SQS FIFO with the real client: one receive loop
 * feeding several invocations, FIFO order per group, deletes that fail, polls that fail.
 */
import { DeleteMessageBatchCommand, ReceiveMessageCommand, type SQSClient } from '@aws-sdk/client-sqs';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  queueDepth,
  sendMessages,
  startLocalQueues,
  startPoller,
  type BatchStats,
  type LocalQueues,
  type Poller,
  type SqsHandler,
} from '../../local/queue.js';

let queues: LocalQueues;
let poller: Poller | undefined;

beforeEach(async () => {
  queues = await startLocalQueues({ port: 0, visibilityTimeoutSeconds: 1, maxReceiveCount: 5 });
});

afterEach(async () => {
  await poller?.stop();
  poller = undefined;
  await queues.stop();
});

/** The client with its `send` wrapped, to watch or break calls. */
function wrap(
  client: SQSClient,
  around: (command: unknown, send: () => Promise<unknown>) => Promise<unknown>,
): SQSClient {
  const send = client.send.bind(client) as (c: unknown) => Promise<unknown>;
  return Object.assign(Object.create(client) as SQSClient, {
    send: (command: unknown) => around(command, () => send(command)),
  });
}

async function drained(timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while ((await queueDepth(queues.client, queues.queueUrl)) > 0) {
    if (Date.now() > deadline) throw new Error('queue did not drain');
    await new Promise((r) => setTimeout(r, 50));
  }
}

const messages = (groups: number, perGroup: number) =>
  Array.from({ length: groups * perGroup }, (_, i) => {
    const group = `g${String(i % groups)}`;
    const seq = Math.floor(i / groups);
    return {
      body: JSON.stringify({ group, seq }),
      groupId: group,
      deduplicationId: `${group}-${String(seq)}`,
    };
  });

describe('startPoller', () => {
  it('long-polls from one loop only, runs invocations side by side up to the limit, keeps group order', async () => {
    let receivesInFlight = 0;
    let maxReceivesInFlight = 0;
    const client = wrap(queues.client, async (command, send) => {
      if (!(command instanceof ReceiveMessageCommand)) return send();
      maxReceivesInFlight = Math.max(maxReceivesInFlight, ++receivesInFlight);
      try {
        return await send();
      } finally {
        receivesInFlight--;
      }
    });
    const seen = new Map<string, number[]>();
    let invocations = 0;
    let maxInvocations = 0;
    // A latch: the first invocation holds until a second one has started, so two overlap however
    // slow the machine. Bounded, so that a poller running them one at a time fails the assertion
    // below (maxInvocations stays 1) instead of hanging.
    let release = (): void => undefined;
    const overlapped = new Promise<void>((resolve) => {
      release = resolve;
    });
    let fallback: NodeJS.Timeout | undefined;
    const handler: SqsHandler = async (event) => {
      maxInvocations = Math.max(maxInvocations, ++invocations);
      if (invocations > 1) release();
      fallback ??= setTimeout(release, 10_000);
      await overlapped;
      for (const r of event.Records) {
        const { group, seq } = JSON.parse(r.body) as { group: string; seq: number };
        seen.set(group, [...(seen.get(group) ?? []), seq]);
      }
      invocations--;
      return { batchItemFailures: [] };
    };
    await sendMessages(queues.client, queues.queueUrl, messages(6, 8));
    poller = startPoller({
      client,
      queueUrl: queues.queueUrl,
      queueArn: queues.queueArn,
      handler,
      concurrency: 4,
      batchSize: 2,
    });
    await drained();
    clearTimeout(fallback);

    expect(maxReceivesInFlight).toBe(1);
    expect(maxInvocations).toBeLessThanOrEqual(4);
    expect(maxInvocations).toBeGreaterThan(1);
    expect([...seen.keys()].sort()).toEqual(['g0', 'g1', 'g2', 'g3', 'g4', 'g5']);
    for (const seqs of seen.values()) expect(seqs).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
  });

  it('reports records whose delete failed, and they come back', async () => {
    let failDeletes = 1;
    // The first delete is answered as failed without deleting: the message must come back.
    const client = wrap(queues.client, async (command, send) => {
      if (command instanceof DeleteMessageBatchCommand && failDeletes > 0) {
        failDeletes--;
        const entries = command.input.Entries ?? [];
        return {
          Successful: [],
          Failed: entries.map((e) => ({ Id: e.Id, Code: 'ReceiptHandleIsInvalid', SenderFault: true })),
        };
      }
      return send();
    });
    const stats: BatchStats[] = [];
    const bodies: string[] = [];
    poller = startPoller({
      client,
      queueUrl: queues.queueUrl,
      queueArn: queues.queueArn,
      handler: (event) => {
        bodies.push(...event.Records.map((r) => r.body));
        return Promise.resolve({ batchItemFailures: [] });
      },
      onBatch: (s) => stats.push(s),
    });
    await sendMessages(queues.client, queues.queueUrl, messages(1, 1));
    await drained();

    expect(stats[0]).toMatchObject({ received: 1, failed: 0, deleteFailed: 1 });
    expect(stats.at(-1)).toMatchObject({ received: 1, failed: 0, deleteFailed: 0 });
    expect(bodies).toHaveLength(2);
    expect(new Set(bodies).size).toBe(1);
  });

  it('keeps polling after a failed receive', async () => {
    let failReceives = 2;
    const client = wrap(queues.client, (command, send) =>
      command instanceof ReceiveMessageCommand && failReceives-- > 0
        ? Promise.reject(new Error('connection reset'))
        : send(),
    );
    const handled: string[] = [];
    poller = startPoller({
      client,
      queueUrl: queues.queueUrl,
      queueArn: queues.queueArn,
      handler: (event) => {
        handled.push(...event.Records.map((r) => r.messageId));
        return Promise.resolve({ batchItemFailures: [] });
      },
      receiveErrorBackoffMs: 10,
    });
    await sendMessages(queues.client, queues.queueUrl, messages(2, 2));
    await drained();
    expect(failReceives).toBeLessThan(0);
    expect(handled).toHaveLength(4);
  });
});
