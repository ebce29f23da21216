/**
 * Turns notification events into queue messages for `functions/resource-event`, and sends them
 * to the SQS FIFO queue. The group id is the patient when known (one patient's events are
 * processed in order), else the focus; the deduplication id is a hash of the subscription, the
 * event number and the focus with its version, so a redelivered notification, or an event
 * caught up through `$events` that later arrives too, is dropped by SQS within its 5-minute
 * window (and by the event-number state beyond it).
 */
import { createHash } from 'node:crypto';
import { SendMessageBatchCommand, type SQSClient } from '@aws-sdk/client-sqs';
import { MAX_CARRIED_RESOURCE_BYTES } from '../events/message-limits.js';
import type { ResourceEventMessage } from '../events/resource-event.js';
import { parseReference, type ResourceLike } from '../events/notification.js';

export interface QueuedMessage {
  readonly body: ResourceEventMessage;
  readonly groupId: string;
  readonly deduplicationId: string;
}

export interface EventQueue {
  /** Resolves once SQS accepted every message; throws {@link QueueSendError} otherwise. */
  send(messages: readonly QueuedMessage[]): Promise<void>;
}

export class QueueSendError extends Error {
  override name = 'QueueSendError';
  readonly failed: number;
  constructor(failed: number, options?: { cause?: unknown }) {
    super(`${failed} messages not accepted by the queue`, options);
    this.failed = failed;
  }
}

/** The patient a resource belongs to (`Patient/123`), from `subject`/`patient` or itself. */
export function patientOfResource(resource: ResourceLike): string | undefined {
  if (resource.resourceType === 'Patient') return resource.id ? `Patient/${resource.id}` : undefined;
  const holder = resource as { subject?: { reference?: unknown }; patient?: { reference?: unknown } };
  for (const r of [holder.subject?.reference, holder.patient?.reference]) {
    if (typeof r !== 'string') continue;
    const parsed = parseReference(r);
    if (parsed?.type === 'Patient') return parsed.relative;
  }
  return undefined;
}

export interface MessageInput {
  /** `Subscription/<id>`. */
  readonly subscription: string;
  /** `Type/id`. */
  readonly focus: string;
  readonly versionId?: string;
  readonly patient?: string;
  readonly eventNumber?: number;
  readonly timestamp: string;
  /** For events without a number (legacy posts, search catch-up): what else tells them apart. */
  readonly discriminator?: string;
  /**
   * The focus resource itself (a `full-resource` notification's copy): carried in the message
   * when its JSON is at most {@link MAX_CARRIED_RESOURCE_BYTES}, else left out (the consumer reads
   * it). Not part of the deduplication id.
   */
  readonly resource?: ResourceLike;
}

/** The resource to carry in a message, if it is small enough and is the focus's version. */
function carried(input: MessageInput): ResourceEventMessage['resource'] {
  const r = input.resource;
  if (!r?.id || `${r.resourceType}/${r.id}` !== input.focus) return undefined;
  if (input.versionId !== undefined && r.meta?.versionId !== input.versionId) return undefined;
  if (Buffer.byteLength(JSON.stringify(r)) > MAX_CARRIED_RESOURCE_BYTES) return undefined;
  return r as ResourceEventMessage['resource'];
}

export function deduplicationId(input: MessageInput): string {
  return createHash('sha256')
    .update(
      [
        input.subscription,
        input.eventNumber ?? '-',
        input.focus,
        input.versionId ?? '-',
        input.eventNumber === undefined ? (input.discriminator ?? '-') : '',
      ].join('\n'),
    )
    .digest('hex');
}

export function buildMessage(input: MessageInput): QueuedMessage {
  const body: ResourceEventMessage = {
    v: 1,
    focus: input.focus,
    ...(input.versionId ? { versionId: input.versionId } : {}),
    action: 'update',
    ...(input.patient ? { patient: input.patient } : {}),
    subscription: input.subscription,
    ...(input.eventNumber === undefined ? {} : { eventNumber: String(input.eventNumber) }),
    timestamp: input.timestamp,
  };
  const resource = carried(input);
  if (resource) body.resource = resource;
  return { body, groupId: input.patient ?? input.focus, deduplicationId: deduplicationId(input) };
}

export interface SqsEventQueueOptions {
  readonly client: SQSClient;
  readonly queueUrl: string;
  /** Attempts for entries SQS refused with a server fault. Default 3. */
  readonly attempts?: number;
  /** Pause between attempts in ms. Default 100 (doubled each time). */
  readonly backoffMs?: number;
  readonly sleep?: (ms: number) => Promise<void>;
}

const realSleep = (ms: number): Promise<void> =>
  new Promise((resolve) => {
    setTimeout(resolve, ms);
  });

/** SQS's limits on one SendMessageBatch: 10 entries, 256 KiB of bodies in all. */
const BATCH_ENTRIES = 10;
const BATCH_BYTES = 256 * 1024;

/** Messages in order, cut into batches within SQS's entry and size limits. */
function batches(messages: readonly QueuedMessage[]): QueuedMessage[][] {
  const out: QueuedMessage[][] = [];
  let current: QueuedMessage[] = [];
  let bytes = 0;
  for (const m of messages) {
    const size = Buffer.byteLength(JSON.stringify(m.body));
    if (current.length && (current.length === BATCH_ENTRIES || bytes + size > BATCH_BYTES)) {
      out.push(current);
      current = [];
      bytes = 0;
    }
    current.push(m);
    bytes += size;
  }
  if (current.length) out.push(current);
  return out;
}

/** SendMessageBatch within SQS's limits; entries failed by a server fault are retried. */
export function createSqsEventQueue(opts: SqsEventQueueOptions): EventQueue {
  const attempts = opts.attempts ?? 3;
  const sleep = opts.sleep ?? realSleep;
  const backoff = opts.backoffMs ?? 100;
  const sendChunk = async (chunk: readonly QueuedMessage[]): Promise<void> => {
    let pending = chunk.map((m, i) => ({ id: String(i), m }));
    for (let attempt = 1; ; attempt++) {
      let result;
      try {
        result = await opts.client.send(
          new SendMessageBatchCommand({
            QueueUrl: opts.queueUrl,
            Entries: pending.map(({ id, m }) => ({
              Id: id,
              MessageBody: JSON.stringify(m.body),
              MessageGroupId: m.groupId,
              MessageDeduplicationId: m.deduplicationId,
            })),
          }),
        );
      } catch (err) {
        // The SDK has already retried what it deems retryable.
        throw new QueueSendError(pending.length, { cause: err });
      }
      const failed = result.Failed ?? [];
      if (!failed.length) return;
      if (failed.some((f) => f.SenderFault) || attempt >= attempts) throw new QueueSendError(failed.length);
      const ids = new Set(failed.map((f) => f.Id));
      pending = pending.filter((p) => ids.has(p.id));
      await sleep(backoff * 2 ** (attempt - 1));
    }
  };
  return {
    async send(messages) {
      for (const chunk of batches(messages)) await sendChunk(chunk);
    },
  };
}
