/**
 * Per-subscription event-number state: which event numbers were queued, so duplicates are
 * dropped and gaps are seen. `highWater` is the contiguous prefix (every number up to it was
 * queued or caught up); `seen` holds numbers above it that arrived out of order.
 *
 * The state is only ever merged forward (a union of queued numbers, times that only grow), so
 * a write that lost a race is re-read, merged and written again: optimistic concurrency with
 * a conditional write on `revision`.
 */
import {
  ConditionalCheckFailedException,
  GetItemCommand,
  PutItemCommand,
  type DynamoDBClient,
} from '@aws-sdk/client-dynamodb';
import * as z from 'zod';

export interface SubscriptionState {
  /** `Subscription/<id>`: the partition key. */
  readonly subscription: string;
  /** Every event number ≤ highWater was queued (or caught up). */
  readonly highWater: number;
  /** The newest event time known at or below highWater: the `_lastUpdated` catch-up's lower bound. */
  readonly highWaterTime?: string;
  /** Numbers above highWater already queued, ascending, with their event times when known. */
  readonly seen: readonly (readonly [number, string | null])[];
  /** The sender's `events-since-subscription-start`, the largest seen. */
  readonly eventsSinceStart?: number;
  /** When the last notification of any kind (heartbeats included) arrived. */
  readonly lastSeenAt?: string;
  /** When this receiver first heard of the subscription. */
  readonly createdAt: string;
  /** Optimistic-lock counter, incremented by every write. */
  readonly revision: number;
}

export interface SubscriptionStateStore {
  /** The stored state; `fresh` asks a caching store to read through (see `createCachedStateStore`). */
  get(subscription: string, opts?: { fresh?: boolean }): Promise<SubscriptionState | undefined>;
  /**
   * Writes `next` if the stored revision is still `expectedRevision` (undefined: no item yet).
   * False when another writer got there first.
   */
  put(next: SubscriptionState, expectedRevision: number | undefined): Promise<boolean>;
}

/** Largest number of out-of-order numbers kept above highWater; beyond it the oldest gap is given up. */
export const MAX_SEEN = 1000;

const later = (a: string | undefined, b: string | undefined): string | undefined =>
  a === undefined ? b : b === undefined ? a : Date.parse(a) >= Date.parse(b) ? a : b;

export function isQueued(state: SubscriptionState | undefined, n: number): boolean {
  if (!state) return false;
  return n <= state.highWater || state.seen.some(([s]) => s === n);
}

/** Numbers in (highWater, upTo] not queued yet. */
export function missingNumbers(state: SubscriptionState, upTo: number, limit = MAX_SEEN): number[] {
  const out: number[] = [];
  for (let n = state.highWater + 1; n <= upTo && out.length < limit; n++)
    if (!isQueued(state, n)) out.push(n);
  return out;
}

export interface StateChange {
  /** Event numbers now queued (or covered by a catch-up), with their event times when known. */
  readonly queued?: readonly (readonly [number, string | undefined])[];
  readonly eventsSinceStart?: number;
  /** A time every change up to which has been queued (legacy pings, search catch-ups). */
  readonly caughtUpTo?: string;
  readonly seenAt: string;
}

export interface MergeResult {
  readonly state: SubscriptionState;
  /** Numbers given up because `seen` overflowed (logged by the caller). */
  readonly abandoned: readonly number[];
}

/** A new state for a subscription never seen before, whose numbers up to `baseline` are taken as done. */
export function initialState(subscription: string, baseline: number, at: string): SubscriptionState {
  return { subscription, highWater: baseline, seen: [], createdAt: at, revision: 0 };
}

/** Merges a change into a state: union of numbers, compaction of the contiguous prefix. */
export function mergeState(state: SubscriptionState, change: StateChange): MergeResult {
  const seen = new Map<number, string | null>(state.seen.map(([n, t]) => [n, t]));
  for (const [n, t] of change.queued ?? []) {
    if (n <= state.highWater) continue;
    const prior = seen.get(n) ?? undefined;
    seen.set(n, later(prior, t) ?? null);
  }
  let highWater = state.highWater;
  let highWaterTime = later(state.highWaterTime, change.caughtUpTo);
  const abandoned: number[] = [];
  const compact = (): void => {
    while (seen.has(highWater + 1)) {
      highWater++;
      highWaterTime = later(highWaterTime, seen.get(highWater) ?? undefined);
      seen.delete(highWater);
    }
  };
  compact();
  while (seen.size > MAX_SEEN) {
    // A gap that no catch-up could fill for MAX_SEEN events: give it up, loudly.
    abandoned.push(highWater + 1);
    highWater++;
    compact();
  }
  const eventsSinceStart =
    change.eventsSinceStart === undefined
      ? state.eventsSinceStart
      : Math.max(change.eventsSinceStart, state.eventsSinceStart ?? 0);
  return {
    state: {
      subscription: state.subscription,
      highWater,
      ...(highWaterTime ? { highWaterTime } : {}),
      seen: [...seen.entries()].sort((a, b) => a[0] - b[0]),
      ...(eventsSinceStart === undefined ? {} : { eventsSinceStart }),
      lastSeenAt: later(state.lastSeenAt, change.seenAt) ?? change.seenAt,
      createdAt: state.createdAt,
      revision: state.revision + 1,
    },
    abandoned,
  };
}

