/**
 * The R4 backport notification shapes: the SubscriptionStatus `Parameters`
 * (`backport-subscription-status-r4`) and the notification Bundle (`type: history`,
 * `backport-subscription-notification-r4`) that carries it as `entry[0]`, followed, for
 * `id-only` and `full-resource` content, by one entry per focus resource.
 */
import { randomUUID } from 'node:crypto';
import type { Bundle, BundleEntry, Parameters, ParametersParameter, Resource } from '@medplum/fhirtypes';
import type { PayloadContent } from './subscription-topics.js';

const IG = 'http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition';
export const STATUS_PROFILE = `${IG}/backport-subscription-status-r4`;
export const NOTIFICATION_PROFILE = `${IG}/backport-subscription-notification-r4`;

export type NotificationType =
  'handshake' | 'heartbeat' | 'event-notification' | 'query-status' | 'query-event';
export type SubscriptionStatusCode = 'requested' | 'active' | 'error' | 'off' | 'entered-in-error';

/** One event as stored for `$events` and sent in an event notification. */
export interface StoredEvent {
  readonly number: number;
  readonly timestamp: string;
  readonly interaction: 'create' | 'update' | 'delete';
  /** `Type/id/_history/version`. */
  readonly focus: string;
  /** The version that raised the event. */
  readonly resource: Resource;
}

export interface StatusInput {
  readonly subscriptionId: string;
  readonly topic: string;
  readonly status: SubscriptionStatusCode;
  readonly type: NotificationType;
  readonly eventsSinceStart: number;
  readonly error?: string;
}

export function statusParameters(
  input: StatusInput,
  events: readonly StoredEvent[],
  content: PayloadContent,
): Parameters {
  const parameter: ParametersParameter[] = [
    { name: 'subscription', valueReference: { reference: `Subscription/${input.subscriptionId}` } },
    { name: 'topic', valueCanonical: input.topic },
    { name: 'status', valueCode: input.status },
    { name: 'type', valueCode: input.type },
    { name: 'events-since-subscription-start', valueString: String(input.eventsSinceStart) },
  ];
  for (const e of events) {
    const part: ParametersParameter[] = [
      { name: 'event-number', valueString: String(e.number) },
      { name: 'timestamp', valueInstant: e.timestamp },
    ];
    if (content !== 'empty') part.push({ name: 'focus', valueReference: { reference: e.focus } });
    parameter.push({ name: 'notification-event', part });
  }
  if (input.error) parameter.push({ name: 'error', valueCodeableConcept: { text: input.error } });
  return {
    resourceType: 'Parameters',
    id: randomUUID(),
    meta: { profile: [STATUS_PROFILE] },
    parameter,
  };
}

/** A notification (or `$events` answer): `history` Bundle, status first, then the focus entries. */
export function notificationBundle(
  baseUrl: string,
  input: StatusInput,
  events: readonly StoredEvent[],
  content: PayloadContent,
  now: string,
): Bundle {
  const status = statusParameters(input, events, content);
  const entry: BundleEntry[] = [
    {
      fullUrl: `urn:uuid:${status.id ?? randomUUID()}`,
      resource: status,
      request: { method: 'GET', url: `${baseUrl}/Subscription/${input.subscriptionId}/$status` },
      response: { status: '200' },
    },
  ];
  if (content !== 'empty') {
    for (const e of events) {
      const { resourceType, id } = e.resource;
      const version = e.resource.meta?.versionId;
      entry.push({
        fullUrl: `${baseUrl}/${resourceType}/${id ?? ''}`,
        ...(content === 'full-resource' ? { resource: e.resource } : {}),
        request: {
          method: e.interaction === 'create' ? 'POST' : e.interaction === 'update' ? 'PUT' : 'DELETE',
          url: e.interaction === 'create' ? resourceType : `${resourceType}/${id ?? ''}`,
        },
        response: {
          status: e.interaction === 'create' ? '201' : e.interaction === 'update' ? '200' : '204',
          ...(version ? { etag: `W/"${version}"` } : {}),
        },
      });
    }
  }
  return {
    resourceType: 'Bundle',
    id: randomUUID(),
    meta: { profile: [NOTIFICATION_PROFILE] },
    type: 'history',
    timestamp: now,
    entry,
  };
}
