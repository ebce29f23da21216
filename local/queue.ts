/**
 * The local queue: fauxqs (SQS in library mode) driven by the real `@aws-sdk/client-sqs`,
 * and a poller that invokes an SQS-triggered handler the way Lambda's event source mapping
 * does: batches of up to 10, `batchItemFailures` honoured (failed records stay for
 * redelivery after the visibility timeout), dead-lettering by the queue's redrive policy.
 */
import { randomUUID } from 'node:crypto';
import {
  DeleteMessageBatchCommand,
  GetQueueAttributesCommand,
  ReceiveMessageCommand,
  SendMessageBatchCommand,
  SQSClient,
  type Message,
} from '@aws-sdk/client-sqs';
import type { Context, SQSEvent, SQSRecord } from 'aws-lambda';
import { startFauxqs, type FauxqsServer } from 'fauxqs';

export interface LocalQueues {
  readonly client: SQSClient;
  readonly queueUrl: string;
  readonly queueArn: string;
  readonly dlqUrl: string;
  readonly endpoint: string;
  stop(): Promise<void>;
}

export interface LocalQueueOptions {
  port?: number;
  /** Seconds a received message stays invisible before redelivery. Default 30, as SQS's own (see local/stack.ts). */
  visibilityTimeoutSeconds?: number;
  /** Receives before a message goes to the dead-letter queue. Default 3. */
  maxReceiveCount?: number;
  queueName?: string;
}

export async function startLocalQueues(opts: LocalQueueOptions = {}): Promise<LocalQueues> {
  const server: FauxqsServer = await startFauxqs({ port: opts.port ?? 0, logger: false, host: 'localhost' });
  const name = opts.queueName ?? 'resource-events';
  const dlq = server.createQueue(`${name}-dlq.fifo`, { attributes: { FifoQueue: 'true' } });
  const queue = server.createQueue(`${name}.fifo`, {
    attributes: {
      FifoQueue: 'true',
      VisibilityTimeout: String(opts.visibilityTimeoutSeconds ?? 30),
      RedrivePolicy: JSON.stringify({
        deadLetterTargetArn: dlq.queueArn,
        maxReceiveCount: String(opts.maxReceiveCount ?? 3),
      }),
    },
  });
  const client = new SQSClient({
    endpoint: server.address,
    region: 'us-east-1',
    credentials: { accessKeyId: 'local', secretAccessKey: 'local' },
  });
  return {
    client,
    queueUrl: queue.queueUrl,
    queueArn: queue.queueArn,
    dlqUrl: dlq.queueUrl,
    endpoint: server.address,
    stop: async () => {
      client.destroy();
      await server.stop();
    },
  };
}

export interface OutgoingMessage {
  body: string;
  groupId: string;
  deduplicationId: string;
}

/** Sends messages in batches of 10 (SQS's limit). */
export async function sendMessages(
  client: SQSClient,
  queueUrl: string,
  messages: readonly OutgoingMessage[],
): Promise<void> {
  for (let i = 0; i < messages.length; i += 10) {
    const chunk = messages.slice(i, i + 10);
    const result = await client.send(
      new SendMessageBatchCommand({
        QueueUrl: queueUrl,
        Entries: chunk.map((m, j) => ({
          Id: String(j),
          MessageBody: m.body,
          MessageGroupId: m.groupId,
          MessageDeduplicationId: m.deduplicationId,
        })),
      }),
    );
    if (result.Failed?.length)
      throw new Error(`SendMessageBatch failed for ${result.Failed.length} messages`);
  }
}

/** Messages visible plus in flight: zero when everything was processed or dead-lettered. */
export async function queueDepth(client: SQSClient, queueUrl: string): Promise<number> {
  const { Attributes: a } = await client.send(
    new GetQueueAttributesCommand({
      QueueUrl: queueUrl,
      AttributeNames: ['ApproximateNumberOfMessages', 'ApproximateNumberOfMessagesNotVisible'],
    }),
  );
  return Number(a?.ApproximateNumberOfMessages ?? 0) + Number(a?.ApproximateNumberOfMessagesNotVisible ?? 0);
}

export type SqsHandler = (
  event: SQSEvent,
  context: Context,
) => Promise<{ batchItemFailures: { itemIdentifier: string }[] } | undefined>;

export interface PollerOptions {
  client: SQSClient;
  queueUrl: string;
  queueArn: string;
  handler: SqsHandler;
  /** Records per invocation, like the event source mapping's BatchSize. Default 10. */
  batchSize?: number;
  /** Invocations in flight at once. Default 1 (FIFO order per group is kept either way). */
  concurrency?: number;
  /** Called after each invocation with how many records succeeded and failed. */
  onBatch?: (stats: BatchStats) => void;
  /** Pause after a failed receive, in ms. Default 500. */
  receiveErrorBackoffMs?: number;
}

export interface BatchStats {
  readonly received: number;
  /** Records the handler failed (left for redelivery). */
  readonly failed: number;
  /** Records handled but not deleted (DeleteMessageBatch's `Failed`): they will be delivered again. */
  readonly deleteFailed: number;
  readonly ms: number;
}

