/**
 * The SageMaker invoker: stacks feature rows into the manifest's input tensor(s), splits them
 * into calls of at most `serving.maxBatchSize` rows and at most 6 MB of request (and response)
 * body (see batching.ts), runs the calls with bounded concurrency, and reads the outputs back
 * into one Prediction per row, in row order.
 *
 * Endpoint addressing (`endpointMode`):
 * - `per-model` (default): one endpoint per model, named `endpointPrefix + manifest.id`;
 * - `multi-model`: one endpoint `multiModelEndpointName` for all models, each call carrying
 *   `TargetModel` = the manifest's `serving.tritonModelName`.
 * `endpointName` / `targetModel` functions override either.
 *
 * Retries are the SDK's own (standard mode: 3 attempts for throttling, 5xx, ModelNotReady);
 * this module adds none on top, so attempts never multiply: one `send` per call, and the time
 * limit covers that `send` with its retries. Around each call sits a circuit breaker per
 * endpoint (and TargetModel) that refuses calls with `CircuitOpenError` while the endpoint is
 * failing, and metrics (latency, batch size, bytes, errors by class) go to an injected sink.
 */
import { InvokeEndpointCommand, type SageMakerRuntimeClient } from '@aws-sdk/client-sagemaker-runtime';
import { errorFields, silentLogger, type Logger } from '../log.js';
import type { Prediction } from '../types.js';
import { chunk, mapLimited, MAX_PAYLOAD_BYTES, planBatches } from './batching.js';
import { BufferPool } from './buffer-pool.js';
import { createCircuitBreaker, type CircuitBreaker, type CircuitBreakerOptions } from './circuit-breaker.js';
import { BINARY_CONTENT_TYPE, decodeResponse, encodeRequest, JSON_CONTENT_TYPE } from './codec.js';
import {
  InferenceError,
  InferenceProtocolError,
  InferenceTimeoutError,
  InferenceUnknownError,
  InferenceValidationError,
  toInferenceError,
} from './errors.js';
import { manifestInputProblem } from './input-checks.js';
import type { ModelManifest } from './manifest.js';
import { METRIC, noopMetrics, type MetricsSink } from './metrics.js';
import { buildInputs, interpretOutputs, type InvokerRow } from './rows.js';
import type { Tensor } from './tensor.js';

export { buildInputs, interpretOutputs, type InvokerRow } from './rows.js';

export type EndpointMode = 'per-model' | 'multi-model';

