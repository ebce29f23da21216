/** Exponential backoff with full jitter, shared by the FHIR gateway and the pipeline. */

export interface RetryOptions {
  /** Total attempts, the first included. Default 4. */
  readonly attempts?: number;
  /** First backoff in ms. Default 100. */
  readonly baseMs?: number;
  /** Longest backoff in ms. Default 5,000. */
  readonly capMs?: number;
  /** Whether an error is worth another attempt. */
  readonly retryable: (err: unknown) => boolean;
  /** Called before each retry (for metrics and logs). */
  readonly onRetry?: (err: unknown, attempt: number, delayMs: number) => void;
  readonly sleep?: (ms: number) => Promise<void>;
  readonly random?: () => number;
}

const realSleep = (ms: number): Promise<void> =>
  new Promise((resolve) => {
    setTimeout(resolve, ms);
  });

export async function withRetry<T>(fn: (attempt: number) => Promise<T>, opts: RetryOptions): Promise<T> {
  const attempts = opts.attempts ?? 4;
  const base = opts.baseMs ?? 100;
  const cap = opts.capMs ?? 5_000;
  const sleep = opts.sleep ?? realSleep;
  const random = opts.random ?? Math.random;
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn(attempt);
    } catch (err) {
      if (attempt >= attempts || !opts.retryable(err)) throw err;
      const delay = Math.round(random() * Math.min(cap, base * 2 ** (attempt - 1)));
      opts.onRetry?.(err, attempt, delay);
      await sleep(delay);
    }
  }
}
