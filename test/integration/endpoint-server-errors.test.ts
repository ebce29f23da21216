/**
 * The error contract and the resilience of the inference path against the local endpoint
 * server, through the real SageMakerRuntimeClient: every error row of PROTOCOLS.md's table
 * (injected with setFault) arrives as its typed error, retried by the SDK exactly when the
 * class is retryable (attempts counted at the server from `amz-sdk-request`); the manifest's
 * input checks (NaN for a model that does not impute, too many steps); and the circuit
 * breaker opening, refusing without calling the server, half-opening and closing.
 */
import { ModelError, SageMakerRuntimeClient } from '@aws-sdk/client-sagemaker-runtime';
import { InvokeEndpointCommand } from '@aws-sdk/client-sagemaker-runtime';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createCircuitBreaker } from '../../shared/inference/circuit-breaker.js';
import { encodeRequest } from '../../shared/inference/codec.js';
import {
  CircuitOpenError,
  type InferenceError,
  InferenceInternalDependencyError,
  InferenceInternalFailureError,
  InferenceModelError,
  InferenceModelNotReadyError,
  InferenceServiceUnavailableError,
  InferenceThrottlingError,
  InferenceValidationError,
} from '../../shared/inference/errors.js';
import { createInvoker, type InvokerRow } from '../../shared/inference/invoker.js';
import type { ModelManifest } from '../../shared/inference/manifest.js';
import { loadRegistry } from '../../shared/inference/registry.js';
import type { Tensor } from '../../shared/inference/tensor.js';
import {
  startEndpointServer,
  type EndpointServer,
  type SageMakerErrorCode,
} from '../../local/sagemaker/server.js';

const FIXTURES = fileURLToPath(new URL('../fixtures/models', import.meta.url));
const EP = 'tiny-linear';

const sdkClient = (url: string, maxAttempts?: number): SageMakerRuntimeClient =>
  new SageMakerRuntimeClient({
    endpoint: url,
    region: 'us-east-1',
    credentials: { accessKeyId: 'x', secretAccessKey: 'x' },
    ...(maxAttempts !== undefined ? { maxAttempts } : {}),
  });
const row = (...values: number[]): InvokerRow => ({
  values: Float32Array.from(values),
  shape: [values.length],
});

let server: EndpointServer;
let client: SageMakerRuntimeClient;
let tiny: ModelManifest;
let seq: ModelManifest;

beforeAll(async () => {
  server = await startEndpointServer({ modelsDir: FIXTURES, port: 0 });
  client = sdkClient(server.url);
  const registry = await loadRegistry(FIXTURES);
  const get = (id: string): ModelManifest => {
    const m = registry.get(id);
    if (!m) throw new Error(`fixture ${id} missing`);
    return m;
  };
  tiny = get('tiny-linear');
  seq = get('tiny-seq');
});
afterAll(async () => {
  client.destroy();
  await server.close();
});
beforeEach(() => {
  server.setFault(EP, undefined);
  server.resetStats();
});

describe('every error of the SageMaker table, through the real SDK', () => {
  const rows: [SageMakerErrorCode, number, new (...args: never[]) => InferenceError, boolean][] = [
    ['ValidationError', 400, InferenceValidationError, false],
    ['ModelError', 424, InferenceModelError, false],
    ['ModelNotReadyException', 429, InferenceModelNotReadyError, true],
    ['ThrottlingException', 400, InferenceThrottlingError, true],
    ['InternalFailure', 500, InferenceInternalFailureError, true],
    ['ServiceUnavailable', 503, InferenceServiceUnavailableError, true],
    ['InternalDependencyException', 530, InferenceInternalDependencyError, false],
  ];

  it.each(rows)(
    '%s (HTTP %i) → its typed error; the SDK retries it exactly when retryable',
    async (errorType, status, cls, retryable) => {
      server.setFault(EP, { failNext: 10, errorType });
      const invoker = createInvoker({ client, circuitBreaker: false });
      const err = await invoker.predict(tiny, [row(1, 2, 3, 4)]).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(cls);
      const e = err as InferenceError;
      expect(e.code).toBe(errorType);
      expect(e.retryable).toBe(retryable);
      expect(e.httpStatusCode).toBe(status);
      expect(e.requestId).toMatch(/^[0-9a-f-]{36}$/);
      // Standard retry: 3 attempts for the retryable classes, 1 for the others; none of ours on top.
      expect(server.stats(EP).attempts).toEqual(retryable ? [1, 2, 3] : [1]);
      expect(server.stats(EP).sessionRuns).toBe(0);
      if (e instanceof InferenceModelError) {
        expect(e.originalStatusCode).toBe(500);
        expect(e.logStreamArn).toMatch(/log-group:\/aws\/sagemaker\/Endpoints\/tiny-linear$/);
      }
    },
  );
});