export interface InvokerOptions {
  client: SageMakerRuntimeClient;
  /** Default `per-model`. */
  endpointMode?: EndpointMode;
  /** Per-model endpoints: endpoint name = prefix + model id. Default ''. */
  endpointPrefix?: string;
  /** Multi-model mode: the one endpoint's name (required there unless `endpointName` is given). */
  multiModelEndpointName?: string;
  /** Overrides the endpoint name of a model. */
  endpointName?: (m: ModelManifest) => string;
  /** Overrides `TargetModel` (undefined sends none). Multi-model default: `serving.tritonModelName`. */
  targetModel?: (m: ModelManifest) => string | undefined;
  /** Limit for one InvokeEndpoint call, the SDK's retries included. Default 70 s. */
  timeoutMs?: number;
  /** Above this many input elements per call, use the binary extension. Default 1024. */
  binaryThreshold?: number;
  /** Calls of one `predict` in flight at once. Default 4. */
  concurrency?: number;
  /** Request (and response) body limit per call. Default 6,291,456 (SageMaker's). */
  maxPayloadBytes?: number;
  /** A breaker (shared between invokers), options for this invoker's own, or false for none. Default: on, with defaults. */
  circuitBreaker?: CircuitBreaker | CircuitBreakerOptions | false;
  /** Default: no-op. */
  metrics?: MetricsSink;
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

function isBreaker(v: unknown): v is CircuitBreaker {
  return typeof (v as Partial<CircuitBreaker> | undefined)?.run === 'function';
}

/** `(endpoint, target)` of a model under the invoker's addressing options. */
export function resolveAddress(
  opts: Pick<
    InvokerOptions,
    'endpointMode' | 'endpointPrefix' | 'multiModelEndpointName' | 'endpointName' | 'targetModel'
  >,
): (m: ModelManifest) => { endpoint: string; target: string | undefined } {
  const mode = opts.endpointMode ?? 'per-model';
  if (mode === 'multi-model' && !opts.endpointName && !opts.multiModelEndpointName) {
    throw new InferenceValidationError('endpointMode multi-model needs multiModelEndpointName');
  }
  const prefix = opts.endpointPrefix ?? '';
  return (m) => {
    const endpoint =
      opts.endpointName?.(m) ??
      (mode === 'multi-model' ? (opts.multiModelEndpointName ?? '') : prefix + m.id);
    const target = opts.targetModel
      ? opts.targetModel(m)
      : mode === 'multi-model'
        ? m.serving.tritonModelName
        : undefined;
    return { endpoint, target };
  };
}

export function createInvoker(opts: InvokerOptions): Invoker {
  const log = opts.logger ?? silentLogger;
  const metrics = opts.metrics ?? noopMetrics;
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const concurrency = Math.max(1, opts.concurrency ?? 4);
  const maxPayloadBytes = opts.maxPayloadBytes ?? MAX_PAYLOAD_BYTES;
  const address = resolveAddress(opts);
  // Request bodies of image batches (MBs each) are reused between calls: see buffer-pool.ts.
  const bodies = new BufferPool();
  const breaker: CircuitBreaker | undefined =
    opts.circuitBreaker === false
      ? undefined
      : isBreaker(opts.circuitBreaker)
        ? opts.circuitBreaker
        : createCircuitBreaker(opts.circuitBreaker ?? {});

  async function send(
    manifest: ModelManifest,
    inputs: Tensor[],
    outputNames: string[],
    endpoint: string,
    target: string | undefined,
    signal: AbortSignal,
  ): Promise<{ outputs: Tensor[]; bytes: number; binary: boolean }> {
    const { body, contentType } = encodeRequest(inputs, outputNames, {
      ...(opts.binaryThreshold !== undefined ? { binaryThreshold: opts.binaryThreshold } : {}),
      allocate: (n) => bodies.acquire(n),
    });
    if (body.length > maxPayloadBytes) {
      throw new InferenceValidationError(
        `model ${manifest.id}: request body of ${body.length} bytes exceeds the ${maxPayloadBytes}-byte limit of real-time inference; use async inference`,
      );
    }
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
    // Answered: the request went out whole (the endpoint reads the body before it answers), so
    // its buffer can serve the next call. After a failure it is left to the collector: a socket
    // may still be writing it.
    bodies.release(body);
    // Typed as always present; a proxy or a fake may still leave it out.
    const resBody = res.Body as Uint8Array | undefined;
    if (!resBody) throw new InferenceProtocolError(`endpoint ${endpoint}: empty response body`);
    return {
      outputs: decodeResponse(resBody, res.ContentType ?? JSON_CONTENT_TYPE),
      bytes: body.length,
      binary,
    };
  }

  async function invokeTensors(
    manifest: ModelManifest,
    inputs: Tensor[],
    call: CallOptions & { outputs?: string[] } = {},
  ): Promise<Tensor[]> {
    const { endpoint, target } = address(manifest);
    const rows = inputs[0]?.shape[0] ?? 0;
    const dims = { Model: manifest.id, Endpoint: endpoint };
    const started = performance.now();
    const fields = { model: manifest.id, endpoint, batch: rows };
    // A timer cleared when the call ends (AbortSignal.timeout would keep one alive for timeoutMs
    // after every call).
    const limit = new AbortController();
    const timer = setTimeout(() => {
      limit.abort(new DOMException(`timed out after ${String(timeoutMs)} ms`, 'TimeoutError'));
    }, timeoutMs);
    timer.unref();
    const timeout = limit.signal;
    const signal = call.signal ? AbortSignal.any([timeout, call.signal]) : timeout;
    const run = () =>
      send(manifest, inputs, call.outputs ?? [manifest.output.tensor], endpoint, target, signal);
    try {
      const problem = manifestInputProblem(manifest, inputs);
      if (problem !== undefined) throw new InferenceValidationError(problem);
      const key = target !== undefined ? `${endpoint}/${target}` : endpoint;
      const guarded = () =>
        run().catch((err: unknown) => {
          throw mapError(err); // typed before the breaker classifies it
        });
      const result = await (breaker ? breaker.run(key, guarded) : guarded());
      const ms = performance.now() - started;
      metrics.onMetric({ name: METRIC.latency, value: ms, unit: 'Milliseconds', dimensions: dims });
      metrics.onMetric({ name: METRIC.batchSize, value: rows, unit: 'Count', dimensions: dims });
      metrics.onMetric({ name: METRIC.requestBytes, value: result.bytes, unit: 'Bytes', dimensions: dims });
      log.debug('inference call', { ...fields, ms: Math.round(ms), binary: result.binary });
      return result.outputs;
    } catch (err) {
      const mapped = mapError(err);
      metrics.onMetric({
        name: METRIC.errors,
        value: 1,
        unit: 'Count',
        dimensions: { ...dims, ErrorClass: mapped.code },
      });
      log.warn('inference call failed', {
        ...fields,
        ms: Math.round(performance.now() - started),
        ...errorFields(mapped),
      });
      throw mapped;
    } finally {
      clearTimeout(timer);
    }

    /** Into the hierarchy, telling the caller's abort from the time limit. */
    function mapError(err: unknown): InferenceError {
      if (err instanceof InferenceError) return err;
      if (call.signal?.aborted) {
        return new InferenceUnknownError('Aborted', `endpoint ${endpoint}: call aborted by the caller`, {
          cause: err,
        });
      }
      if (timeout.aborted) {
        return new InferenceTimeoutError(`endpoint ${endpoint}: timed out after ${timeoutMs} ms`, timeoutMs, {
          cause: err,
        });
      }
      return toInferenceError(err);
    }
  }

  async function predict(
    manifest: ModelManifest,
    rows: readonly InvokerRow[],
    call: CallOptions = {},
  ): Promise<Prediction[]> {
    const first = rows[0];
    if (!first) return [];
    const plan = planBatches(manifest, {
      maxPayloadBytes,
      rowShape: first.shape,
      ...(opts.binaryThreshold !== undefined ? { binaryThreshold: opts.binaryThreshold } : {}),
    });
    if (plan.rowsPerCall < 1) {
      throw new InferenceValidationError(
        `model ${manifest.id}: one row (~${plan.requestBytesPerRow} bytes) exceeds the ${maxPayloadBytes}-byte limit of real-time inference; use async inference`,
      );
    }
    try {
      const results = await mapLimited(chunk(rows, plan.rowsPerCall), concurrency, async (batch) => {
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
