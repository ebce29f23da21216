/**
 * A circuit breaker per endpoint (one per endpoint name, and per TargetModel on a multi-model
 * endpoint), wrapped around each InvokeEndpoint call (after the SDK's own retries, so one call
 * is one outcome: attempts never multiply).
 *
 * - closed: calls go through. It opens after `failureThreshold` consecutive retryable
 *   failures, or when, over the last `windowMs`, at least `minimumCalls` calls finished and
 *   the share of retryable failures reached `failureRateThreshold`.
 * - open: calls are refused with `CircuitOpenError` (retryable, `retryAfterMs`) without
 *   touching the endpoint, until `coolDownMs` have passed.
 * - half-open: one probe call goes through; the others are refused while it runs. The probe's
 *   success closes the circuit (counters cleared); a retryable failure opens it again.
 *
 * What counts: a retryable InferenceError (throttling, 5xx, model not ready, timeout, network)
 * is a failure. A non-retryable one (ValidationError, ModelError, …) means the endpoint
 * answered: it counts as a success. A call the caller aborted counts as nothing.
 */
import { CircuitOpenError, type InferenceError } from './errors.js';

export type CircuitState = 'closed' | 'open' | 'half-open';

export interface CircuitBreakerOptions {
  /** Consecutive retryable failures that open the circuit. Default 5. */
  failureThreshold?: number;
  /** Share (0..1] of retryable failures in the window that opens the circuit. Default 0.5. */
  failureRateThreshold?: number;
  /** Fewest calls in the window before the rate applies. Default 10. */
  minimumCalls?: number;
  /** The sliding window for the rate, in ms. Default 30 s. */
  windowMs?: number;
  /** How long the circuit stays open before a probe, in ms. Default 10 s. */
  coolDownMs?: number;
  /** Clock (ms); tests inject one. Default `Date.now`. */
  now?: () => number;
  /** Told of every state change (for logs and metrics). */
  onStateChange?: (key: string, from: CircuitState, to: CircuitState) => void;
}

export interface CircuitBreaker {
  /** Runs `call` through the circuit of `key`, or throws CircuitOpenError without running it. */
  run<T>(key: string, call: () => Promise<T>): Promise<T>;
  state(key: string): CircuitState;
}

interface Circuit {
  state: CircuitState;
  consecutive: number;
  openedAt: number;
  probing: boolean;
  /** Finished calls in the window: time and whether it was a failure. */
  outcomes: { at: number; failed: boolean }[];
}

export const CIRCUIT_DEFAULTS = {
  failureThreshold: 5,
  failureRateThreshold: 0.5,
  minimumCalls: 10,
  windowMs: 30_000,
  coolDownMs: 10_000,
} as const;

/** A failure for the breaker: the endpoint is unwell (as opposed to a bad request). */
function isFailure(err: unknown): boolean | undefined {
  const e = err as Partial<InferenceError> | undefined;
  if (e?.code === 'Aborted') return undefined;
  return e?.retryable === true;
}

export function createCircuitBreaker(opts: CircuitBreakerOptions = {}): CircuitBreaker {
  const failureThreshold = opts.failureThreshold ?? CIRCUIT_DEFAULTS.failureThreshold;
  const rateThreshold = opts.failureRateThreshold ?? CIRCUIT_DEFAULTS.failureRateThreshold;
  const minimumCalls = opts.minimumCalls ?? CIRCUIT_DEFAULTS.minimumCalls;
  const windowMs = opts.windowMs ?? CIRCUIT_DEFAULTS.windowMs;
  const coolDownMs = opts.coolDownMs ?? CIRCUIT_DEFAULTS.coolDownMs;
  const now = opts.now ?? Date.now;
  const circuits = new Map<string, Circuit>();

  const circuitOf = (key: string): Circuit => {
    let c = circuits.get(key);
    if (!c) {
      c = { state: 'closed', consecutive: 0, openedAt: 0, probing: false, outcomes: [] };
      circuits.set(key, c);
    }
    return c;
  };

  const move = (key: string, c: Circuit, to: CircuitState): void => {
    if (c.state === to) return;
    const from = c.state;
    c.state = to;
    if (to === 'open') c.openedAt = now();
    if (to === 'closed') {
      c.consecutive = 0;
      c.outcomes = [];
    }
    opts.onStateChange?.(key, from, to);
  };

  const record = (key: string, c: Circuit, failed: boolean): void => {
    const t = now();
    c.outcomes.push({ at: t, failed });
    while ((c.outcomes[0]?.at ?? t) <= t - windowMs) c.outcomes.shift();
    c.consecutive = failed ? c.consecutive + 1 : 0;
    if (c.state === 'half-open') {
      move(key, c, failed ? 'open' : 'closed');
      return;
    }
    if (!failed || c.state !== 'closed') return;
    const failures = c.outcomes.filter((o) => o.failed).length;
    const rateTripped = c.outcomes.length >= minimumCalls && failures / c.outcomes.length >= rateThreshold;
    if (c.consecutive >= failureThreshold || rateTripped) move(key, c, 'open');
  };

  /** Whether a call may go now; moves open → half-open after the cool-down. */
  const admit = (key: string, c: Circuit): { probe: boolean } => {
    if (c.state === 'open') {
      const left = c.openedAt + coolDownMs - now();
      if (left > 0) throw new CircuitOpenError(`circuit for ${key} is open`, left);
      move(key, c, 'half-open');
    }
    if (c.state === 'half-open') {
      if (c.probing) throw new CircuitOpenError(`circuit for ${key} is half-open, a probe is running`, 0);
      c.probing = true;
      return { probe: true };
    }
    return { probe: false };
  };

  return {
    async run<T>(key: string, call: () => Promise<T>): Promise<T> {
      const c = circuitOf(key);
      const { probe } = admit(key, c);
      try {
        const result = await call();
        record(key, c, false);
        return result;
      } catch (err) {
        const failed = isFailure(err);
        if (failed !== undefined) record(key, c, failed);
        throw err;
      } finally {
        if (probe) c.probing = false;
      }
    },
    state: (key) => {
      const c = circuitOf(key);
      return c.state === 'open' && now() >= c.openedAt + coolDownMs ? 'half-open' : c.state;
    },
  };
}
