/**
 * The notify function's per-container cache of subscription state: no read in the steady state,
 * never a lost number when several containers write, and no false catch-up from a stale cache.
 */
import { describe, expect, it } from 'vitest';
import { parseNotificationBundle } from '../../shared/events/notification.js';
import { silentLogger } from '../../shared/log.js';
import { SubscriptionRegistrationSchema } from '../../shared/notify/auth.js';
import { buildNotificationBundle } from '../../shared/notify/bundle.js';
import { processNotification, type ProcessPorts } from '../../shared/notify/process.js';
import type { QueuedMessage } from '../../shared/notify/queue.js';
import {
  applyStateChange,
  createCachedStateStore,
  createInMemoryStateStore,
  initialState,
  type SubscriptionStateStore,
} from '../../shared/notify/state.js';

const SUB = 'Subscription/obs';
const AT = '2026-03-01T10:00:00.000Z';
const reg = SubscriptionRegistrationSchema.parse({
  id: 'obs',
  hmac: { secret: 'a-secret-of-sixteen-chars' },
  resourceTypes: { Observation: {} },
});

/** The in-memory store, counting the reads that reach it. */
function countingStore(inner = createInMemoryStateStore()) {
  const counts = { gets: 0, puts: 0 };
  const store: SubscriptionStateStore = {
    get: (s) => {
      counts.gets++;
      return inner.get(s);
    },
    put: (next, expected) => {
      counts.puts++;
      return inner.put(next, expected);
    },
  };
  return { inner, store, counts };
}

const queued = (n: number): { queued: [number, string][]; seenAt: string } => ({
  queued: [[n, AT]],
  seenAt: AT,
});

describe('createCachedStateStore', () => {
  it('reads the store once, then answers from what it wrote', async () => {
    const { store, counts } = countingStore();
    const cached = createCachedStateStore(store);
    for (let n = 1; n <= 5; n++) {
      await applyStateChange(cached, SUB, queued(n), () => initialState(SUB, 0, AT));
    }
    expect(counts).toEqual({ gets: 1, puts: 5 });
    expect((await cached.get(SUB))?.highWater).toBe(5);
    expect(counts.gets).toBe(1);
    expect((await cached.get(SUB, { fresh: true }))?.highWater).toBe(5);
    expect(counts.gets).toBe(2);
  });

  it('loses no number when two containers write: the stale one’s write fails, it re-reads and merges', async () => {
    const shared = countingStore();
    const a = createCachedStateStore(shared.store);
    const b = createCachedStateStore(shared.store);
    await applyStateChange(a, SUB, queued(1), () => initialState(SUB, 0, AT));
    await applyStateChange(b, SUB, queued(2), () => initialState(SUB, 0, AT));
    await applyStateChange(b, SUB, queued(3), () => initialState(SUB, 0, AT));
    // a's cache still says revision 0 (highWater 1): its conditional write must fail once.
    const before = shared.counts.puts;
    await applyStateChange(a, SUB, queued(4), () => initialState(SUB, 0, AT));
    expect(shared.counts.puts - before).toBe(2);
    expect(shared.inner.items.get(SUB)).toMatchObject({ highWater: 4, seen: [], revision: 3 });
  });
});

describe('notify with cached state in two containers', () => {
  const notification = (n: number) =>
    parseNotificationBundle(
      buildNotificationBundle({
        subscription: SUB,
        type: 'event-notification',
        events: [{ eventNumber: n, timestamp: AT, focus: `Observation/o${String(n)}/_history/1` }],
        eventsSinceSubscriptionStart: n,
      }),
    );

  function container(store: SubscriptionStateStore, sent: QueuedMessage[], catchUps: string[]): ProcessPorts {
    return {
      queue: {
        send: (messages) => {
          sent.push(...messages);
          return Promise.resolve();
        },
      },
      state: createCachedStateStore(store),
      catchUp: {
        events: (id, from, to) => {
          catchUps.push(`$events ${id} ${String(from)}..${String(to)}`);
          return Promise.reject(new Error('no $events'));
        },
        search: (type) => {
          catchUps.push(`search ${type}`);
          return Promise.resolve([]);
        },
      },
      logger: silentLogger,
      clock: () => new Date(AT),
    };
  }

  it('re-reads before catching up, so a stale cache causes no catch-up and every event is queued once', async () => {
    const shared = countingStore();
    const sent: QueuedMessage[] = [];
    const catchUps: string[] = [];
    const a = container(shared.store, sent, catchUps);
    const b = container(shared.store, sent, catchUps);
    const deliver = (p: ProcessPorts, n: number) =>
      processNotification(p, reg, { kind: 'bundle', notification: notification(n) });

    expect((await deliver(a, 1)).queued).toBe(1);
    expect((await deliver(b, 2)).queued).toBe(1);
    expect((await deliver(b, 3)).queued).toBe(1);
    const gets = shared.counts.gets;
    // a last saw event 1: its cache shows 2 and 3 missing; the store shows them queued.
    const result = await deliver(a, 4);
    expect(result).toMatchObject({ queued: 1, caughtUp: 0, openGap: 0 });
    expect(shared.counts.gets - gets).toBe(1); // the fresh read, which also refreshed the cache for the write
    expect(catchUps).toEqual([]);
    expect(sent.map((m) => m.body.eventNumber)).toEqual(['1', '2', '3', '4']);
    expect(shared.inner.items.get(SUB)?.highWater).toBe(4);
  });

  it('still catches up a real gap', async () => {
    const shared = countingStore();
    const catchUps: string[] = [];
    const a = container(shared.store, [], catchUps);
    await processNotification(a, reg, { kind: 'bundle', notification: notification(1) });
    const result = await processNotification(a, reg, { kind: 'bundle', notification: notification(4) });
    expect(catchUps).toEqual(['$events obs 2..3', 'search Observation']);
    expect(result).toMatchObject({ queued: 1, caughtUp: 2, catchUpMethod: 'search' });
  });
});
