/** Helpers shared by the event-path benchmarks: percentiles, a worker pool, the bench cohort. */
import * as path from 'node:path';
import { buildDemoCohort, loadHeldOutRows, type DemoPatient } from '../local/demo/cohort.js';
import { ROOT } from '../local/stack.js';

export const round = (x: number): number => Math.round(x * 100) / 100;

export interface Stats {
  n: number;
  p50: number;
  p95: number;
  p99: number;
  mean: number;
  max: number;
}

export function stats(samples: readonly number[]): Stats {
  const s = [...samples].sort((a, b) => a - b);
  const at = (q: number): number => s[Math.min(s.length - 1, Math.floor(q * s.length))] ?? NaN;
  return {
    n: s.length,
    p50: round(at(0.5)),
    p95: round(at(0.95)),
    p99: round(at(0.99)),
    mean: round(s.reduce((a, b) => a + b, 0) / s.length),
    max: round(s.at(-1) ?? NaN),
  };
}

/** `count` diabetes demo patients without a deliberate gap, from the held-out rows resampled. */
export function benchPatients(count: number): DemoPatient[] {
  const rows = loadHeldOutRows(path.join(ROOT, 'local/demo/data/diabetes-heldout.json'));
  const out: DemoPatient[] = [];
  for (let batch = 0; out.length < count; batch++) {
    const resampled = Array.from({ length: 1000 }, (_, k) => {
      const i = batch * 1000 + k;
      const row = rows[i % rows.length];
      if (!row) throw new Error('no held-out rows');
      return { ...row, rowId: row.rowId + 1_000_000 * (Math.floor(i / rows.length) + 1) };
    });
    // Index-based gaps repeat every 9 and 13 patients: skip them, keep the rest.
    out.push(...buildDemoCohort(resampled, new Date()).filter((p) => !p.expectedGap));
  }
  return out.slice(0, count);
}

/** Runs `fn` over `items` with `workers` at a time. */
export async function pool<T>(
  items: readonly T[],
  workers: number,
  fn: (item: T, i: number) => Promise<void>,
): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: workers }, async () => {
      for (let i = next++; i < items.length; i = next++) await fn(items[i] as T, i);
    }),
  );
}