export interface Poller {
  /** Stops polling after the invocations in flight end. */
  stop(): Promise<void>;
}

/**
 * One receive loop feeding up to `concurrency` invocations, as Lambda's poller does: it
 * long-polls only while an invocation slot is free, so there are never several idle long polls
 * that the queue wakes together for one message (fauxqs wakes every waiter on each send, and
 * they share this process's event loop with the handler). A FIFO queue hands out a message group
 * to one receiver at a time, so invocations in flight never hold the same group: order is kept.
 */
export function startPoller(opts: PollerOptions): Poller {
  const state = { running: true };
  const limit = Math.max(1, opts.concurrency ?? 1);
  const inFlight = new Set<Promise<void>>();
  const loop = (async () => {
    while (state.running) {
      if (inFlight.size >= limit) {
        await Promise.race(inFlight);
        continue;
      }
      let messages: Message[];
      try {
        messages = await receive(opts);
      } catch {
        // The event source mapping retries a failed poll; so does this loop, after a pause.
        await new Promise((r) => setTimeout(r, opts.receiveErrorBackoffMs ?? 500));
        continue;
      }
      if (!messages.length) continue;
      const invocation = invoke(opts, messages).finally(() => inFlight.delete(invocation));
      inFlight.add(invocation);
    }
    await Promise.all(inFlight);
  })();
  return {
    stop: async () => {
      state.running = false;
      await loop;
    },
  };
}

async function receive(opts: PollerOptions): Promise<Message[]> {
  const { Messages } = await opts.client.send(
    new ReceiveMessageCommand({
      QueueUrl: opts.queueUrl,
      MaxNumberOfMessages: opts.batchSize ?? 10,
      WaitTimeSeconds: 1,
      MessageSystemAttributeNames: ['All'],
      MessageAttributeNames: ['All'],
    }),
  );
  return Messages ?? [];
}

/** One invocation: the handler on the batch, then the successful records deleted. Never throws. */
async function invoke(opts: PollerOptions, messages: Message[]): Promise<void> {
  const started = Date.now();
  const event: SQSEvent = { Records: messages.map((m) => toRecord(m, opts.queueArn)) };
  let failed = new Set<string>(messages.map((m) => m.MessageId ?? ''));
  try {
    const result = await opts.handler(event, lambdaContext());
    failed = new Set((result?.batchItemFailures ?? []).map((f) => f.itemIdentifier));
  } catch {
    // A thrown handler fails the whole batch, as in Lambda: every record is redelivered.
  }
  const done = messages.filter((m) => !failed.has(m.MessageId ?? ''));
  let deleteFailed = 0;
  if (done.length) {
    try {
      const result = await opts.client.send(
        new DeleteMessageBatchCommand({
          QueueUrl: opts.queueUrl,
          Entries: done.map((m, i) => ({ Id: String(i), ReceiptHandle: m.ReceiptHandle ?? '' })),
        }),
      );
      deleteFailed = result.Failed?.length ?? 0;
    } catch {
      deleteFailed = done.length;
    }
  }
  opts.onBatch?.({
    received: messages.length,
    failed: messages.length - done.length,
    deleteFailed,
    ms: Date.now() - started,
  });
}

function toRecord(m: Message, queueArn: string): SQSRecord {
  const a = m.Attributes ?? {};
  return {
    messageId: m.MessageId ?? '',
    receiptHandle: m.ReceiptHandle ?? '',
    body: m.Body ?? '',
    attributes: {
      ApproximateReceiveCount: a.ApproximateReceiveCount ?? '1',
      SentTimestamp: a.SentTimestamp ?? '0',
      SenderId: a.SenderId ?? 'local',
      ApproximateFirstReceiveTimestamp: a.ApproximateFirstReceiveTimestamp ?? '0',
      ...(a.MessageGroupId ? { MessageGroupId: a.MessageGroupId } : {}),
      ...(a.MessageDeduplicationId ? { MessageDeduplicationId: a.MessageDeduplicationId } : {}),
      ...(a.SequenceNumber ? { SequenceNumber: a.SequenceNumber } : {}),
    },
    messageAttributes: {},
    md5OfBody: m.MD5OfBody ?? '',
    eventSource: 'aws:sqs',
    eventSourceARN: queueArn,
    awsRegion: 'us-east-1',
  };
}

function lambdaContext(): Context {
  // `done`, `fail` and `succeed` are deprecated parts of the Context type; handlers here are async.
  const legacy = { done: () => undefined, fail: () => undefined, succeed: () => undefined };
  return {
    ...legacy,
    callbackWaitsForEmptyEventLoop: false,
    functionName: 'resource-event',
    functionVersion: '$LATEST',
    invokedFunctionArn: 'arn:aws:lambda:us-east-1:000000000000:function:resource-event',
    memoryLimitInMB: '1024',
    awsRequestId: randomUUID(),
    logGroupName: '/aws/lambda/resource-event',
    logStreamName: 'local',
    getRemainingTimeInMillis: () => 60_000,
  };
}
