/**
 * Types of `installSubscriptions` (`subscriptions.ts`): its options, its handle, and the state it
 * keeps per subscription.
 */
import type { WithId } from '@medplum/core';
import type { Subscription } from '@medplum/fhirtypes';
import type { Logger } from '../../shared/log.js';
import type { NotificationType, StoredEvent, SubscriptionStatusCode } from './subscription-bundles.js';
import type { SubscriptionConfig } from './subscription-topics.js';

export interface DeliveryFault {
  /** Fraction (0..1) of event notifications silently not sent (counted as delivered). */
  readonly dropRate?: number;
  /** Fraction of event notifications sent twice, byte for byte. */
  readonly duplicateRate?: number;
  /**
   * Reorders: a fraction (`true` = 0.5) of event notifications is held back and sent after the
   * next one of the same subscription (or on flush()).
   */
  readonly shuffle?: boolean | number;
  /** Random source for the rates (default Math.random). */
  readonly random?: () => number;
}

export interface SubscriptionsOptions {
  /** Used for every delivery (default: global fetch). */
  readonly fetch?: typeof fetch;
  /** Multiplies heartbeat periods (e.g. 0.01 makes 60 s into 600 ms). Default 1. */
  readonly heartbeatScale?: number;
  /** A secret to sign this subscription's notifications with (`X-Signature`), or undefined. */
  readonly signingSecretFor?: (subscription: Subscription) => string | undefined;
  /** Clock for timestamps in bundles. */
  readonly now?: () => Date;
  readonly logger?: Logger;
  /** Attempts per notification (default 4) and the backoff between them (default 250 ms doubling, at most 5 s). */
  readonly retry?: {
    readonly attempts?: number;
    readonly baseDelayMs?: number;
    readonly maxDelayMs?: number;
  };
  /** Per-attempt timeout when the Subscription has no `backport-timeout` (default 10 000 ms). */
  readonly timeoutMs?: number;
  /** Events kept per subscription for `$events` (default 10 000, oldest dropped first). */
  readonly maxStoredEvents?: number;
  readonly deliveryFault?: DeliveryFault;
}

export interface SubscriptionStats {
  readonly subscriptions: number;
  readonly active: number;
  readonly events: number;
  readonly queued: number;
  readonly handshakes: number;
  readonly heartbeats: number;
  /** Notifications a receiver answered 2xx (duplicates included). */
  readonly delivered: number;
  readonly failedAttempts: number;
  readonly retries: number;
  readonly dropped: number;
  readonly duplicated: number;
  readonly reordered: number;
}

export interface InstalledSubscriptions {
  close(): Promise<void>;
  /** Resolves once every queued notification (retries included) and status write is done. */
  flush(): Promise<void>;
  stats(): SubscriptionStats;
  /** Changes the delivery fault from now on; undefined clears it. */
  setDeliveryFault(fault: DeliveryFault | undefined): void;
}

export type JobType = Extract<NotificationType, 'handshake' | 'heartbeat' | 'event-notification'>;
export interface Job {
  readonly type: JobType;
  readonly generation: number;
  readonly event?: StoredEvent;
}

export interface State {
  readonly id: string;
  resource: WithId<Subscription>;
  key: string;
  /** The status of the last stored version we saw (ours or a client's). */
  seenStatus: string | undefined;
  /** The status the server acts on. */
  status: SubscriptionStatusCode;
  error?: string;
  config?: SubscriptionConfig;
  eventCount: number;
  readonly events: StoredEvent[];
  queue: Job[];
  running?: Promise<void>;
  heldBack?: Job;
  heartbeat?: NodeJS.Timeout;
  lastSentAt: number;
  /** Bumped on each re-handshake or stop: older jobs are dropped. */
  generation: number;
}
