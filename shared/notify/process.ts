/**
 * What the notify function does with an authenticated notification:
 * - handshake / heartbeat / query-status: acknowledge, record the sender's event count (a
 *   count above what was queued is a gap, caught up at once);
 * - event-notification / query-event: drop event numbers already queued, queue the others
 *   (one message per event), catch up on gaps (and on `empty`-content events, which carry no
 *   focus) through `$events` or a `_lastUpdated` search;
 * - legacy rest-hook: a resource body is queued as it is; no body searches the subscription's
 *   resource types for changes since the last one seen.
 *
 * Messages are sent before the state is written: a crash in between re-queues on the sender's
 * retry (same deduplication ids; the resource-event side is idempotent), never loses. The two
 * are not overlapped on purpose: the consumer starts on the send, not on the state write, so
 * overlapping would only shorten notify's answer, and a state write that lands while the send
 * fails (or the function dies mid-send) would record numbers as queued that are not: the
 * sender's retry would then be dropped as a duplicate and the event lost.
 */
import { createHash } from 'node:crypto';
import {
  parseNotificationBundle,
  type InboundNotification,
  type NotificationEvent,
  type NotificationType,
  type ResourceLike,
  type SubscriptionNotification,
} from '../events/notification.js';
import { errorFields, type Logger } from '../log.js';
import { isWrittenByFhirAnalytics } from '../reports/labels.js';
import type { SubscriptionRegistration } from './auth.js';
import type { CatchUpSource } from './catch-up.js';
import { buildMessage, patientOfResource, type EventQueue, type QueuedMessage } from './queue.js';
import {
  applyStateChange,
  initialState,
  isQueued,
  missingNumbers,
  type SubscriptionState,
  type SubscriptionStateStore,
} from './state.js';

export interface ProcessPorts {
  readonly queue: EventQueue;
  readonly state: SubscriptionStateStore;
  readonly catchUp: CatchUpSource;
  readonly logger: Logger;
  readonly clock?: () => Date;
  /** Most resources one `_lastUpdated` search may queue per resource type. Default 1000. */
  readonly searchMax?: number;
  /** How far back the first legacy ping of a subscription looks, in ms. Default 5 minutes. */
  readonly pingLookbackMs?: number;
}

export interface NotifyResult {
  readonly kind: NotificationType | 'legacy-resource' | 'legacy-ping';
  readonly subscription: string;
  /** Messages accepted by the queue. */
  readonly queued: number;
  /** Event numbers dropped because they were queued before. */
  readonly duplicates: number;
  /** Resources this system wrote itself, not queued. */
  readonly ignored: number;
  /** Gap numbers filled, and how. */
  readonly caughtUp: number;
  readonly catchUpMethod?: 'events' | 'search';
  /** Gap numbers still missing after this notification (retried on the next one). */
  readonly openGap: number;
}

interface Built {
  readonly messages: QueuedMessage[];
  ignored: number;
}

function eventMessage(
  subscription: string,
  event: NotificationEvent,
  carrier: SubscriptionNotification,
  now: string,
  built: Built,
): void {
  const focus = event.focus;
  if (!focus) return;
  const resource = carrier.resources.get(focus.relative);
  if (resource && isWrittenByFhirAnalytics(resource)) {
    built.ignored++;
    return;
  }
  const versionId = resource?.meta?.versionId ?? focus.version;
  const patient =
    (resource ? patientOfResource(resource) : undefined) ??
    event.additionalContext.find((r) => r.type === 'Patient')?.relative ??
    (focus.type === 'Patient' ? focus.relative : undefined);
  built.messages.push(
    buildMessage({
      subscription,
      focus: focus.relative,
      ...(versionId ? { versionId } : {}),
      ...(patient ? { patient } : {}),
      eventNumber: event.eventNumber,
      timestamp: event.timestamp ?? carrier.timestamp ?? now,
      ...(resource ? { resource } : {}),
    }),
  );
}

function resourceMessage(
  subscription: string,
  resource: ResourceLike & { id: string },
  now: string,
  built: Built,
): void {
  if (isWrittenByFhirAnalytics(resource)) {
    built.ignored++;
    return;
  }
  const patient = patientOfResource(resource);
  const versionId = resource.meta?.versionId;
  built.messages.push(
    buildMessage({
      subscription,
      focus: `${resource.resourceType}/${resource.id}`,
      ...(versionId ? { versionId } : {}),
      ...(patient ? { patient } : {}),
      timestamp: resource.meta?.lastUpdated ?? now,
      discriminator:
        resource.meta?.lastUpdated ?? createHash('sha256').update(JSON.stringify(resource)).digest('hex'),
    }),
  );
}

const later = (a: string | undefined, b: string | undefined): string | undefined =>
  a === undefined ? b : b === undefined ? a : Date.parse(a) >= Date.parse(b) ? a : b;

