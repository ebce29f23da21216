/**
 * Topic-based Subscriptions (HL7 Subscriptions R5 Backport IG, R4 profile) for the embedded
 * FHIR server: the sending side of "EHR event triggers". `installSubscriptions(server)` watches
 * the repository's committed writes and POSTs notification bundles to `rest-hook` endpoints.
 *
 * - Topics: a fixed table (`subscription-topics.ts`): `observation-write` and
 *   `imagingstudy-write` under `http://fhir-analytics.example/SubscriptionTopic/`. A Subscription
 *   names one in `criteria` and narrows it with `backport-filter-criteria` extensions on
 *   `_criteria` (`Observation?code=http://loinc.org|2345-7&patient=Patient/1`, ANDed, the
 *   repository's search semantics, modifiers such as `:not` included, `_tag:not` too).
 * - Lifecycle: a created (or re-requested, or re-configured) Subscription with status
 *   `requested` or `active` gets a handshake; delivered → `active`, not → `error` with
 *   `Subscription.error`. An unusable Subscription (unknown topic, bad filter, no endpoint,
 *   non-JSON payload) is set to `error` with the reason. `off` stops deliveries; delete forgets it.
 * - Events: one bundle per event, numbered per subscription from 1, in commit order, delivered
 *   in order by one worker per subscription, never blocking the write; `focus` is the versioned
 *   reference `Observation/1/_history/2`; payload `empty | id-only | full-resource`
 *   (`channel._payload` extension `backport-payload-content`; default `id-only` when
 *   `channel.payload` is set, else `empty`). Events are stored (bounded) for `$events`, and keep
 *   being numbered while the subscription is in `error`, so a receiver sees the gap after it
 *   reactivates it and can replay it.
 * - Heartbeats every `backport-heartbeat-period` seconds (times `heartbeatScale`) when nothing
 *   else was sent in the period; `backport-timeout` bounds each attempt (default 10 s).
 * - Failures: each notification is tried `retry.attempts` times with doubling backoff; then the
 *   subscription goes to `error` and its queue is dropped (the events stay replayable). Sending,
 *   signing and retries are in `subscription-delivery.ts`.
 * - Signing: `signingSecretFor(subscription)` returning a secret adds
 *   `X-Signature: sha256=<hex HMAC-SHA256(secret, exact body bytes)>`; `channel.header` lines
 *   are sent as given.
 * - Operations: `$status` and `$events` (`subscription-operations.ts`).
 * - Faults for receiver tests: `deliveryFault` drops, duplicates or reorders event notifications.
 */
import type { WithId } from '@medplum/core';
import type { Bundle, Resource, Subscription } from '@medplum/fhirtypes';
import { errorFields, silentLogger } from '../../shared/log.js';
import { ensureFhirDefinitions } from './definitions.js';
import { createDeliver, newCounters } from './subscription-delivery.js';
import type { ChangeEvent, RunningFhirServer } from './server.js';
import type {
  NotificationType,
  StatusInput,
  StoredEvent,
  SubscriptionStatusCode,
} from './subscription-bundles.js';
import { notificationBundle } from './subscription-bundles.js';
import type { SubscriptionRegistry, SubscriptionView } from './subscription-operations.js';
import { subscriptionOperations } from './subscription-operations.js';
import type { InstalledSubscriptions, Job, State, SubscriptionsOptions } from './subscription-types.js';
import { SubscriptionConfigError, configKey, matchesTopic, readSubscription } from './subscription-topics.js';

export { TOPICS, TOPIC_BASE, EXT as BACKPORT_EXTENSIONS } from './subscription-topics.js';
export type {
  DeliveryFault,
  InstalledSubscriptions,
  SubscriptionStats,
  SubscriptionsOptions,
} from './subscription-types.js';

function criteriaOf(subscription: Subscription): string {
  const criteria = (subscription.criteria as string | undefined) ?? '';
  return criteria;
}

const RECORDING: ReadonlySet<SubscriptionStatusCode> = new Set(['requested', 'active', 'error']);

