/**
 * Rows to tensors and tensors to predictions: stacks feature rows into the manifest's input
 * tensor(s) (and the mask of a sequence model), checking each row against the tensor specs,
 * and reads the manifest's output tensor back into one Prediction per row.
 */
import type { Prediction } from '../types.js';
import { InferenceProtocolError, InferenceValidationError } from './errors.js';
import type { ModelManifest, TensorSpec } from './manifest.js';
import { elementCount, fromNumbers, numberAt, type Tensor } from './tensor.js';

/** One row for the model: the structural part of `FeatureRow` (shared/types.ts). */
export interface InvokerRow {
  /** Values in manifest feature order, row-major, without the batch dimension. */
  readonly values: Float32Array;
  /** The row's shape without the batch dimension. */
  readonly shape: readonly number[];
  /** Sequence models: the mask `[steps]`, 1 for a real step. */
  readonly mask?: Float32Array;
}

function specFor(manifest: ModelManifest, name: string): TensorSpec {
  const spec = manifest.serving.inputs.find((t) => t.name === name);
  if (!spec)
    throw new InferenceValidationError(
      `model ${manifest.id}: input tensor "${name}" is not in serving.inputs`,
    );
  return spec;
}

function dimsMatch(spec: readonly number[], got: readonly number[]): boolean {
  return spec.length === got.length && spec.every((d, i) => d === -1 || d === got[i]);
}

/** Stacks rows into `[n, ...shape]` of the spec's datatype, checking each row against the spec. */
function stack(
  manifest: ModelManifest,
  spec: TensorSpec,
  rows: readonly Float32Array[],
  shape: readonly number[],
): Tensor {
  if (!dimsMatch(spec.dims, shape)) {
    throw new InferenceValidationError(
      `model ${manifest.id}: tensor "${spec.name}" expects row shape [${spec.dims.join(',')}], got [${shape.join(',')}]`,
    );
  }
  const width = elementCount(shape);
  const flat = new Float32Array(rows.length * width);
  rows.forEach((values, i) => {
    if (values.length !== width) {
      throw new InferenceValidationError(
        `model ${manifest.id}: row ${i} of tensor "${spec.name}" has ${values.length} values, shape [${shape.join(',')}] needs ${width}`,
      );
    }
    flat.set(values, i * width);
  });
  const data = spec.datatype === 'FP32' ? flat : fromNumbers(spec.name, spec.datatype, flat);
  return { name: spec.name, datatype: spec.datatype, shape: [rows.length, ...shape], data };
}

/** The input tensors of one batch. */
export function buildInputs(manifest: ModelManifest, rows: readonly InvokerRow[]): Tensor[] {
  const first = rows[0];
  if (!first) return [];
  const shape = first.shape;
  rows.forEach((r, i) => {
    if (!dimsMatch(shape, r.shape)) {
      throw new InferenceValidationError(
        `model ${manifest.id}: row ${i} has shape [${r.shape.join(',')}], row 0 has [${shape.join(',')}]`,
      );
    }
  });
  const input = manifest.input;
  const x = stack(
    manifest,
    specFor(manifest, input.tensor),
    rows.map((r) => r.values),
    shape,
  );
  if (input.kind !== 'sequence') return [x];
  const steps = shape[0] ?? 0;
  const masks = rows.map((r, i) => {
    if (!r.mask)
      throw new InferenceValidationError(`model ${manifest.id}: row ${i} has no mask for a sequence model`);
    return r.mask;
  });
  return [x, stack(manifest, specFor(manifest, input.maskTensor), masks, [steps])];
}

/** Reads `manifest.output` from the decoded outputs into one Prediction per row. */
export function interpretOutputs(
  manifest: ModelManifest,
  outputs: readonly Tensor[],
  rows: number,
): Prediction[] {
  const out = manifest.output;
  const t = outputs.find((o) => o.name === out.tensor);
  const fail = (why: string): never => {
    throw new InferenceProtocolError(`model ${manifest.id}: output "${out.tensor}" ${why}`);
  };
  if (!t)
    return fail(`is missing from the response (got ${outputs.map((o) => o.name).join(', ') || 'none'})`);
  const [n, cols = 1, ...rest] = t.shape;
  if (n !== rows || rest.length > 0 || t.data.length !== rows * cols) {
    return fail(`has shape [${t.shape.join(',')}], expected [${rows}] or [${rows},k]`);
  }
  const labels = out.labels.length;
  if (out.kind === 'regression' && cols !== 1) return fail(`has ${cols} columns, a regression has 1`);
  if (out.kind === 'probability' && cols > 1 && labels > 0 && cols !== labels) {
    return fail(`has ${cols} columns, the manifest has ${labels} labels`);
  }
  const predictions: Prediction[] = [];
  for (let r = 0; r < rows; r++) {
    const row = Array.from({ length: cols }, (_, c) => numberAt(t.data, r * cols + c));
    if (!row.every(Number.isFinite)) fail(`row ${r} is not finite`);
    const score = row[cols - 1] ?? Number.NaN;
    if (out.kind === 'regression') predictions.push({ score });
    else if (cols > 1) predictions.push({ score, probabilities: row });
    else if (labels === 2) predictions.push({ score, probabilities: [1 - score, score] });
    else predictions.push({ score });
  }
  return predictions;
}
