/**
 * Counts and risk histograms of a sweep: per patient, per model, mergeable across batches,
 * items and resumed runs (fixed bin edges per model, so two histograms add bin by bin).
 */
import type { ModelManifest } from '../inference/manifest.js';

export type PatientOutcome = 'written' | 'unchanged' | 'insufficient-data' | 'failed';

export interface OutcomeCounts {
  written: number;
  unchanged: number;
  insufficientData: number;
  failed: number;
}

export interface Histogram {
  /** Bin edges: `bins.length` equal bins over [lo, hi); `below` and `above` count the rest. */
  readonly lo: number;
  readonly hi: number;
  bins: number[];
  below: number;
  above: number;
  n: number;
  sum: number;
  min: number | null;
  max: number | null;
}

export interface Tally {
  patients: number;
  outcomes: OutcomeCounts;
  perModel: Record<string, OutcomeCounts>;
  histograms: Record<string, Histogram>;
  /** `Patient/<id>` of patients with a failed model run, for a retry (at most `MAX_FAILED_LISTED`). */
  failedPatients: string[];
  /** Failed patients beyond the list. */
  failedNotListed: number;
  /** Staged lines the worker found were not JSON resources (routed unparsed when staged). */
  malformedLines?: number;
}

export const MAX_FAILED_LISTED = 1000;
const BINS = 20;

export const emptyCounts = (): OutcomeCounts => ({
  written: 0,
  unchanged: 0,
  insufficientData: 0,
  failed: 0,
});

export function emptyTally(): Tally {
  return {
    patients: 0,
    outcomes: emptyCounts(),
    perModel: {},
    histograms: {},
    failedPatients: [],
    failedNotListed: 0,
  };
}

/** Bin range of a model's scores: [0, 1] for probabilities, else [0, 1.5 × the highest threshold]. */
export function histogramFor(manifest: ModelManifest): Histogram {
  const top = Math.max(0, ...manifest.output.thresholds.map((t) => t.atOrAbove));
  const probability = manifest.task === 'classification' || top <= 1;
  const lo = 0;
  const hi = probability ? 1 : Math.ceil(top * 1.5);
  return {
    lo,
    hi,
    bins: new Array<number>(BINS).fill(0),
    below: 0,
    above: 0,
    n: 0,
    sum: 0,
    min: null,
    max: null,
  };
}

export function addScore(h: Histogram, score: number): void {
  h.n++;
  h.sum += score;
  h.min = h.min === null ? score : Math.min(h.min, score);
  h.max = h.max === null ? score : Math.max(h.max, score);
  if (score < h.lo) h.below++;
  else if (score > h.hi) h.above++;
  else {
    const i = Math.min(h.bins.length - 1, Math.floor(((score - h.lo) / (h.hi - h.lo)) * h.bins.length));
    h.bins[i] = (h.bins[i] ?? 0) + 1;
  }
}

const KEY: Record<PatientOutcome, keyof OutcomeCounts> = {
  written: 'written',
  unchanged: 'unchanged',
  'insufficient-data': 'insufficientData',
  failed: 'failed',
};

export function countOutcome(counts: OutcomeCounts, outcome: PatientOutcome, n = 1): void {
  counts[KEY[outcome]] += n;
}

export function addCounts(into: OutcomeCounts, from: OutcomeCounts): void {
  into.written += from.written;
  into.unchanged += from.unchanged;
  into.insufficientData += from.insufficientData;
  into.failed += from.failed;
}

/** Adds `from` into `into` (histograms with the same edges add bin by bin). */
export function mergeTally(into: Tally, from: Tally): Tally {
  into.patients += from.patients;
  addCounts(into.outcomes, from.outcomes);
  for (const [model, c] of Object.entries(from.perModel))
    addCounts((into.perModel[model] ??= emptyCounts()), c);
  for (const [model, h] of Object.entries(from.histograms)) {
    const target = into.histograms[model];
    if (!target) {
      into.histograms[model] = { ...h, bins: [...h.bins] };
      continue;
    }
    h.bins.forEach((v, i) => (target.bins[i] = (target.bins[i] ?? 0) + v));
    target.below += h.below;
    target.above += h.above;
    target.n += h.n;
    target.sum += h.sum;
    target.min = target.min === null ? h.min : h.min === null ? target.min : Math.min(target.min, h.min);
    target.max = target.max === null ? h.max : h.max === null ? target.max : Math.max(target.max, h.max);
  }
  for (const ref of from.failedPatients) addFailed(into, ref);
  into.failedNotListed += from.failedNotListed;
  if (from.malformedLines) into.malformedLines = (into.malformedLines ?? 0) + from.malformedLines;
  return into;
}

export function addFailed(tally: Tally, patientRef: string): void {
  if (tally.failedPatients.length < MAX_FAILED_LISTED) tally.failedPatients.push(patientRef);
  else tally.failedNotListed++;
}

/** The patient's outcome from its models' outcomes: failed > written > unchanged > insufficient-data. */
export function patientOutcome(outcomes: readonly PatientOutcome[]): PatientOutcome {
  if (outcomes.includes('failed')) return 'failed';
  if (outcomes.includes('written')) return 'written';
  if (outcomes.includes('unchanged')) return 'unchanged';
  return 'insufficient-data';
}