/** `_lastUpdated` searches over the registered types (and `extraTypes`), `ge since` and `le until`. */
async function searchChanges(
  ports: ProcessPorts,
  reg: SubscriptionRegistration,
  extraTypes: Iterable<string>,
  bounds: { since: string; until?: string },
  subscription: string,
  now: string,
  built: Built,
): Promise<{ newest: string | undefined; types: number }> {
  const types = new Map<string, Record<string, string>>(Object.entries(reg.resourceTypes));
  for (const t of extraTypes) if (!types.has(t)) types.set(t, {});
  let newest: string | undefined;
  const found: (ResourceLike & { id: string })[] = [];
  for (const [type, filter] of types) {
    const params: [string, string][] = [['_lastUpdated', `ge${bounds.since}`]];
    if (bounds.until) params.push(['_lastUpdated', `le${bounds.until}`]);
    params.push(...Object.entries(filter));
    for (const r of await ports.catchUp.search(type, params, ports.searchMax ?? 1000)) {
      if (!r.id) continue;
      found.push(r as ResourceLike & { id: string });
      newest = later(newest, r.meta?.lastUpdated);
    }
  }
  found.sort((a, b) => Date.parse(a.meta?.lastUpdated ?? now) - Date.parse(b.meta?.lastUpdated ?? now));
  for (const r of found) resourceMessage(subscription, r, now, built);
  return { newest, types: types.size };
}

interface CatchUp {
  readonly covered: Set<number>;
  /** The time up to which the search fallback covered, for the numbers it covered. */
  readonly searchedUntil?: string;
  readonly method?: 'events' | 'search';
}

async function catchUp(
  ports: ProcessPorts,
  reg: SubscriptionRegistration,
  n: SubscriptionNotification,
  current: SubscriptionState,
  missing: readonly number[],
  now: string,
  built: Built,
  log: Logger,
): Promise<CatchUp> {
  const subscription = n.subscription.relative;
  const wanted = new Set(missing);
  const covered = new Set<number>();
  const lo = missing[0] ?? 0;
  const hi = missing[missing.length - 1] ?? 0;
  let method: CatchUp['method'];
  try {
    const replay = parseNotificationBundle(await ports.catchUp.events(n.subscription.id, lo, hi));
    if (replay.subscription.id === n.subscription.id) {
      for (const e of replay.events) {
        if (!wanted.has(e.eventNumber) || covered.has(e.eventNumber) || !e.focus) continue;
        eventMessage(subscription, e, replay, now, built);
        covered.add(e.eventNumber);
      }
      method = 'events';
    }
  } catch (err) {
    log.warn('$events catch-up failed', { from: lo, to: hi, ...errorFields(err) });
  }
  const remaining = missing.filter((x) => !covered.has(x));
  if (!remaining.length) return { covered, ...(method ? { method } : {}) };

  // Search fallback: from the last contiguous event's time to the first event after the gap.
  const last = remaining[remaining.length - 1] ?? 0;
  const after = n.events
    .filter((e) => e.eventNumber > last && e.timestamp)
    .sort((a, b) => a.eventNumber - b.eventNumber)[0]?.timestamp;
  const until = after ?? n.timestamp ?? now;
  const since = current.highWaterTime ?? current.createdAt;
  const focusTypes = n.events.flatMap((e) => (e.focus ? [e.focus.type] : []));
  try {
    const { types } = await searchChanges(ports, reg, focusTypes, { since, until }, subscription, now, built);
    if (!types) {
      log.warn('gap not recoverable: no $events and no resource types', { missing: remaining.length });
      return { covered, ...(method ? { method } : {}) };
    }
    for (const x of remaining) covered.add(x);
    return { covered, searchedUntil: until, method: 'search' };
  } catch (err) {
    log.warn('search catch-up failed', { missing: remaining.length, ...errorFields(err) });
    return { covered, ...(method ? { method } : {}) };
  }
}

interface StateRead {
  readonly stored: SubscriptionState | undefined;
  readonly current: SubscriptionState;
  /** The notification's events not queued before, by number. */
  readonly fresh: Map<number, NotificationEvent>;
  readonly duplicates: number;
  /** Fresh events that carry a focus, in number order: queued directly. */
  readonly direct: NotificationEvent[];
  /** Numbers up to `upTo` neither queued before nor carried with a focus: to catch up. */
  readonly missing: number[];
}

async function readState(
  ports: ProcessPorts,
  subscription: string,
  events: readonly NotificationEvent[],
  upTo: number,
  baseline: number,
  now: string,
  freshRead: boolean,
): Promise<StateRead> {
  const stored = await ports.state.get(subscription, { fresh: freshRead });
  const current = stored ?? initialState(subscription, baseline, now);
  const fresh = new Map<number, NotificationEvent>();
  let duplicates = 0;
  for (const e of events) {
    if (isQueued(current, e.eventNumber) || fresh.has(e.eventNumber)) duplicates++;
    else fresh.set(e.eventNumber, e);
  }
  const direct = [...fresh.values()].filter((e) => e.focus).sort((a, b) => a.eventNumber - b.eventNumber);
  const directNumbers = new Set(direct.map((e) => e.eventNumber));
  const missing = missingNumbers(current, Math.max(current.highWater, upTo)).filter(
    (x) => !directNumbers.has(x),
  );
  return { stored, current, fresh, duplicates, direct, missing };
}

