/**
 * The circuit breaker on a fake clock: opens after N consecutive retryable failures or on the
 * failure rate over the window; refuses without running the call while open; lets one probe
 * through when half-open; closes on the probe's success. Non-retryable errors mean the
 * endpoint answered (success); a caller's abort counts as nothing.
 */
import { describe, expect, it } from 'vitest';
import { createCircuitBreaker } from '../../shared/inference/circuit-breaker.js';
import {
  CircuitOpenError,
  InferenceModelError,
  InferenceServiceUnavailableError,
  InferenceThrottlingError,
  InferenceUnknownError,
} from '../../shared/inference/errors.js';

const K = 'ep';

function setup(opts: Parameters<typeof createCircuitBreaker>[0] = {}) {
  const clock = { now: 0 };
  const changes: string[] = [];
  const breaker = createCircuitBreaker({
    coolDownMs: 1_000,
    now: () => clock.now,
    onStateChange: (key, from, to) => changes.push(`${key}:${from}->${to}`),
    ...opts,
  });
  let calls = 0;
  const ok = () => breaker.run(K, () => Promise.resolve(++calls));
  const fail = (err: Error = new InferenceServiceUnavailableError('busy')) =>
    breaker.run(K, () => {
      calls++;
      return Promise.reject(err);
    });
  return { clock, changes, breaker, ok, fail, calls: () => calls };
}

describe('circuit breaker', () => {
  it('opens after failureThreshold consecutive retryable failures and refuses without calling', async () => {
    const t = setup({ failureThreshold: 3 });
    for (let i = 0; i < 2; i++)
      await expect(t.fail()).rejects.toBeInstanceOf(InferenceServiceUnavailableError);
    await t.ok(); // a success resets the run of failures
    for (let i = 0; i < 3; i++) await expect(t.fail(new InferenceThrottlingError('slow'))).rejects.toThrow();
    expect(t.breaker.state(K)).toBe('open');
    const before = t.calls();
    t.clock.now = 400;
    const err = await t.ok().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CircuitOpenError);
    expect((err as CircuitOpenError).retryable).toBe(true);
    expect((err as CircuitOpenError).retryAfterMs).toBe(600);
    expect(t.calls()).toBe(before);
    expect(t.changes).toEqual(['ep:closed->open']);
    // Other endpoints are not affected.
    await expect(t.breaker.run('other', () => Promise.resolve('fine'))).resolves.toBe('fine');
  });

  it('opens on the failure rate over the window once minimumCalls have finished', async () => {
    const t = setup({ failureThreshold: 100, failureRateThreshold: 0.5, minimumCalls: 6, windowMs: 10_000 });
    for (let i = 0; i < 3; i++) {
      await t.ok();
      await expect(t.fail()).rejects.toThrow();
    }
    expect(t.breaker.state(K)).toBe('open');
  });

  it('forgets outcomes older than the window', async () => {
    const t = setup({ failureThreshold: 100, failureRateThreshold: 0.5, minimumCalls: 4, windowMs: 1_000 });
    for (let i = 0; i < 3; i++) await expect(t.fail()).rejects.toThrow();
    t.clock.now = 5_000;
    await t.ok();
    await t.ok();
    await t.ok();
    await expect(t.fail()).rejects.toThrow(); // 1 of 4 in the window
    expect(t.breaker.state(K)).toBe('closed');
  });

  it('half-opens after the cool-down with exactly one probe; its success closes the circuit', async () => {
    const t = setup({ failureThreshold: 1 });
    await expect(t.fail()).rejects.toThrow();
    t.clock.now = 1_000;
    expect(t.breaker.state(K)).toBe('half-open');
    let release: (v: string) => void = () => undefined;
    const probe = t.breaker.run(K, () => new Promise<string>((r) => (release = r)));
    await expect(t.ok()).rejects.toBeInstanceOf(CircuitOpenError); // a second call during the probe
    release('done');
    await expect(probe).resolves.toBe('done');
    expect(t.breaker.state(K)).toBe('closed');
    await t.ok();
    expect(t.changes).toEqual(['ep:closed->open', 'ep:open->half-open', 'ep:half-open->closed']);
  });

  it('a failed probe opens the circuit again for a full cool-down', async () => {
    const t = setup({ failureThreshold: 1 });
    await expect(t.fail()).rejects.toThrow();
    t.clock.now = 1_000;
    await expect(t.fail()).rejects.toBeInstanceOf(InferenceServiceUnavailableError);
    expect(t.breaker.state(K)).toBe('open');
    t.clock.now = 1_999;
    await expect(t.ok()).rejects.toBeInstanceOf(CircuitOpenError);
    t.clock.now = 2_000;
    await t.ok();
    expect(t.breaker.state(K)).toBe('closed');
  });

  it('non-retryable errors count as answers, a caller abort as nothing', async () => {
    const t = setup({ failureThreshold: 2 });
    await expect(t.fail()).rejects.toThrow();
    await expect(t.fail(new InferenceModelError('bad tensor'))).rejects.toBeInstanceOf(InferenceModelError);
    await expect(t.fail()).rejects.toThrow();
    expect(t.breaker.state(K)).toBe('closed');
    await expect(t.fail(new InferenceUnknownError('Aborted', 'cancelled'))).rejects.toThrow();
    expect(t.breaker.state(K)).toBe('closed');
    await expect(t.fail()).rejects.toThrow();
    expect(t.breaker.state(K)).toBe('open');
  });
});
