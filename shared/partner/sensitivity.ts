/**
 * Which inputs a score responds to, near this patient's values: each observed numeric input
 * (the newest step of a sequence) is raised by 10%, one at a time, and the rows go to the model
 * in the same call as the patient's own row. The change in score per input names the features
 * that drove it locally. It is a sensitivity, not a causal attribution, and the card says so.
 */
import type { ModelManifest, TabularFeature } from '../inference/manifest.js';
import type { FeatureRow } from '../types.js';

export const PERTURBATION = 0.1;

export interface Sensitivity {
  readonly feature: string;
  /** Score with the input raised by 10%, minus the patient's score. */
  readonly delta: number;
}

/** One perturbed row per eligible feature, with the feature names, in order. */
export function perturbedRows(
  manifest: ModelManifest,
  row: FeatureRow,
): { rows: FeatureRow[]; features: string[] } {
  if (manifest.input.kind === 'image') return { rows: [], features: [] };
  const features: readonly TabularFeature[] = manifest.input.features;
  const width = features.length;
  const sequence = manifest.input.kind === 'sequence';
  const steps = sequence ? (row.shape[0] ?? 0) : 1;
  // A sequence's newest step is its last (alignment newest); only a real step is perturbed.
  if (sequence && (row.mask?.[steps - 1] ?? 0) !== 1) return { rows: [], features: [] };
  const offset = sequence ? (steps - 1) * width : 0;
  const rows: FeatureRow[] = [];
  const names: string[] = [];
  features.forEach((f, j) => {
    if (f.source !== 'observation' || f.valueMap !== undefined) return;
    if (row.provenance.find((p) => p.feature === f.name)?.imputed !== false) return;
    const at = offset + j;
    const value = row.values[at];
    if (value === undefined || !Number.isFinite(value) || value === 0) return;
    const values = Float32Array.from(row.values);
    values[at] = value + Math.abs(value) * PERTURBATION; // raised, also for negative values
    rows.push({ ...row, values });
    names.push(f.name);
  });
  return { rows, features: names };
}

/** The features by how much the score moved, largest first. */
export function rankSensitivities(
  features: readonly string[],
  base: number,
  scores: readonly number[],
): Sensitivity[] {
  return features
    .map((feature, i) => ({ feature, delta: (scores[i] ?? base) - base }))
    .filter((s) => Number.isFinite(s.delta))
    .sort((a, b) => Math.abs(b.delta) - Math.abs(a.delta));
}