async function processBundle(
  ports: ProcessPorts,
  reg: SubscriptionRegistration,
  n: SubscriptionNotification,
  now: string,
  log: Logger,
): Promise<NotifyResult> {
  const subscription = n.subscription.relative;
  const carriesEvents = n.type === 'event-notification' || n.type === 'query-event';
  const events = carriesEvents ? n.events : [];
  const numbers = events.map((e) => e.eventNumber);
  // A subscription heard of for the first time: what came before is taken as done.
  const baseline = numbers.length ? Math.min(...numbers) - 1 : (n.eventsSinceSubscriptionStart ?? 0);
  const upTo = Math.max(...numbers, n.eventsSinceSubscriptionStart ?? 0);
  // The state as this container last knew it (a cache); a gap in it is checked against the store.
  let read = await readState(ports, subscription, events, upTo, baseline, now, false);
  if (read.missing.length > 0) read = await readState(ports, subscription, events, upTo, baseline, now, true);
  const { stored, current, fresh, duplicates, direct, missing } = read;
  if (!stored) log.info('subscription first seen', { subscription, baseline });

  const built: Built = { messages: [], ignored: 0 };
  for (const e of direct) eventMessage(subscription, e, n, now, built);
  const caught = missing.length
    ? await catchUp(ports, reg, n, current, missing, now, built, log)
    : { covered: new Set<number>() };
  await ports.queue.send(built.messages);

  const { abandoned } = await applyStateChange(
    ports.state,
    subscription,
    {
      queued: [
        ...direct.map((e): [number, string | undefined] => [e.eventNumber, e.timestamp]),
        ...[...caught.covered].map((x): [number, string | undefined] => [
          x,
          caught.searchedUntil ?? fresh.get(x)?.timestamp,
        ]),
      ],
      ...(n.eventsSinceSubscriptionStart === undefined
        ? {}
        : { eventsSinceStart: n.eventsSinceSubscriptionStart }),
      seenAt: now,
    },
    () => initialState(subscription, baseline, now),
  );
  if (abandoned.length) log.error('event numbers given up', { subscription, numbers: abandoned });
  return {
    kind: n.type,
    subscription,
    queued: built.messages.length,
    duplicates,
    ignored: built.ignored,
    caughtUp: caught.covered.size,
    ...(caught.method ? { catchUpMethod: caught.method } : {}),
    openGap: missing.length - caught.covered.size,
  };
}

async function processPing(
  ports: ProcessPorts,
  reg: SubscriptionRegistration,
  subscription: string,
  now: string,
  log: Logger,
): Promise<NotifyResult> {
  const stored = await ports.state.get(subscription);
  const since =
    stored?.highWaterTime ?? new Date(Date.parse(now) - (ports.pingLookbackMs ?? 300_000)).toISOString();
  const built: Built = { messages: [], ignored: 0 };
  const { newest, types } = await searchChanges(ports, reg, [], { since }, subscription, now, built);
  if (!types) log.warn('legacy ping without resource types to search', { subscription });
  await ports.queue.send(built.messages);
  await applyStateChange(ports.state, subscription, { caughtUpTo: newest ?? since, seenAt: now }, () =>
    initialState(subscription, 0, now),
  );
  return {
    kind: 'legacy-ping',
    subscription,
    queued: built.messages.length,
    duplicates: 0,
    ignored: built.ignored,
    caughtUp: 0,
    openGap: 0,
  };
}

/** Processes an authenticated notification for the registered subscription `reg`. */
export async function processNotification(
  ports: ProcessPorts,
  reg: SubscriptionRegistration,
  inbound: InboundNotification,
): Promise<NotifyResult> {
  const now = (ports.clock?.() ?? new Date()).toISOString();
  const subscription = `Subscription/${reg.id}`;
  const log = ports.logger.child({ subscription });
  switch (inbound.kind) {
    case 'bundle':
      return processBundle(ports, reg, inbound.notification, now, log);
    case 'ping':
      return processPing(ports, reg, subscription, now, log);
    case 'resource': {
      const built: Built = { messages: [], ignored: 0 };
      resourceMessage(subscription, inbound.resource, now, built);
      await ports.queue.send(built.messages);
      await applyStateChange(ports.state, subscription, { seenAt: now }, () =>
        initialState(subscription, 0, now),
      );
      return {
        kind: 'legacy-resource',
        subscription,
        queued: built.messages.length,
        duplicates: 0,
        ignored: built.ignored,
        caughtUp: 0,
        openGap: 0,
      };
    }
  }
}