export function installSubscriptions(
  server: RunningFhirServer,
  opts: SubscriptionsOptions = {},
): InstalledSubscriptions {
  ensureFhirDefinitions();
  const { repo } = server;
  const fetchImpl = opts.fetch ?? globalThis.fetch;
  const now = opts.now ?? ((): Date => new Date());
  const log = opts.logger ?? silentLogger;
  const scale = opts.heartbeatScale ?? 1;
  const attempts = Math.max(1, opts.retry?.attempts ?? 4);
  const baseDelay = opts.retry?.baseDelayMs ?? 250;
  const maxDelay = opts.retry?.maxDelayMs ?? 5000;
  const maxStored = opts.maxStoredEvents ?? 10_000;
  let fault = opts.deliveryFault;
  const states = new Map<string, State>();
  const pending = new Set<Promise<unknown>>();
  const stopping = new AbortController();
  let closed = false;
  const counters = newCounters();

  const track = (p: Promise<unknown>): void => {
    const tracked = p.catch((err: unknown) => {
      log.warn('subscription task failed', errorFields(err));
    });
    pending.add(tracked);
    void tracked.finally(() => pending.delete(tracked));
  };

  const statusInput = (
    state: State,
    type: NotificationType,
    eventsSinceStart = state.eventCount,
  ): StatusInput => ({
    subscriptionId: state.id,
    topic: state.config?.topic.url ?? criteriaOf(state.resource),
    status: state.status,
    type,
    eventsSinceStart,
    ...(state.error ? { error: state.error } : {}),
  });

  /** Writes `status` (and `error`) onto the stored Subscription, unless it already says so. */
  const writeStatus = (state: State, status: NonNullable<Subscription['status']>, error?: string): void => {
    state.status = status;
    state.error = error;
    track(
      repo.withTransaction(async () => {
        let current: WithId<Subscription>;
        try {
          current = await repo.readResource<Subscription>('Subscription', state.id);
        } catch {
          return; // deleted meanwhile
        }
        if (states.get(state.id) !== state) return;
        if (current.status === status && current.error === error) return;
        const next: Subscription = { ...current, status };
        if (error) next.error = error;
        else delete next.error;
        state.seenStatus = status;
        await repo.updateResource(next);
      }),
    );
  };

  const stopHeartbeat = (state: State): void => {
    if (state.heartbeat) clearInterval(state.heartbeat);
    state.heartbeat = undefined;
  };

  const halt = (state: State): void => {
    stopHeartbeat(state);
    state.queue = [];
    state.heldBack = undefined;
    state.generation++;
  };

  const markError = (state: State, message: string): void => {
    log.warn('subscription error', { subscription: `Subscription/${state.id}` });
    halt(state);
    writeStatus(state, 'error', message);
  };

  const startHeartbeat = (state: State): void => {
    stopHeartbeat(state);
    const seconds = state.config?.heartbeatPeriod;
    if (!seconds || closed) return;
    const periodMs = Math.max(10, seconds * 1000 * scale);
    state.heartbeat = setInterval(() => {
      if (state.status !== 'active' || Date.now() - state.lastSentAt < periodMs * 0.9) return;
      if (state.queue.some((j) => j.type === 'heartbeat')) return;
      enqueue(state, { type: 'heartbeat', generation: state.generation });
    }, periodMs);
    state.heartbeat.unref();
  };

  const random = (): number => (fault?.random ?? Math.random)();

  const deliver = createDeliver({
    fetch: fetchImpl,
    ...(opts.signingSecretFor ? { signingSecretFor: opts.signingSecretFor } : {}),
    timeoutMs: opts.timeoutMs ?? 10_000,
    attempts,
    baseDelayMs: baseDelay,
    maxDelayMs: maxDelay,
    counters,
    stopping: stopping.signal,
    isClosed: () => closed,
    log,
    onExhausted: (state, message) => {
      markError(state, message);
    },
  });

  const bodyOf = (state: State, job: Job): string => {
    const content = state.config?.content ?? 'empty';
    const events = job.event ? [job.event] : [];
    const input = statusInput(state, job.type, job.event?.number);
    const bundle: Bundle = notificationBundle(server.baseUrl, input, events, content, now().toISOString());
    return JSON.stringify(bundle);
  };

  const processJob = async (state: State, job: Job): Promise<void> => {
    if (closed || job.generation !== state.generation) return;
    if (job.type !== 'handshake' && state.status !== 'active') return;
    if (job.type === 'event-notification') {
      if (fault?.dropRate && random() < fault.dropRate) {
        counters.dropped++;
        return;
      }
      const shuffle = fault?.shuffle === true ? 0.5 : fault?.shuffle || 0;
      if (shuffle && !state.heldBack && random() < shuffle) {
        state.heldBack = job;
        counters.reordered++;
        return;
      }
    }
    const body = bodyOf(state, job);
    const ok = await deliver(state, job, body);
    if (!ok) return;
    if (job.type === 'handshake') {
      counters.handshakes++;
      writeStatus(state, 'active');
      startHeartbeat(state);
    } else if (job.type === 'heartbeat') {
      counters.heartbeats++;
    } else {
      if (fault?.duplicateRate && random() < fault.duplicateRate) {
        counters.duplicated++;
        await deliver(state, job, body, false);
      }
      await releaseHeldBack(state, job);
    }
  };

  const releaseHeldBack = async (state: State, after?: Job): Promise<void> => {
    const held = state.heldBack;
    if (!held || held === after) return;
    state.heldBack = undefined;
    if (held.generation === state.generation && state.status === 'active')
      await deliver(state, held, bodyOf(state, held));
  };

  /** Drains the queue; a held-back notification waits for the next event or for flush(). */
  const run = async (state: State, release: boolean): Promise<void> => {
    for (let job = state.queue.shift(); job; job = state.queue.shift()) await processJob(state, job);
    if (release) await releaseHeldBack(state);
  };

  const kick = (state: State, release = false): void => {
    if (state.running || closed) return;
    const running = run(state, release).finally(() => {
      state.running = undefined;
      if (state.queue.length > 0) kick(state);
    });
    state.running = running;
    track(running);
  };

  function enqueue(state: State, job: Job): void {
    state.queue.push(job);
    kick(state);
  }

  const onSubscription = (event: ChangeEvent): void => {
    const resource = event.resource as WithId<Subscription>;
    const existing = states.get(resource.id);
    if (event.type === 'delete') {
      if (existing) halt(existing);
      states.delete(resource.id);
      return;
    }
    const key = configKey(resource);
    if (existing && existing.key === key && existing.seenStatus === resource.status) {
      existing.resource = resource;
      return;
    }
    const state: State = existing ?? {
      id: resource.id,
      resource,
      key,
      seenStatus: undefined,
      status: 'requested',
      eventCount: 0,
      events: [],
      queue: [],
      lastSentAt: 0,
      generation: 0,
    };
    states.set(state.id, state);
    Object.assign(state, { resource, key, seenStatus: resource.status });
    // Typed as required, but stored resources only passed basic validation.
    const status = resource.status as SubscriptionStatusCode | undefined;
    if (status !== 'requested' && status !== 'active') {
      // off, or error set by a client (or no status at all): stop sending.
      halt(state);
      state.status = status ?? 'off';
      state.error = resource.error;
      return;
    }
    try {
      state.config = readSubscription(resource);
    } catch (err) {
      if (!(err instanceof SubscriptionConfigError)) throw err;
      state.config = undefined;
      halt(state);
      writeStatus(state, 'error', err.message);
      return;
    }
    halt(state);
    state.status = 'requested';
    state.error = undefined;
    enqueue(state, { type: 'handshake', generation: state.generation });
  };

  const onChange = (event: ChangeEvent): void => {
    if (closed) return;
    if (event.resource.resourceType === 'Subscription') {
      onSubscription(event);
      return;
    }
    let snapshot: Resource | undefined; // one copy of the version, shared by the subscriptions
    const { resourceType, id, meta } = event.resource;
    for (const state of states.values()) {
      if (!state.config || !RECORDING.has(state.status)) continue;
      let matched: boolean;
      try {
        matched = matchesTopic(state.config, event.type, event.resource);
      } catch (err) {
        log.warn('filter evaluation failed', {
          subscription: `Subscription/${state.id}`,
          ...errorFields(err),
        });
        continue;
      }
      if (!matched) continue;
      snapshot ??= structuredClone(event.resource);
      const stored: StoredEvent = {
        number: ++state.eventCount,
        timestamp: now().toISOString(),
        interaction: event.type,
        focus: `${resourceType}/${id}${meta?.versionId ? `/_history/${meta.versionId}` : ''}`,
        resource: snapshot,
      };
      state.events.push(stored);
      if (state.events.length > maxStored) state.events.splice(0, state.events.length - maxStored);
      if (state.status !== 'error') {
        enqueue(state, { type: 'event-notification', generation: state.generation, event: stored });
      }
    }
  };

  const registry: SubscriptionRegistry = {
    get closed() {
      return closed;
    },
    now,
    ids: () => [...states.keys()],
    get: (id): SubscriptionView | undefined => {
      const state = states.get(id);
      if (!state) return undefined;
      return {
        status: (type) => statusInput(state, type),
        content: state.config?.content ?? 'empty',
        events: state.events,
      };
    },
  };

  const unsubscribe = server.onChange(onChange);
  server.use(subscriptionOperations(registry));
  track(
    repo.searchResources<Subscription>({ resourceType: 'Subscription' }).then((existing) => {
      for (const resource of existing) {
        if (!states.has(resource.id)) onSubscription({ type: 'create', resource });
      }
    }),
  );

  const flush = async (): Promise<void> => {
    for (;;) {
      for (const state of states.values()) if (state.heldBack) kick(state, true);
      if (pending.size === 0) return;
      await Promise.allSettled([...pending]);
    }
  };

  return {
    flush,
    stats: () => {
      const all = [...states.values()];
      return {
        subscriptions: all.length,
        active: all.filter((s) => s.status === 'active').length,
        events: all.reduce((n, s) => n + s.eventCount, 0),
        queued: all.reduce((n, s) => n + s.queue.length + (s.heldBack ? 1 : 0), 0),
        ...counters,
      };
    },
    setDeliveryFault: (next) => {
      fault = next;
    },
    close: async () => {
      if (closed) return;
      closed = true;
      unsubscribe();
      stopping.abort();
      for (const state of states.values()) stopHeartbeat(state);
      await flush();
    },
  };
}
