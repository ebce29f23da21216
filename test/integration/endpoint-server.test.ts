/**
 * The local SageMaker-runtime endpoint server driven by the real SageMakerRuntimeClient
 * (standard retry, 3 attempts) and by the invoker: success over JSON and binary, single- and
 * multi-model endpoints, the SageMaker error contract (unknown endpoint, malformed body,
 * Triton's checks, oversize), injected faults retried by the SDK or not, and ping. Attempts
 * are counted at the server from the SDK's `amz-sdk-request` header.
 */
import {
  InvokeEndpointCommand,
  ModelError,
  SageMakerRuntimeClient,
  ValidationError,
} from '@aws-sdk/client-sagemaker-runtime';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { encodeRequest } from '../../shared/inference/codec.js';
import type { InferenceError } from '../../shared/inference/errors.js';
import {
  InferenceInternalDependencyError,
  InferenceModelError,
  InferenceServiceUnavailableError,
  InferenceThrottlingError,
  InferenceTimeoutError,
  InferenceValidationError,
} from '../../shared/inference/errors.js';
import { createInvoker, type Invoker, type InvokerRow } from '../../shared/inference/invoker.js';
import type { ModelManifest } from '../../shared/inference/manifest.js';
import { loadRegistry } from '../../shared/inference/registry.js';
import { MAX_PAYLOAD_BYTES, startEndpointServer, type EndpointServer } from '../../local/sagemaker/server.js';

const FIXTURES = fileURLToPath(new URL('../fixtures/models', import.meta.url));
const MODELS = fileURLToPath(new URL('../../models', import.meta.url));
const EP = 'tiny-linear';
const W = [0.1, 0.2, 0.3, 0.4];
const B = 0.5;
/** What tiny-linear computes, in float32 like the model. */
const expected = (x: readonly number[]): number =>
  Math.fround(
    x.reduce((s, v, i) => Math.fround(s + Math.fround(Math.fround(v) * Math.fround(W[i] ?? 0))), 0) + B,
  );

const sdkClient = (url: string): SageMakerRuntimeClient =>
  new SageMakerRuntimeClient({
    endpoint: url,
    region: 'us-east-1',
    credentials: { accessKeyId: 'x', secretAccessKey: 'x' },
  });

const row = (...values: number[]): InvokerRow => ({
  values: Float32Array.from(values),
  shape: [values.length],
});
const enc = new TextEncoder();

let server: EndpointServer;
let client: SageMakerRuntimeClient;
let tiny: ModelManifest;
let invoker: Invoker;

beforeAll(async () => {
  server = await startEndpointServer({
    modelsDir: FIXTURES,
    port: 0,
    multiModelEndpointName: 'fhir-analytics',
  });
  client = sdkClient(server.url);
  const registry = await loadRegistry(FIXTURES);
  const m = registry.get('tiny-linear');
  if (!m) throw new Error('tiny-linear fixture missing');
  tiny = m;
  invoker = createInvoker({ client, endpointName: (mm) => mm.id });
});
afterAll(async () => {
  client.destroy();
  await server.close();
});
beforeEach(() => {
  server.setFault(EP, undefined);
  server.resetStats();
});

/** Sends a raw body to an endpoint and returns what the SDK threw. */
async function raw(
  body: Uint8Array | string,
  endpoint = EP,
  contentType = 'application/json',
): Promise<unknown> {
  return client
    .send(
      new InvokeEndpointCommand({
        EndpointName: endpoint,
        Body: typeof body === 'string' ? enc.encode(body) : body,
        ContentType: contentType,
      }),
    )
    .then(
      () => new Error('expected a failure'),
      (e: unknown) => e,
    );
}