describe('inputs the manifest rules out', () => {
  const rawSend = async (endpoint: string, inputs: Tensor[]): Promise<unknown> => {
    const { body, contentType } = encodeRequest(inputs, ['y'], { binary: true });
    return client
      .send(new InvokeEndpointCommand({ EndpointName: endpoint, Body: body, ContentType: contentType }))
      .then(
        () => new Error('expected a failure'),
        (e: unknown) => e,
      );
  };
  const original = (err: unknown): string =>
    (JSON.parse((err as ModelError).OriginalMessage ?? '{}') as { error?: string }).error ?? '';

  it('NaN for a model without NaN imputation: ModelError 400 at the server, ValidationError before sending', async () => {
    const x: Tensor = {
      name: 'x',
      datatype: 'FP32',
      shape: [2, 4],
      data: Float32Array.from([1, 2, 3, 4, 1, NaN, 3, 4]),
    };
    const err = await rawSend(EP, [x]);
    expect(err).toBeInstanceOf(ModelError);
    expect((err as ModelError).OriginalStatusCode).toBe(400);
    expect(original(err)).toBe(
      "input 'x' of model 'tiny-linear' holds NaN (row 1), and the model does not impute missing values",
    );
    expect(server.stats(EP).sessionRuns).toBe(0);
    server.resetStats();
    const viaInvoker = await createInvoker({ client })
      .predict(tiny, [row(1, Number.NaN, 3, 4)])
      .catch((e: unknown) => e);
    expect(viaInvoker).toBeInstanceOf(InferenceValidationError);
    expect((viaInvoker as Error).message).toMatch(/holds NaN/);
    expect(server.stats(EP).requests).toBe(0);
  });

  it('a sequence longer than input.steps (4): ModelError 400 naming the limit', async () => {
    const t = 5;
    const err = await rawSend('tiny-seq', [
      { name: 'x', datatype: 'FP32', shape: [1, t, 2], data: new Float32Array(t * 2) },
      { name: 'mask', datatype: 'FP32', shape: [1, t], data: new Float32Array(t).fill(1) },
    ]);
    expect(err).toBeInstanceOf(ModelError);
    expect(original(err)).toBe("input 'x' of model 'tiny-seq' has 5 steps, at most 4 are supported");
    const viaInvoker = await createInvoker({ client })
      .predict(seq, [{ values: new Float32Array(t * 2), shape: [t, 2], mask: new Float32Array(t).fill(1) }])
      .catch((e: unknown) => e);
    expect(viaInvoker).toBeInstanceOf(InferenceValidationError);
    expect(server.stats('tiny-seq').requests).toBe(1); // the raw one only
  });

  it('an unknown target model on a per-model endpoint, and an unknown endpoint, are ValidationErrors', async () => {
    const mme = createInvoker({ client, endpointMode: 'multi-model', multiModelEndpointName: EP });
    await expect(mme.predict(tiny, [row(1, 1, 1, 1)])).rejects.toThrow(
      /is not a multi-model endpoint and does not support the TargetModel header/,
    );
    const missing = createInvoker({ client, endpointPrefix: 'missing-' });
    await expect(missing.predict(tiny, [row(1, 1, 1, 1)])).rejects.toThrow(
      /Endpoint missing-tiny-linear of account 000000000000 not found/,
    );
  });
});

describe('the circuit breaker against the server', () => {
  it('opens after consecutive failures, refuses without calling, half-opens after the cool-down, closes on success', async () => {
    let now = 0;
    const breaker = createCircuitBreaker({ failureThreshold: 2, coolDownMs: 1_000, now: () => now });
    // One attempt per call keeps the test short; the breaker sees one outcome per call either way.
    const oneShot = sdkClient(server.url, 1);
    const invoker = createInvoker({ client: oneShot, circuitBreaker: breaker });
    server.setFault(EP, { errorRate: 1, errorType: 'ServiceUnavailable' });

    for (let i = 0; i < 2; i++) {
      await expect(invoker.predict(tiny, [row(1, 2, 3, 4)])).rejects.toBeInstanceOf(
        InferenceServiceUnavailableError,
      );
    }
    expect(breaker.state(EP)).toBe('open');
    expect(server.stats(EP).requests).toBe(2);

    const refused = await invoker.predict(tiny, [row(1, 2, 3, 4)]).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(CircuitOpenError);
    expect((refused as CircuitOpenError).retryable).toBe(true);
    expect((refused as CircuitOpenError).retryAfterMs).toBe(1_000);
    expect(server.stats(EP).requests).toBe(2); // not sent

    now += 1_000;
    expect(breaker.state(EP)).toBe('half-open');
    // The probe fails: open again, for another cool-down.
    await expect(invoker.predict(tiny, [row(1, 2, 3, 4)])).rejects.toBeInstanceOf(
      InferenceServiceUnavailableError,
    );
    expect(breaker.state(EP)).toBe('open');
    await expect(invoker.predict(tiny, [row(1, 2, 3, 4)])).rejects.toBeInstanceOf(CircuitOpenError);
    expect(server.stats(EP).requests).toBe(3);

    now += 1_000;
    server.setFault(EP, undefined);
    const [p] = await invoker.predict(tiny, [row(0, 0, 0, 0)]);
    expect(p?.score).toBeCloseTo(0.5, 6);
    expect(breaker.state(EP)).toBe('closed');
    await invoker.predict(tiny, [row(0, 0, 0, 0)]);
    expect(server.stats(EP).requests).toBe(5);
    oneShot.destroy();
  });
});
