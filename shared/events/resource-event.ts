/**
 * The queue message that carries one resource event from `functions/notify` (or the demo's
 * loader) to `functions/resource-event`. One message per focus resource; the FIFO group id
 * is the patient, so one patient's events are processed in order.
 */
import * as z from 'zod';

const REFERENCE = /^[A-Z][A-Za-z]+\/[A-Za-z0-9\-.]{1,64}$/;

export const ResourceEventMessageSchema = z.object({
  /** Message format version. */
  v: z.literal(1),
  /** The resource the event is about, e.g. `Observation/123`. */
  focus: z.string().regex(REFERENCE, 'a relative reference such as Observation/123'),
  /** The focus's version at the time of the event, when the sender knew it. */
  versionId: z.string().min(1).max(64).optional(),
  /** What happened to it. */
  action: z.enum(['create', 'update', 'delete']).default('update'),
  /** The patient the focus belongs to, when known (`Patient/123`): the FIFO group. */
  patient: z.string().regex(REFERENCE).optional(),
  /** Which subscription delivered it, and its event number there. */
  subscription: z.string().max(256).optional(),
  eventNumber: z.string().regex(/^\d+$/).optional(),
  /** When the event happened, per the sender (ISO 8601). */
  timestamp: z.iso.datetime({ offset: true }),
  /**
   * The focus resource as the sender sent it (`full-resource` notifications), when small
   * enough to travel in the message ({@link MAX_CARRIED_RESOURCE_BYTES}); else only the reference.
   * A copy of one version: the consumer confirms the current state before acting on it.
   */
  resource: z
    .object({
      resourceType: z.string().regex(/^[A-Z][A-Za-z]+$/),
      id: z.string().regex(/^[A-Za-z0-9\-.]{1,64}$/),
      meta: z.object({ versionId: z.string().optional() }).loose().optional(),
    })
    .loose()
    .optional(),
});
export type ResourceEventMessage = z.infer<typeof ResourceEventMessageSchema>;

export { MAX_CARRIED_RESOURCE_BYTES } from './message-limits.js';

/** Why a queue record could not be read, without echoing its content. */
export class EventParseError extends Error {
  override name = 'EventParseError';
  readonly reason: 'not-json' | 'not-a-resource-event';
  readonly path: string | undefined;
  constructor(reason: 'not-json' | 'not-a-resource-event', path?: string) {
    super(path ? `${reason} at ${path}` : reason);
    this.reason = reason;
    this.path = path;
  }
}

export function parseResourceEvent(body: string): ResourceEventMessage {
  let raw: unknown;
  try {
    raw = JSON.parse(body);
  } catch {
    throw new EventParseError('not-json');
  }
  const parsed = ResourceEventMessageSchema.safeParse(raw);
  if (!parsed.success) {
    const first = parsed.error.issues[0];
    throw new EventParseError('not-a-resource-event', first?.path.join('.') || '(root)');
  }
  return parsed.data;
}

/** The minimal SQS record shape the handler relies on (the rest of Lambda's record is ignored). */
export const SqsRecordSchema = z.object({
  messageId: z.string().min(1),
  body: z.string(),
  attributes: z
    .object({
      ApproximateReceiveCount: z.string().optional(),
      MessageGroupId: z.string().optional(),
    })
    .loose()
    .optional(),
});

export const SqsEventSchema = z.object({
  Records: z.array(SqsRecordSchema),
});
export type SqsEvent = z.infer<typeof SqsEventSchema>;
export type SqsRecord = z.infer<typeof SqsRecordSchema>;