describe('success', () => {
  it('predicts through the invoker, JSON and binary alike, batching over max_batch_size', async () => {
    const rows = Array.from({ length: 20 }, (_, i) => row(i, 1, -i / 2, 0.25));
    const want = rows.map((r) => expected(Array.from(r.values)));
    const viaJson = (await invoker.predict(tiny, rows)).map((p) => p.score);
    // MatMul may sum in another order than `expected`: float32 closeness, not identity.
    viaJson.forEach((score, i) => {
      expect(score).toBeCloseTo(want[i] ?? Number.NaN, 5);
    });
    const binary = createInvoker({ client, endpointName: (m) => m.id, binaryThreshold: 0 });
    // The same model run over the binary extension gives the identical float32 scores.
    expect((await binary.predict(tiny, rows)).map((p) => p.score)).toEqual(viaJson);
    const stats = server.stats(EP);
    expect(stats.requests).toBe(6); // 3 batches (8, 8, 4), twice
    expect(stats.sessionRuns).toBe(6);
    expect(stats.attempts).toEqual([1, 1, 1, 1, 1, 1]);
  });

  it('answers with the production variant and a request id', async () => {
    const { body, contentType } = encodeRequest(
      [{ name: 'x', datatype: 'FP32', shape: [1, 4], data: new Float32Array(4) }],
      ['y'],
    );
    const res = await client.send(
      new InvokeEndpointCommand({ EndpointName: EP, Body: body, ContentType: contentType }),
    );
    expect(res.InvokedProductionVariant).toBe('AllTraffic');
    expect(res.ContentType).toBe('application/json');
    expect(res.$metadata.requestId).toMatch(/^[0-9a-f-]{36}$/);
    expect(JSON.parse(new TextDecoder().decode(res.Body))).toMatchObject({
      model_name: 'tiny-linear',
      model_version: '1',
      outputs: [{ name: 'y', datatype: 'FP32', shape: [1, 1], data: [0.5] }],
    });
  });

  it('serves a multi-model endpoint by TargetModel', async () => {
    const mme = createInvoker({ client, endpointName: () => 'fhir-analytics', targetModel: (m) => m.id });
    const [p] = await mme.predict(tiny, [row(1, 1, 1, 1)]);
    expect(p?.score).toBeCloseTo(expected([1, 1, 1, 1]), 5);
    expect(server.stats('fhir-analytics').sessionRuns).toBe(1);
    const noTarget = createInvoker({ client, endpointName: () => 'fhir-analytics' });
    await expect(noTarget.predict(tiny, [row(1, 1, 1, 1)])).rejects.toThrow(/TargetModel is required/);
    const unknownTarget = createInvoker({
      client,
      endpointName: () => 'fhir-analytics',
      targetModel: () => 'nope',
    });
    await expect(unknownTarget.predict(tiny, [row(1, 1, 1, 1)])).rejects.toBeInstanceOf(
      InferenceValidationError,
    );
  });

  it('answers ping', async () => {
    const res = await fetch(`${server.url}/ping`);
    expect(res.status).toBe(200);
  });
});

