/**
 * Sending one notification of the embedded server's Subscriptions (`subscriptions.ts`): the
 * rest-hook POST with the channel's headers and the `X-Signature` HMAC, a timeout per attempt,
 * retries with doubling backoff, and the subscription put in `error` when every attempt failed.
 */
import { createHmac } from 'node:crypto';
import type { Subscription } from '@medplum/fhirtypes';
import type { Logger } from '../../shared/log.js';
import type { Job, State } from './subscription-types.js';

/** What the sender counts (part of `stats()`). */
export interface DeliveryCounters {
  handshakes: number;
  heartbeats: number;
  delivered: number;
  failedAttempts: number;
  retries: number;
  dropped: number;
  duplicated: number;
  reordered: number;
}

export const newCounters = (): DeliveryCounters => ({
  handshakes: 0,
  heartbeats: 0,
  delivered: 0,
  failedAttempts: 0,
  retries: 0,
  dropped: 0,
  duplicated: 0,
  reordered: 0,
});

/** A pause that ends early when `signal` aborts (the server closing). */
export function abortableSleep(signal: AbortSignal): (ms: number) => Promise<void> {
  return (ms) =>
    new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        signal.removeEventListener('abort', done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      signal.addEventListener('abort', done, { once: true });
    });
}

export interface DeliveryContext {
  readonly fetch: typeof fetch;
  readonly signingSecretFor?: (subscription: Subscription) => string | undefined;
  /** Per-attempt timeout when the Subscription sets none. */
  readonly timeoutMs: number;
  readonly attempts: number;
  readonly baseDelayMs: number;
  readonly maxDelayMs: number;
  readonly counters: DeliveryCounters;
  readonly stopping: AbortSignal;
  readonly isClosed: () => boolean;
  readonly log: Logger;
  /** Every attempt failed: the subscription goes to `error` with this message. */
  readonly onExhausted: (state: State, message: string) => void;
}

export type Deliver = (state: State, job: Job, body: string, retry?: boolean) => Promise<boolean>;

/** POSTs one bundle with retries; false (and `onExhausted`) when all attempts fail. */
export function createDeliver(ctx: DeliveryContext): Deliver {
  const sleep = abortableSleep(ctx.stopping);
  return async (state, job, body, retry = true) => {
    const config = state.config;
    if (!config) return false;
    const headers: Record<string, string> = {};
    for (const [name, value] of config.headers) headers[name] = value;
    headers['Content-Type'] = config.contentType;
    const secret = ctx.signingSecretFor?.(state.resource);
    if (secret) headers['X-Signature'] = `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;
    const timeoutMs = config.timeout !== undefined ? config.timeout * 1000 : ctx.timeoutMs;
    let reason = '';
    const tries = retry ? ctx.attempts : 1;
    for (let attempt = 1; attempt <= tries; attempt++) {
      if (ctx.isClosed() || job.generation !== state.generation) return false;
      try {
        const res = await ctx.fetch(config.endpoint, {
          method: 'POST',
          headers,
          body,
          signal: AbortSignal.any([ctx.stopping, AbortSignal.timeout(timeoutMs)]),
        });
        await res.arrayBuffer().catch(() => undefined);
        if (res.ok) {
          ctx.counters.delivered++;
          state.lastSentAt = Date.now();
          return true;
        }
        reason = `HTTP ${res.status}`;
      } catch (err) {
        reason = (err as Error).name;
      }
      ctx.counters.failedAttempts++;
      ctx.log.debug('notification attempt failed', {
        subscription: `Subscription/${state.id}`,
        attempt,
        reason,
      });
      if (attempt < tries) {
        ctx.counters.retries++;
        await sleep(Math.min(ctx.maxDelayMs, ctx.baseDelayMs * 2 ** (attempt - 1)));
      }
    }
    if (retry && !ctx.isClosed() && job.generation === state.generation) {
      ctx.onExhausted(
        state,
        `Delivery of ${job.type} to ${config.endpoint} failed after ${tries} attempts (${reason})`,
      );
    }
    return false;
  };
}
