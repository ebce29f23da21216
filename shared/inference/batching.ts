/**
 * How many rows go in one InvokeEndpoint call: at most the model's `serving.maxBatchSize`, and
 * few enough that the request body (and the response body) stays under SageMaker's 6 MB limit.
 * Bytes per row are estimated from the manifest's tensor specs and the codec that the call
 * will use: the binary extension carries 4 or 8 bytes per element, JSON up to
 * `JSON_BYTES_PER_ELEMENT` characters (a float32 written as the shortest double: sign, 17
 * digits, point, exponent, comma).
 */
import { DEFAULT_BINARY_THRESHOLD } from './codec.js';
import type { ModelManifest, TensorSpec } from './manifest.js';
import { bytesPerElement } from './tensor.js';

/** SageMaker's limit on a real-time request and response body. */
export const MAX_PAYLOAD_BYTES = 6_291_456;
/** Worst case characters of one element in KServe JSON. */
export const JSON_BYTES_PER_ELEMENT = 26;
/** Room for the JSON header (names, shapes, parameters) of a binary body, and its framing. */
export const HEADER_ALLOWANCE_BYTES = 4096;

export interface BatchPlan {
  /** Rows per call. */
  rowsPerCall: number;
  /** Estimated request bytes of one row, as the chosen codec writes it. */
  requestBytesPerRow: number;
  /** Whether a full call goes in the binary extension. */
  binary: boolean;
}

/** Elements of one row of a tensor; a dynamic dim (-1) takes its value from `rowShape`. */
function rowElements(spec: TensorSpec, rowShape?: readonly number[]): number {
  let n = 1;
  spec.dims.forEach((d, i) => {
    n *= d >= 0 ? d : (rowShape?.[i] ?? 1);
  });
  return n;
}

export interface PlanOptions {
  /** Per-call payload limit. Default 6,291,456. */
  maxPayloadBytes?: number;
  /** The invoker's switch to binary, in input elements per call. */
  binaryThreshold?: number;
  /** The actual row shape of the main input (fills dynamic dims such as a sequence's T). */
  rowShape?: readonly number[];
}

/**
 * Rows per call for a model, or 0 when a single row cannot fit the payload limit (the caller
 * must then use async inference).
 */
export function planBatches(manifest: ModelManifest, opts: PlanOptions = {}): BatchPlan {
  const limit = (opts.maxPayloadBytes ?? MAX_PAYLOAD_BYTES) - HEADER_ALLOWANCE_BYTES;
  const threshold = opts.binaryThreshold ?? DEFAULT_BINARY_THRESHOLD;
  const main = manifest.input.tensor;
  // A sequence's mask takes the time dimension of the main input.
  const maskShape = opts.rowShape?.slice(0, 1);
  const shapeFor = (spec: TensorSpec): readonly number[] | undefined =>
    spec.name === main ? opts.rowShape : maskShape;
  let elements = 0;
  let binaryBytes = 0;
  for (const spec of manifest.serving.inputs) {
    const n = rowElements(spec, shapeFor(spec));
    elements += n;
    binaryBytes += n * bytesPerElement(spec.datatype);
  }
  let outElements = 0;
  let outBinaryBytes = 0;
  for (const spec of manifest.serving.outputs.filter((o) => o.name === manifest.output.tensor)) {
    const n = rowElements(spec);
    outElements += n;
    outBinaryBytes += n * bytesPerElement(spec.datatype);
  }
  const jsonBytes = Math.max(elements, outElements) * JSON_BYTES_PER_ELEMENT;
  binaryBytes = Math.max(binaryBytes, outBinaryBytes);
  let rows = Math.min(manifest.serving.maxBatchSize, Math.floor(limit / Math.max(1, binaryBytes)));
  // The invoker writes JSON at or below the threshold; then JSON's size bounds the rows.
  const binary = rows * elements > threshold;
  if (!binary) rows = Math.min(rows, Math.floor(limit / Math.max(1, jsonBytes)));
  return {
    rowsPerCall: Math.max(0, rows),
    requestBytesPerRow: binary ? binaryBytes : jsonBytes,
    binary,
  };
}

/** Consecutive slices of at most `size` items. */
export function chunk<T>(items: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

/**
 * Runs `fn` over `items` with at most `limit` in flight, results in item order. The first
 * failure stops new items from starting and is thrown once the ones in flight settle.
 */
export async function mapLimited<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T, index: number) => Promise<R>,
): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const state = { failed: false };
  const worker = async (): Promise<void> => {
    while (next < items.length && !state.failed) {
      const i = next++;
      try {
        results[i] = await fn(items[i] as T, i);
      } catch (err) {
        state.failed = true; // the other workers take no new items
        throw err;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}
