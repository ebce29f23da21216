/**
 * Per-client rate limits: a token bucket per key (issuer + client), in memory. One Lambda
 * instance holds its own buckets, so in AWS this is a per-instance backstop behind API
 * Gateway's usage plans; locally it is the limit.
 */

export type RateDecision = { readonly ok: true } | { readonly ok: false; readonly retryAfterSeconds: number };

export interface RateLimiter {
  take(key: string): RateDecision;
}

export interface TokenBucketOptions {
  /** Burst size: tokens a full bucket holds. */
  readonly capacity: number;
  /** Tokens added per second. */
  readonly refillPerSecond: number;
  /** Buckets kept (least recently used dropped first). Default 10,000. */
  readonly maxKeys?: number;
  readonly now?: () => number;
}

interface Bucket {
  tokens: number;
  at: number;
}

export function createTokenBucketLimiter(opts: TokenBucketOptions): RateLimiter {
  if (!(opts.capacity >= 1) || !(opts.refillPerSecond > 0)) {
    throw new RangeError('capacity must be at least 1 and refillPerSecond above 0');
  }
  const now = opts.now ?? Date.now;
  const maxKeys = opts.maxKeys ?? 10_000;
  const buckets = new Map<string, Bucket>();
  return {
    take(key) {
      const t = now();
      const bucket = buckets.get(key) ?? { tokens: opts.capacity, at: t };
      bucket.tokens = Math.min(
        opts.capacity,
        bucket.tokens + ((t - bucket.at) / 1000) * opts.refillPerSecond,
      );
      bucket.at = t;
      // Re-insert: Map order is then least recently used first.
      buckets.delete(key);
      buckets.set(key, bucket);
      if (buckets.size > maxKeys) {
        const oldest = buckets.keys().next();
        if (!oldest.done) buckets.delete(oldest.value);
      }
      if (bucket.tokens >= 1) {
        bucket.tokens -= 1;
        return { ok: true };
      }
      return {
        ok: false,
        retryAfterSeconds: Math.max(1, Math.ceil((1 - bucket.tokens) / opts.refillPerSecond)),
      };
    },
  };
}
