/**
 * Aggregates over one feature's usable values within its lookback: latest, mean, min, max,
 * count and slope (per year, least squares), and the `ln` transform.
 *
 * Which inputs a result "used" (its provenance): `latest`, `min` and `max` name the one
 * Observation whose value was taken; `mean`, `count` and `slope` name every value they
 * combined. Ties are broken without regard to input order (newest, then reference), so the
 * same resources always give the same row and the same idempotency key.
 */
import type { Aggregate } from '../inference/manifest.js';

/** One usable value of a feature, already converted to the feature's unit. */
export interface Candidate {
  readonly value: number;
  /** Effective time, epoch ms. */
  readonly ms: number;
  /** Effective time as a FHIR dateTime. */
  readonly text: string;
  /** Versioned reference of the Observation. */
  readonly reference: string;
}

export type AggregateOutcome =
  | { readonly ok: true; readonly value: number; readonly used: readonly Candidate[] }
  | { readonly ok: false; readonly reason: string; readonly used: readonly Candidate[] };

/** Mean length of a year in milliseconds (365.25 days), the slope's time unit. */
export const MS_PER_YEAR = 365.25 * 24 * 60 * 60 * 1000;

/** Newer first; at equal times the greater reference first. */
function newer(a: Candidate, b: Candidate): boolean {
  return a.ms > b.ms || (a.ms === b.ms && a.reference > b.reference);
}

function pick(candidates: readonly Candidate[], better: (a: Candidate, b: Candidate) => boolean): Candidate {
  let best = candidates[0] as Candidate;
  for (let i = 1; i < candidates.length; i++) {
    const c = candidates[i] as Candidate;
    if (better(c, best)) best = c;
  }
  return best;
}

/** Least-squares slope of value against time, in feature units per year; undefined without two distinct times. */
export function leastSquaresSlope(candidates: readonly Candidate[]): number | undefined {
  const n = candidates.length;
  if (n < 2) return undefined;
  let meanT = 0;
  let meanV = 0;
  for (const c of candidates) {
    meanT += c.ms / n;
    meanV += c.value / n;
  }
  let sxy = 0;
  let sxx = 0;
  for (const c of candidates) {
    const dt = (c.ms - meanT) / MS_PER_YEAR;
    sxy += dt * (c.value - meanV);
    sxx += dt * dt;
  }
  return sxx > 0 ? sxy / sxx : undefined;
}

/** Aggregates the candidates (at least one, de-duplicated by reference) of one feature. */
export function aggregate(kind: Aggregate, candidates: readonly Candidate[]): AggregateOutcome {
  if (kind === 'count') return { ok: true, value: candidates.length, used: candidates };
  if (candidates.length === 0) return { ok: false, reason: 'value:none', used: [] };
  switch (kind) {
    case 'latest':
      return { ok: true, value: pick(candidates, newer).value, used: [pick(candidates, newer)] };
    case 'min': {
      const c = pick(candidates, (a, b) => a.value < b.value || (a.value === b.value && newer(a, b)));
      return { ok: true, value: c.value, used: [c] };
    }
    case 'max': {
      const c = pick(candidates, (a, b) => a.value > b.value || (a.value === b.value && newer(a, b)));
      return { ok: true, value: c.value, used: [c] };
    }
    case 'mean': {
      let sum = 0;
      for (const c of candidates) sum += c.value;
      return { ok: true, value: sum / candidates.length, used: candidates };
    }
    case 'slope': {
      const slope = leastSquaresSlope(candidates);
      return slope === undefined
        ? { ok: false, reason: 'slope:too-few-times', used: candidates }
        : { ok: true, value: slope, used: candidates };
    }
  }
}

/** Applies the manifest's transform; `ln` of a non-positive value has no answer. */
export function applyTransform(
  transform: 'none' | 'ln',
  value: number,
): { ok: true; value: number } | { ok: false; reason: string } {
  if (transform === 'none') return { ok: true, value };
  if (!(value > 0)) return { ok: false, reason: 'transform:non-positive' };
  return { ok: true, value: Math.log(value) };
}
