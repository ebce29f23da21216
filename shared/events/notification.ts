/**
 * Inbound shapes of `functions/notify`: FHIR Subscription notifications.
 *
 * - R4 Backport IG (topic-based) notification bundles: `Bundle.type = history`, `entry[0]` a
 *   `Parameters` (SubscriptionStatus) with `subscription`, `topic`, `status`, `type`,
 *   `events-since-subscription-start` and `notification-event` parts (`event-number`,
 *   `timestamp`, `focus`, `additional-context`); content `empty`, `id-only` or `full-resource`
 *   (the resources in the entries after the first).
 * - Legacy R4 rest-hook posts: no body at all (a ping: "something changed"), or the changed
 *   resource itself.
 *
 * Every failure names the failing element as a FHIRPath-like location
 * (`Bundle.entry[0].resource.parameter[3].part[1].valueString`), never its value.
 */
import * as z from 'zod';

/** `Type/id` with an optional `/_history/version`, relative or after an absolute base. */
const REFERENCE =
  /^(?:(?<base>https?:\/\/[^\s?#]+)\/)?(?<type>[A-Z][A-Za-z]{1,63})\/(?<id>[A-Za-z0-9\-.]{1,64})(?:\/_history\/(?<version>[A-Za-z0-9\-.]{1,64}))?$/;
const DIGITS = /^\d{1,15}$/;

export interface ParsedReference {
  readonly type: string;
  readonly id: string;
  /** `Type/id`, without base or version. */
  readonly relative: string;
  readonly version?: string;
}

/** A literal reference as `Type/id` (+ version), or undefined when it is not one. */
export function parseReference(reference: string): ParsedReference | undefined {
  const g = REFERENCE.exec(reference)?.groups;
  if (!g?.type || !g.id) return undefined;
  return {
    type: g.type,
    id: g.id,
    relative: `${g.type}/${g.id}`,
    ...(g.version ? { version: g.version } : {}),
  };
}

const ReferenceValue = z
  .object({ reference: z.string().refine((r) => parseReference(r) !== undefined, 'a literal reference') })
  .loose();
const Instant = z.iso.datetime({ offset: true });

export const NOTIFICATION_TYPES = [
  'handshake',
  'heartbeat',
  'event-notification',
  'query-status',
  'query-event',
] as const;
export type NotificationType = (typeof NOTIFICATION_TYPES)[number];

/** Schemas of the parameters we read, by name; other names are allowed and ignored. */
const STATUS_PARAMETERS: Readonly<Record<string, z.ZodType>> = {
  subscription: z.object({ valueReference: ReferenceValue }).loose(),
  topic: z.union([
    z.object({ valueCanonical: z.string().min(1) }).loose(),
    z.object({ valueUri: z.string().min(1) }).loose(),
  ]),
  status: z
    .object({ valueCode: z.enum(['requested', 'active', 'error', 'off', 'entered-in-error']) })
    .loose(),
  type: z.object({ valueCode: z.enum(NOTIFICATION_TYPES) }).loose(),
  'events-since-subscription-start': z
    .object({ valueString: z.string().regex(DIGITS, 'a non-negative integer') })
    .loose(),
  'notification-event': z.object({ part: z.array(z.object({ name: z.string() }).loose()).min(1) }).loose(),
};

const EVENT_PARTS: Readonly<Record<string, z.ZodType>> = {
  'event-number': z.object({ valueString: z.string().regex(DIGITS, 'a non-negative integer') }).loose(),
  timestamp: z.object({ valueInstant: Instant }).loose(),
  focus: z.object({ valueReference: ReferenceValue }).loose(),
  'additional-context': z.object({ valueReference: ReferenceValue }).loose(),
};

type Named = { name: string } & Record<string, unknown>;

/** Checks each named element against its schema, reporting issues at its own index. */
function checkNamed(schemas: Readonly<Record<string, z.ZodType>>, required: readonly string[], what: string) {
  return (items: Named[], ctx: z.core.$RefinementCtx<Named[]>): void => {
    items.forEach((item, i) => {
      const schema = schemas[item.name];
      if (!schema) return;
      const parsed = schema.safeParse(item);
      for (const issue of parsed.error?.issues ?? []) {
        ctx.addIssue({ code: 'custom', message: issue.message, path: [i, ...issue.path] });
      }
    });
    for (const name of required) {
      if (!items.some((p) => p.name === name))
        ctx.addIssue({ code: 'custom', message: `${what} '${name}' missing` });
    }
  };
}

const NamedArray = z.array(z.object({ name: z.string().min(1) }).loose());

const EventPartsSchema = NamedArray.superRefine(checkNamed(EVENT_PARTS, ['event-number'], 'part'));

const StatusParametersSchema = z
  .object({
    resourceType: z.literal('Parameters'),
    parameter: NamedArray.superRefine(checkNamed(STATUS_PARAMETERS, ['subscription', 'type'], 'parameter')),
  })
  .loose()
  .superRefine((params, ctx) => {
    params.parameter.forEach((p, i) => {
      if (p.name !== 'notification-event' || !Array.isArray(p.part)) return;
      const parsed = EventPartsSchema.safeParse(p.part);
      for (const issue of parsed.error?.issues ?? []) {
        ctx.addIssue({
          code: 'custom',
          message: issue.message,
          path: ['parameter', i, 'part', ...issue.path],
        });
      }
    });
  });

const ResourceShape = z
  .object({
    resourceType: z.string().regex(/^[A-Z][A-Za-z]{1,63}$/, 'a resource type'),
    id: z
      .string()
      .regex(/^[A-Za-z0-9\-.]{1,64}$/, 'a FHIR id')
      .optional(),
    meta: z
      .object({
        versionId: z.string().min(1).max(64).optional(),
        lastUpdated: Instant.optional(),
      })
      .loose()
      .optional(),
  })
  .loose();
export type ResourceLike = z.infer<typeof ResourceShape>;

const OtherEntry = z.object({ fullUrl: z.string().optional(), resource: ResourceShape.optional() }).loose();

export const NotificationBundleSchema = z
  .object({
    resourceType: z.literal('Bundle'),
    type: z.literal('history'),
    timestamp: Instant.optional(),
    entry: z.tuple(
      [z.object({ fullUrl: z.string().optional(), resource: StatusParametersSchema }).loose()],
      OtherEntry,
    ),
  })
  .loose();

/** A legacy rest-hook body: the changed resource itself (an id is required to name it). */
export const LegacyResourceSchema = ResourceShape.and(z.object({ id: z.string() }));

export interface NotificationEvent {
  readonly eventNumber: number;
  readonly timestamp?: string;
  /** Absent with `empty` content. */
  readonly focus?: ParsedReference;
  readonly additionalContext: readonly ParsedReference[];
}

/** A parsed notification bundle, reduced to what the receiver uses. */
export interface SubscriptionNotification {
  /** `Subscription/<id>` as named by the sender. */
  readonly subscription: ParsedReference;
  readonly topic?: string;
  readonly status?: string;
  readonly type: NotificationType;
  readonly eventsSinceSubscriptionStart?: number;
  readonly timestamp?: string;
  readonly events: readonly NotificationEvent[];
  /** Resources carried with `full-resource` content, by `Type/id`. */
  readonly resources: ReadonlyMap<string, ResourceLike>;
}

export type InboundNotification =
  | { readonly kind: 'bundle'; readonly notification: SubscriptionNotification }
  | { readonly kind: 'resource'; readonly resource: ResourceLike & { id: string } }
  | { readonly kind: 'ping' };

/** Why a body is not a notification: the first failing location and a message without data. */
export class NotificationShapeError extends Error {
  override name = 'NotificationShapeError';
  readonly location: string;
  constructor(location: string, message: string) {
    super(`${message} at ${location}`);
    this.location = location;
  }
}

/** `['entry', 0, 'resource']` → `Bundle.entry[0].resource`. */
export function fhirPath(root: string, path: readonly PropertyKey[]): string {
  let out = root;
  for (const part of path) out += typeof part === 'number' ? `[${part}]` : `.${String(part)}`;
  return out;
}

function firstIssue(root: string, error: z.ZodError): NotificationShapeError {
  const issue = error.issues[0];
  return new NotificationShapeError(fhirPath(root, issue?.path ?? []), issue?.message ?? 'invalid');
}

function ref(value: unknown): ParsedReference {
  const r = parseReference((value as { reference: string }).reference);
  if (!r) throw new Error('unreachable: reference checked by the schema');
  return r;
}

function valueOf(items: readonly Named[], name: string): Record<string, unknown> | undefined {
  return items.find((p) => p.name === name);
}

function toEvent(parts: readonly Named[]): NotificationEvent {
  const number = valueOf(parts, 'event-number')?.valueString;
  const focus = valueOf(parts, 'focus')?.valueReference;
  const ts = valueOf(parts, 'timestamp')?.valueInstant;
  return {
    eventNumber: Number(number),
    ...(typeof ts === 'string' ? { timestamp: ts } : {}),
    ...(focus ? { focus: ref(focus) } : {}),
    additionalContext: parts.filter((p) => p.name === 'additional-context').map((p) => ref(p.valueReference)),
  };
}

/** Parses a notification bundle; throws {@link NotificationShapeError} naming the failing path. */
export function parseNotificationBundle(raw: unknown): SubscriptionNotification {
  const parsed = NotificationBundleSchema.safeParse(raw);
  if (!parsed.success) throw firstIssue('Bundle', parsed.error);
  const [first, ...rest] = parsed.data.entry;
  const params = first.resource.parameter as Named[];
  const since = valueOf(params, 'events-since-subscription-start')?.valueString;
  const topic = valueOf(params, 'topic');
  const status = valueOf(params, 'status')?.valueCode;
  const resources = new Map<string, ResourceLike>();
  for (const entry of rest) {
    const r = entry.resource;
    if (r?.id) resources.set(`${r.resourceType}/${r.id}`, r);
  }
  return {
    subscription: ref(valueOf(params, 'subscription')?.valueReference),
    ...(typeof topic?.valueCanonical === 'string' ? { topic: topic.valueCanonical } : {}),
    ...(typeof topic?.valueUri === 'string' ? { topic: topic.valueUri } : {}),
    ...(typeof status === 'string' ? { status } : {}),
    type: valueOf(params, 'type')?.valueCode as NotificationType,
    ...(typeof since === 'string' ? { eventsSinceSubscriptionStart: Number(since) } : {}),
    ...(parsed.data.timestamp ? { timestamp: parsed.data.timestamp } : {}),
    events: params.filter((p) => p.name === 'notification-event').map((p) => toEvent(p.part as Named[])),
    resources,
  };
}

/**
 * Any inbound body: no body is a legacy ping, a Bundle must be a notification bundle, any
 * other resource is a legacy rest-hook payload. `raw` is the parsed JSON (or undefined).
 */
export function parseInbound(raw: unknown): InboundNotification {
  if (raw === undefined) return { kind: 'ping' };
  if (
    typeof raw === 'object' &&
    raw !== null &&
    (raw as { resourceType?: unknown }).resourceType === 'Bundle'
  ) {
    return { kind: 'bundle', notification: parseNotificationBundle(raw) };
  }
  const parsed = LegacyResourceSchema.safeParse(raw);
  if (!parsed.success) throw firstIssue('Resource', parsed.error);
  return { kind: 'resource', resource: parsed.data };
}

/** The subscription a bundle names, read without validating the rest (to pick its credentials). */
export function peekSubscription(raw: unknown): ParsedReference | undefined {
  const entry = (raw as { entry?: unknown } | null | undefined)?.entry;
  if (!Array.isArray(entry)) return undefined;
  const params = (entry[0] as { resource?: { parameter?: unknown } } | undefined)?.resource?.parameter;
  if (!Array.isArray(params)) return undefined;
  for (const p of params as unknown[]) {
    const named = p as { name?: unknown; valueReference?: { reference?: unknown } } | null;
    if (named?.name === 'subscription' && typeof named.valueReference?.reference === 'string') {
      return parseReference(named.valueReference.reference);
    }
  }
  return undefined;
}

/**
 * The HTTP event fields the notify function reads. API Gateway HTTP API (payload 2.0) and
 * REST API proxy (1.0) events both have them.
 */
export const NotifyHttpEventSchema = z
  .object({
    headers: z.record(z.string(), z.string().optional()).nullish(),
    body: z.string().nullish(),
    isBase64Encoded: z.boolean().optional(),
    pathParameters: z.record(z.string(), z.string().optional()).nullish(),
  })
  .loose();
export type NotifyHttpEvent = z.infer<typeof NotifyHttpEventSchema>;