export class StateConflictError extends Error {
  override name = 'StateConflictError';
}

/**
 * Reads, merges and conditionally writes until the write wins (at most `attempts` times).
 * `fresh` builds the state of a subscription with no item yet.
 */
export async function applyStateChange(
  store: SubscriptionStateStore,
  subscription: string,
  change: StateChange,
  fresh: () => SubscriptionState,
  attempts = 8,
): Promise<MergeResult> {
  for (let i = 0; i < attempts; i++) {
    const current = await store.get(subscription);
    const base = current ?? { ...fresh(), revision: -1 };
    const result = mergeState(base, change);
    if (await store.put(result.state, current?.revision)) return result;
  }
  throw new StateConflictError('subscription state kept changing under concurrent writers');
}

/**
 * A per-container cache over a store: `get` answers from the state this container last read or
 * wrote, so a notification in the steady state costs one conditional write and no read. Safe
 * because every write stays conditional on the revision: a state another container moved on
 * makes the write fail, which drops the cache, and `applyStateChange` re-reads and merges. What
 * a stale cache can do before that write is queue an event another container already queued (the
 * FIFO deduplication id and the idempotent consumer absorb it) or see a gap that is not there:
 * so callers re-read with `{ fresh: true }` before they act on a gap.
 */
export function createCachedStateStore(inner: SubscriptionStateStore): SubscriptionStateStore {
  const cache = new Map<string, SubscriptionState>();
  return {
    async get(subscription, opts) {
      const cached = opts?.fresh ? undefined : cache.get(subscription);
      if (cached) return cached;
      const state = await inner.get(subscription);
      if (state) cache.set(subscription, state);
      else cache.delete(subscription);
      return state;
    },
    async put(next, expected) {
      let ok = false;
      try {
        ok = await inner.put(next, expected);
      } finally {
        if (ok) cache.set(next.subscription, next);
        else cache.delete(next.subscription);
      }
      return ok;
    },
  };
}

/** In memory (tests and the local stack without DynamoDB). */
export function createInMemoryStateStore(): SubscriptionStateStore & {
  readonly items: ReadonlyMap<string, SubscriptionState>;
} {
  const items = new Map<string, SubscriptionState>();
  return {
    items,
    get: (s) => Promise.resolve(items.get(s)),
    put: (next, expected) => {
      if (items.get(next.subscription)?.revision !== expected) return Promise.resolve(false);
      items.set(next.subscription, next);
      return Promise.resolve(true);
    },
  };
}

const StoredState = z.object({
  highWater: z.number().int(),
  highWaterTime: z.string().optional(),
  seen: z.array(z.tuple([z.number().int(), z.string().nullable()])),
  eventsSinceStart: z.number().int().optional(),
  lastSeenAt: z.string().optional(),
  createdAt: z.string(),
});

/**
 * DynamoDB: one item per subscription, `subscription` (S, the partition key), `revision` (N),
 * `state` (S, JSON), `updatedAt` (S). Writes are conditional on the revision read.
 */
export function createDynamoStateStore(client: DynamoDBClient, tableName: string): SubscriptionStateStore {
  return {
    async get(subscription) {
      const { Item } = await client.send(
        new GetItemCommand({
          TableName: tableName,
          Key: { subscription: { S: subscription } },
          ConsistentRead: true,
        }),
      );
      if (!Item?.state?.S || !Item.revision?.N) return undefined;
      const stored = StoredState.parse(JSON.parse(Item.state.S));
      return { subscription, ...stored, revision: Number(Item.revision.N) };
    },
    async put(next, expected) {
      const { subscription, revision, ...rest } = next;
      try {
        await client.send(
          new PutItemCommand({
            TableName: tableName,
            Item: {
              subscription: { S: subscription },
              revision: { N: String(revision) },
              state: { S: JSON.stringify(rest) },
              updatedAt: { S: next.lastSeenAt ?? next.createdAt },
            },
            ...(expected === undefined
              ? { ConditionExpression: 'attribute_not_exists(subscription)' }
              : {
                  ConditionExpression: 'revision = :expected',
                  ExpressionAttributeValues: { ':expected': { N: String(expected) } },
                }),
          }),
        );
        return true;
      } catch (err) {
        if (err instanceof ConditionalCheckFailedException) return false;
        throw err;
      }
    },
  };
}