describe('the SageMaker error contract', () => {
  it('an unknown endpoint is a ValidationError (400), sent once', async () => {
    const err = await raw('{}', 'no-such-model');
    expect(err).toBeInstanceOf(ValidationError);
    expect((err as ValidationError).$metadata.httpStatusCode).toBe(400);
    expect((err as ValidationError).message).toBe(
      'Endpoint no-such-model of account 000000000000 not found.',
    );
    expect(server.stats('no-such-model').attempts).toEqual([1]);
    await expect(
      createInvoker({ client, endpointName: () => 'no-such-model' }).predict(tiny, [row(1, 2, 3, 4)]),
    ).rejects.toMatchObject({
      code: 'ValidationError',
      retryable: false,
    });
  });

  it('a malformed body is a ModelError with OriginalStatusCode 400 and Triton’s message', async () => {
    const err = await raw('{"inputs": [');
    expect(err).toBeInstanceOf(ModelError);
    const e = err as ModelError;
    expect(e.$metadata.httpStatusCode).toBe(424);
    expect(e.OriginalStatusCode).toBe(400);
    const original = JSON.parse(e.OriginalMessage ?? '{}') as { error?: string };
    expect(original.error).toMatch(/JSON header does not parse/);
    expect(e.LogStreamArn).toBe(
      'arn:aws:logs:us-east-1:000000000000:log-group:/aws/sagemaker/Endpoints/tiny-linear',
    );
    expect(e.message).toMatch(/^Received client error \(400\) from primary with message/);
    expect(server.stats(EP)).toMatchObject({
      requests: 1,
      attempts: [1],
      sessionRuns: 0,
      errors: { ModelError: 1 },
    });
  });

  it.each([
    [
      'an unknown input',
      { inputs: [{ name: 'z', shape: [1, 4], datatype: 'FP32', data: [1, 2, 3, 4] }] },
      /unexpected inference input 'z' for model 'tiny-linear'/,
    ],
    [
      'a wrong shape',
      { inputs: [{ name: 'x', shape: [1, 3], datatype: 'FP32', data: [1, 2, 3] }] },
      /unexpected shape for input 'x' for model 'tiny-linear'. Expected \[-1,4\], got \[1,3\]/,
    ],
    [
      'a wrong datatype',
      { inputs: [{ name: 'x', shape: [1, 4], datatype: 'FP64', data: [1, 2, 3, 4] }] },
      /inference input 'x' data-type is 'FP64', but model 'tiny-linear' expects 'FP32'/,
    ],
    [
      'too few elements',
      { inputs: [{ name: 'x', shape: [1, 4], datatype: 'FP32', data: [1, 2, 3] }] },
      /input "x": shape \[1,4\] needs 4 elements, got 3/,
    ],
    [
      'an unknown output',
      {
        inputs: [{ name: 'x', shape: [1, 4], datatype: 'FP32', data: [1, 2, 3, 4] }],
        outputs: [{ name: 'p' }],
      },
      /unexpected inference output 'p' for model 'tiny-linear'/,
    ],
    [
      'a batch over max_batch_size',
      { inputs: [{ name: 'x', shape: [9, 4], datatype: 'FP32', data: new Array(36).fill(0) }] },
      /batch-size must be <= 8 for 'tiny-linear'/,
    ],
  ])('%s is a ModelError (424, OriginalStatusCode 400) naming the problem', async (_what, body, message) => {
    const err = await raw(JSON.stringify(body));
    expect(err).toBeInstanceOf(ModelError);
    expect((err as ModelError).OriginalStatusCode).toBe(400);
    const original = JSON.parse((err as ModelError).OriginalMessage ?? '{}') as { error?: string };
    expect(original.error).toMatch(message);
    expect(server.stats(EP).sessionRuns).toBe(0);
  });

  it('a body over 6,291,456 bytes is a ValidationError, and the limit itself passes the size check', async () => {
    const err = await raw(new Uint8Array(MAX_PAYLOAD_BYTES + 1));
    expect(err).toBeInstanceOf(ValidationError);
    expect((err as Error).message).toMatch(/exceeds the maximum of 6291456 bytes/);
    const atLimit = await raw(new Uint8Array(MAX_PAYLOAD_BYTES).fill(0x20)); // spaces: passes the size check, then fails to parse
    expect(atLimit).toBeInstanceOf(ModelError);
    expect(server.stats(EP).attempts).toEqual([1, 1]);
  });
});

