/**
 * The SageMaker invoker: stacks feature rows into the manifest's input tensor(s), splits
 * them into batches of at most `serving.maxBatchSize`, calls InvokeEndpoint with a KServe
 * v2 body (JSON, or the binary extension for large payloads), and reads the manifest's
 * output tensor back into one Prediction per row, in row order.
 *
 * Retries are the SDK's own (standard mode, 3 attempts); this module adds none on top, so
 * attempts never multiply. The time limit covers one `send` including the SDK's retries.
 */
import { InvokeEndpointCommand, type SageMakerRuntimeClient } from '@aws-sdk/client-sagemaker-runtime';
import { errorFields, silentLogger, type Logger } from '../log.js';
import type { Prediction } from '../types.js';
import { decodeResponse, encodeRequest, JSON_CONTENT_TYPE, BINARY_CONTENT_TYPE } from './codec.js';
import {
  InferenceError,
  InferenceProtocolError,
  InferenceTimeoutError,
  InferenceUnknownError,
  InferenceValidationError,
  toInferenceError,
} from './errors.js';
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

export interface InvokerOptions {
  client: SageMakerRuntimeClient;
  /** The endpoint that serves a model (one per model, or one multi-model endpoint). */
  endpointName: (m: ModelManifest) => string;
  /** For multi-model endpoints: the `TargetModel` to send; undefined sends none. */
  targetModel?: (m: ModelManifest) => string | undefined;
  /** Limit for one InvokeEndpoint call, the SDK's retries included. Default 70 s. */
  timeoutMs?: number;
  /** Above this many input elements per call, use the binary extension. Default 1024. */
  binaryThreshold?: number;
  /** Batches of one `predict` call in flight at once. Default 4. */
  concurrency?: number;
  logger?: Logger;
}

export interface CallOptions {
  /** Aborts the call (together with the time limit). */
  signal?: AbortSignal;
}

export interface Invoker {
  /** One Prediction per row, in row order. Throws an InferenceError. */
  predict(manifest: ModelManifest, rows: readonly InvokerRow[], opts?: CallOptions): Promise<Prediction[]>;
  /** One InvokeEndpoint call with ready-made tensors; returns the decoded outputs. Throws an InferenceError. */
  invokeTensors(
    manifest: ModelManifest,
    inputs: Tensor[],
    opts?: CallOptions & { outputs?: string[] },
  ): Promise<Tensor[]>;
}

export const DEFAULT_TIMEOUT_MS = 70_000;

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

function chunk<T>(items: readonly T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

async function mapLimited<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T) => Promise<R>,
): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const state = { failed: false };
  const worker = async (): Promise<void> => {
    while (next < items.length && !state.failed) {
      const i = next++;
      try {
        results[i] = await fn(items[i] as T);
      } catch (err) {
        state.failed = true; // the other workers take no new batches
        throw err;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

export function createInvoker(opts: InvokerOptions): Invoker {
  const log = opts.logger ?? silentLogger;
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const concurrency = Math.max(1, opts.concurrency ?? 4);

  async function invokeTensors(
    manifest: ModelManifest,
    inputs: Tensor[],
    call: CallOptions & { outputs?: string[] } = {},
  ): Promise<Tensor[]> {
    const endpoint = opts.endpointName(manifest);
    const target = opts.targetModel?.(manifest);
    const started = Date.now();
    const fields = { model: manifest.id, endpoint, batch: inputs[0]?.shape[0] ?? 0 };
    const timeout = AbortSignal.timeout(timeoutMs);
    const signal = call.signal ? AbortSignal.any([timeout, call.signal]) : timeout;
    try {
      const { body, contentType } = encodeRequest(inputs, call.outputs ?? [manifest.output.tensor], {
        ...(opts.binaryThreshold !== undefined ? { binaryThreshold: opts.binaryThreshold } : {}),
      });
      const binary = contentType.startsWith(BINARY_CONTENT_TYPE);
      const res = await opts.client.send(
        new InvokeEndpointCommand({
          EndpointName: endpoint,
          Body: body,
          ContentType: contentType,
          Accept: binary ? BINARY_CONTENT_TYPE : JSON_CONTENT_TYPE,
          ...(target !== undefined ? { TargetModel: target } : {}),
        }),
        { abortSignal: signal },
      );
      // Typed as always present; a proxy or a fake may still leave it out.
      const resBody = res.Body as Uint8Array | undefined;
      if (!resBody) throw new InferenceProtocolError(`endpoint ${endpoint}: empty response body`);
      const outputs = decodeResponse(resBody, res.ContentType ?? JSON_CONTENT_TYPE);
      log.debug('inference call', { ...fields, ms: Date.now() - started, binary });
      return outputs;
    } catch (err) {
      const cancelled = call.signal?.aborted ?? false;
      const mapped = cancelled
        ? new InferenceUnknownError('Aborted', `endpoint ${endpoint}: call aborted by the caller`, {
            cause: err,
          })
        : timeout.aborted
          ? new InferenceTimeoutError(`endpoint ${endpoint}: timed out after ${timeoutMs} ms`, timeoutMs, {
              cause: err,
            })
          : toInferenceError(err);
      log.warn('inference call failed', { ...fields, ms: Date.now() - started, ...errorFields(mapped) });
      throw mapped;
    }
  }

  async function predict(
    manifest: ModelManifest,
    rows: readonly InvokerRow[],
    call: CallOptions = {},
  ): Promise<Prediction[]> {
    if (rows.length === 0) return [];
    const batches = chunk(rows, manifest.serving.maxBatchSize);
    try {
      const results = await mapLimited(batches, concurrency, async (batch) => {
        const outputs = await invokeTensors(manifest, buildInputs(manifest, batch), call);
        return interpretOutputs(manifest, outputs, batch.length);
      });
      return results.flat();
    } catch (err) {
      throw err instanceof InferenceError ? err : toInferenceError(err);
    }
  }

  return { predict, invokeTensors };
}
