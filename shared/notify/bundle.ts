/**
 * Builds R4 Backport notification bundles (`Bundle.type = history`, a SubscriptionStatus
 * `Parameters` first): what a FHIR server posts, and what `$events` answers. Used by tests,
 * fixtures and fake servers; the receiver never needs it.
 */
import type { Bundle, BundleEntry, Parameters, ParametersParameter, Resource } from '@medplum/fhirtypes';
import type { NotificationType } from '../events/notification.js';

export interface BundleEventInput {
  readonly eventNumber: number;
  readonly timestamp?: string;
  /** Reference of the focus (absent with `empty` content). */
  readonly focus?: string;
  readonly additionalContext?: readonly string[];
  /** With `full-resource` content: the focus resource, added as an entry. */
  readonly resource?: Resource;
}

export interface BundleInput {
  /** e.g. `https://ehr.example/fhir/Subscription/abc` or `Subscription/abc`. */
  readonly subscription: string;
  readonly topic?: string;
  readonly status?: 'requested' | 'active' | 'error' | 'off';
  readonly type: NotificationType;
  readonly eventsSinceSubscriptionStart?: number;
  readonly events?: readonly BundleEventInput[];
  readonly timestamp?: string;
}

export const STATUS_PROFILE =
  'http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription-status-r4';

export function buildNotificationBundle(input: BundleInput): Bundle {
  const parameter: ParametersParameter[] = [
    { name: 'subscription', valueReference: { reference: input.subscription } },
    { name: 'topic', valueCanonical: input.topic ?? 'http://example.org/SubscriptionTopic/observations' },
    { name: 'status', valueCode: input.status ?? 'active' },
    { name: 'type', valueCode: input.type },
  ];
  if (input.eventsSinceSubscriptionStart !== undefined) {
    parameter.push({
      name: 'events-since-subscription-start',
      valueString: String(input.eventsSinceSubscriptionStart),
    });
  }
  const entries: BundleEntry[] = [];
  for (const e of input.events ?? []) {
    const part: ParametersParameter[] = [{ name: 'event-number', valueString: String(e.eventNumber) }];
    if (e.timestamp) part.push({ name: 'timestamp', valueInstant: e.timestamp });
    if (e.focus) part.push({ name: 'focus', valueReference: { reference: e.focus } });
    for (const c of e.additionalContext ?? [])
      part.push({ name: 'additional-context', valueReference: { reference: c } });
    parameter.push({ name: 'notification-event', part });
    if (e.resource) entries.push({ fullUrl: e.focus ?? '', resource: e.resource });
  }
  const status: Parameters = { resourceType: 'Parameters', meta: { profile: [STATUS_PROFILE] }, parameter };
  return {
    resourceType: 'Bundle',
    type: 'history',
    timestamp: input.timestamp ?? new Date().toISOString(),
    entry: [{ fullUrl: 'urn:uuid:status', resource: status }, ...entries],
  };
}