describe('faults and the SDK’s retries', () => {
  it('ThrottlingException is retried by the SDK: 3 attempts, then the typed error', async () => {
    server.setFault(EP, { failNext: 10, errorType: 'ThrottlingException' });
    const err = await invoker.predict(tiny, [row(1, 2, 3, 4)]).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InferenceThrottlingError);
    expect((err as InferenceError).retryable).toBe(true);
    expect(server.stats(EP)).toMatchObject({ requests: 3, attempts: [1, 2, 3], sessionRuns: 0 });
  });

  it('one ThrottlingException, then success on the second attempt', async () => {
    server.setFault(EP, { failNext: 1, errorType: 'ThrottlingException' });
    const [p] = await invoker.predict(tiny, [row(1, 2, 3, 4)]);
    expect(p?.score).toBeCloseTo(expected([1, 2, 3, 4]), 5);
    expect(server.stats(EP)).toMatchObject({ requests: 2, attempts: [1, 2], sessionRuns: 1 });
  });

  it('ServiceUnavailable is retried too', async () => {
    server.setFault(EP, { failNext: 10, errorType: 'ServiceUnavailable' });
    await expect(invoker.predict(tiny, [row(1, 2, 3, 4)])).rejects.toBeInstanceOf(
      InferenceServiceUnavailableError,
    );
    expect(server.stats(EP).attempts).toEqual([1, 2, 3]);
  });

  it.each([
    ['InternalDependencyException', InferenceInternalDependencyError],
    ['ModelError', InferenceModelError],
  ] as const)('%s is not retried: 1 attempt', async (errorType, cls) => {
    server.setFault(EP, { failNext: 1, errorType });
    const err = await invoker.predict(tiny, [row(1, 2, 3, 4)]).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(cls);
    expect((err as InferenceError).retryable).toBe(false);
    expect(server.stats(EP).attempts).toEqual([1]);
    // The fault is spent: the next call succeeds.
    expect(await invoker.predict(tiny, [row(0, 0, 0, 0)])).toEqual([{ score: B }]);
  });

  it('errorRate 1 fails every request; injected latency beyond timeoutMs is a timeout', async () => {
    server.setFault(EP, { errorRate: 1, errorType: 'InternalDependencyException' });
    await expect(invoker.predict(tiny, [row(1, 2, 3, 4)])).rejects.toBeInstanceOf(
      InferenceInternalDependencyError,
    );
    server.setFault(EP, { latencyMs: 2_000 });
    const slow = createInvoker({ client, endpointName: (m) => m.id, timeoutMs: 100 });
    await expect(slow.predict(tiny, [row(1, 2, 3, 4)])).rejects.toBeInstanceOf(InferenceTimeoutError);
  });
});

describe('diabetes-gbm, the real model', () => {
  let real: EndpointServer;
  let realClient: SageMakerRuntimeClient;
  beforeAll(async () => {
    real = await startEndpointServer({ modelsDir: MODELS, port: 0 });
    realClient = sdkClient(real.url);
  });
  afterAll(async () => {
    realClient.destroy();
    await real.close();
  });

  it('reproduces its golden cases through the invoker, as one batch and row by row', async () => {
    const manifest = (await loadRegistry(MODELS)).get('diabetes-gbm');
    if (!manifest) throw new Error('models/diabetes-gbm is missing');
    const golden = JSON.parse(
      readFileSync(new URL('../../models/diabetes-gbm/golden.json', import.meta.url), 'utf8'),
    ) as {
      cases: { x: number[]; expected: number }[];
    };
    expect(golden.cases.length).toBeGreaterThan(0);
    const rows = golden.cases.map((c) => row(...c.x));
    const gbm = createInvoker({ client: realClient, endpointName: (m) => m.id });
    const batch = await gbm.predict(manifest, rows);
    const single = await gbm.predict(manifest, rows.slice(0, 3));
    batch.forEach((p, i) => {
      const want = golden.cases[i]?.expected ?? Number.NaN;
      expect(Math.abs(p.score - want)).toBeLessThanOrEqual(1e-3 * Math.max(1, Math.abs(want)));
      expect(p.probabilities).toBeUndefined();
    });
    single.forEach((p, i) => {
      expect(p.score).toBeCloseTo(batch[i]?.score ?? Number.NaN, 3);
    });
    expect(real.stats('diabetes-gbm').sessionRuns).toBe(1 + 1);
  });
});
