/**
 * The SageMaker invoker against a mocked SageMakerRuntimeClient (aws-sdk-client-mock):
 * what goes on the wire (endpoint, TargetModel, content types, tensors), how outputs become
 * Predictions, how every SageMaker error class maps to a typed error (with no retry layer of
 * our own: one `send` per batch), timeouts, and batching over maxBatchSize in row order.
 */
import {
  InternalDependencyException,
  InternalFailure,
  InvokeEndpointCommand,
  ModelError,
  ModelNotReadyException,
  SageMakerRuntimeClient,
  SageMakerRuntimeServiceException,
  ServiceUnavailable,
  ValidationError,
  type InvokeEndpointCommandInput,
  type InvokeEndpointCommandOutput,
} from '@aws-sdk/client-sagemaker-runtime';
import { mockClient } from 'aws-sdk-client-mock';
import { readFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import {
  BINARY_CONTENT_TYPE,
  decodeRequest,
  encodeResponse,
  JSON_CONTENT_TYPE,
} from '../../shared/inference/codec.js';
import {
  InferenceError,
  InferenceInternalDependencyError,
  InferenceInternalFailureError,
  InferenceModelError,
  InferenceModelNotReadyError,
  InferenceNetworkError,
  InferenceProtocolError,
  InferenceServiceUnavailableError,
  InferenceThrottlingError,
  InferenceTimeoutError,
  InferenceValidationError,
  toInferenceError,
} from '../../shared/inference/errors.js';
import { createInvoker, type InvokerRow } from '../../shared/inference/invoker.js';
import { parseManifest, type ModelManifest } from '../../shared/inference/manifest.js';
import type { Tensor } from '../../shared/inference/tensor.js';

const MANIFEST_FILE = new URL('../fixtures/models/tiny-linear/manifest.json', import.meta.url);
/** tiny-linear: tabular, x FP32 [N,4] → y FP32 [N,1], maxBatchSize 8, probability with no labels. */
const tiny: ModelManifest = parseManifest(JSON.parse(readFileSync(MANIFEST_FILE, 'utf8')), 'tiny-linear');

const sm = mockClient(SageMakerRuntimeClient);
afterEach(() => {
  sm.reset();
});

const client = (): SageMakerRuntimeClient => new SageMakerRuntimeClient({ region: 'us-east-1' });
const invoker = (extra: Partial<Parameters<typeof createInvoker>[0]> = {}) =>
  createInvoker({ client: client(), endpointName: (m) => `ep-${m.id}`, ...extra });

const row = (...values: number[]): InvokerRow => ({
  values: Float32Array.from(values),
  shape: [values.length],
});

/** A response body as the endpoint would send it. */
function respond(outputs: Tensor[], binary = false): InvokeEndpointCommandOutput {
  const { body, contentType } = encodeResponse(outputs, { modelName: 'm', binary });
  return { Body: body, ContentType: contentType, $metadata: {} } as unknown as InvokeEndpointCommandOutput;
}

/** The request tensors of the n-th InvokeEndpoint call. */
function sent(n: number): { input: InvokeEndpointCommandInput; tensors: Tensor[]; outputs?: string[] } {
  const call = sm.commandCalls(InvokeEndpointCommand)[n];
  if (!call) throw new Error(`no call ${n}`);
  const input = call.args[0].input;
  const req = decodeRequest(input.Body as Uint8Array, input.ContentType ?? '');
  const outputs = req.outputs?.map((o) => o.name);
  return { input, tensors: req.inputs, ...(outputs ? { outputs } : {}) };
}

/** A fake endpoint: y = sum of the row, as [N,1]. */
function sumEndpoint(input: InvokeEndpointCommandInput): InvokeEndpointCommandOutput {
  const [x] = decodeRequest(input.Body as Uint8Array, input.ContentType ?? '').inputs;
  if (!x) throw new Error('no input');
  const [n = 0, w = 0] = x.shape;
  const y = Float32Array.from({ length: n }, (_, i) =>
    Array.from(x.data as Float32Array)
      .slice(i * w, (i + 1) * w)
      .reduce((a, b) => a + b, 0),
  );
  return respond([{ name: 'y', datatype: 'FP32', shape: [n, 1], data: y }]);
}

describe('request encoding', () => {
  it('sends the stacked rows as x [N,4] in KServe JSON to the manifest endpoint, asking for y', async () => {
    sm.on(InvokeEndpointCommand).callsFake(sumEndpoint);
    const predictions = await invoker().predict(tiny, [row(1, 2, 3, 4), row(0, 0, 0, 1)]);
    expect(predictions).toEqual([{ score: 10 }, { score: 1 }]);

    const { input, tensors, outputs } = sent(0);
    expect(input.EndpointName).toBe('ep-tiny-linear');
    expect(input.TargetModel).toBeUndefined();
    expect(input.ContentType).toBe(JSON_CONTENT_TYPE);
    expect(input.Accept).toBe(JSON_CONTENT_TYPE);
    expect(tensors).toEqual([
      { name: 'x', datatype: 'FP32', shape: [2, 4], data: Float32Array.from([1, 2, 3, 4, 0, 0, 0, 1]) },
    ]);
    expect(outputs).toEqual(['y']);
    // The time limit travels as an AbortSignal on send.
    const sendOptions = (sm.commandCalls(InvokeEndpointCommand)[0]?.args as unknown[] | undefined)?.[1] as
      { abortSignal?: unknown } | undefined;
    expect(sendOptions?.abortSignal).toBeInstanceOf(AbortSignal);
  });

  it('sets TargetModel for a multi-model endpoint', async () => {
    sm.on(InvokeEndpointCommand).callsFake(sumEndpoint);
    await invoker({ endpointName: () => 'fhir-analytics', targetModel: (m) => `${m.id}.tar.gz` }).predict(
      tiny,
      [row(1, 1, 1, 1)],
    );
    expect(sent(0).input).toMatchObject({
      EndpointName: 'fhir-analytics',
      TargetModel: 'tiny-linear.tar.gz',
    });
  });

  it('uses the binary extension above the threshold and for NaN (imputation "nan"), and reads binary answers', async () => {
    sm.on(InvokeEndpointCommand).callsFake((input: InvokeEndpointCommandInput) => {
      const [x] = decodeRequest(input.Body as Uint8Array, input.ContentType ?? '').inputs;
      const n = x?.shape[0] ?? 0;
      return respond(
        [{ name: 'y', datatype: 'FP32', shape: [n, 1], data: new Float32Array(n).fill(0.5) }],
        true,
      );
    });
    await invoker({ binaryThreshold: 4 }).predict(tiny, [row(1, 2, 3, 4), row(1, 2, 3, 4)]);
    expect(sent(0).input.ContentType?.startsWith(BINARY_CONTENT_TYPE)).toBe(true);
    expect(sent(0).input.Accept).toBe(BINARY_CONTENT_TYPE);

    // A model whose manifest imputes in-graph (strategy "nan") takes NaN; the binary extension carries it.
    const imputing = parseManifest(
      {
        ...tiny,
        input: {
          ...tiny.input,
          features:
            tiny.input.kind === 'image'
              ? []
              : tiny.input.features.map((f, i) => (i === 1 ? { ...f, imputation: { strategy: 'nan' } } : f)),
        },
      },
      'imputing',
    );
    const [p] = await invoker().predict(imputing, [row(1, Number.NaN, 3, 4)]);
    expect(p).toEqual({ score: 0.5 });
    const nanCall = sent(1);
    expect(nanCall.input.ContentType?.startsWith(BINARY_CONTENT_TYPE)).toBe(true);
    expect(Number.isNaN(nanCall.tensors[0]?.data[1])).toBe(true);
  });

  it('stacks the mask tensor for sequence models and converts to the spec datatype', async () => {
    const seq = parseManifest(
      {
        ...tiny,
        input: {
          kind: 'sequence',
          tensor: 'x',
          maskTensor: 'mask',
          features: tiny.input.kind === 'image' ? [] : tiny.input.features,
          step: 'P1M',
          steps: 3,
        },
        serving: {
          ...tiny.serving,
          inputs: [
            { name: 'x', datatype: 'FP32', dims: [3, 2] },
            { name: 'mask', datatype: 'BOOL', dims: [3] },
          ],
        },
      },
      'seq',
    );
    sm.on(InvokeEndpointCommand).resolves(
      respond([{ name: 'y', datatype: 'FP32', shape: [2], data: Float32Array.from([0.1, 0.9]) }]),
    );
    const rows: InvokerRow[] = [
      { values: Float32Array.from([1, 2, 3, 4, 5, 6]), shape: [3, 2], mask: Float32Array.from([0, 1, 1]) },
      { values: Float32Array.from([6, 5, 4, 3, 2, 1]), shape: [3, 2], mask: Float32Array.from([1, 1, 1]) },
    ];
    expect(await invoker().predict(seq, rows)).toEqual([
      { score: Math.fround(0.1) },
      { score: Math.fround(0.9) },
    ]);
    const [x, mask] = sent(0).tensors;
    expect(x?.shape).toEqual([2, 3, 2]);
    expect(mask).toEqual({
      name: 'mask',
      datatype: 'BOOL',
      shape: [2, 3],
      data: Uint8Array.from([0, 1, 1, 1, 1, 1]),
    });
  });

  it('refuses rows that do not fit the manifest, without calling the endpoint', async () => {
    const err = await invoker()
      .predict(tiny, [row(1, 2, 3)])
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InferenceValidationError);
    expect((err as Error).message).toMatch(/tensor "x" expects row shape \[4\], got \[3\]/);
    expect(sm.commandCalls(InvokeEndpointCommand)).toHaveLength(0);
    expect(await invoker().predict(tiny, [])).toEqual([]);
  });
});

describe('output interpretation', () => {
  const withOutput = (
    output: Partial<ModelManifest['output']>,
    task: ModelManifest['task'] = 'classification',
  ) => parseManifest({ ...tiny, task, output: { ...tiny.output, ...output } }, 'variant');
  const labels = [{ code: { system: 's', code: 'neg' } }, { code: { system: 's', code: 'pos' } }];
  const answer = (shape: number[], values: number[]): void => {
    sm.on(InvokeEndpointCommand).resolves(
      respond([
        { name: 'extra', datatype: 'INT64', shape: [shape[0] ?? 0], data: new BigInt64Array(shape[0] ?? 0) },
        { name: 'y', datatype: 'FP32', shape, data: Float32Array.from(values) },
      ]),
    );
  };
  const two = [row(0, 0, 0, 0), row(0, 0, 0, 0)];

  it('[N, labels] probabilities: score is the last (positive) column, probabilities the row', async () => {
    answer([2, 2], [0.75, 0.25, 0.125, 0.875]);
    expect(await invoker().predict(withOutput({ labels }), two)).toEqual([
      { score: 0.25, probabilities: [0.75, 0.25] },
      { score: 0.875, probabilities: [0.125, 0.875] },
    ]);
  });

  it('[N] and [N,1] probabilities: score; with two labels also [1-p, p]', async () => {
    answer([2], [0.25, 0.5]);
    expect(await invoker().predict(tiny, two)).toEqual([{ score: 0.25 }, { score: 0.5 }]);
    sm.reset();
    answer([2, 1], [0.25, 0.5]);
    expect(await invoker().predict(withOutput({ labels }), two)).toEqual([
      { score: 0.25, probabilities: [0.75, 0.25] },
      { score: 0.5, probabilities: [0.5, 0.5] },
    ]);
  });

  it('regression: one score per row', async () => {
    answer([2, 1], [151.5, 75.25]);
    expect(await invoker().predict(withOutput({ kind: 'regression' }, 'regression'), two)).toEqual([
      { score: 151.5 },
      { score: 75.25 },
    ]);
  });

  it('a missing output, a wrong row count, a label mismatch or a NaN score is a protocol error', async () => {
    const fails = async (m: ModelManifest, rx: RegExp): Promise<void> => {
      const err = await invoker()
        .predict(m, two)
        .catch((e: unknown) => e);
      expect(err).toBeInstanceOf(InferenceProtocolError);
      expect((err as InferenceError).retryable).toBe(false);
      expect((err as Error).message).toMatch(rx);
      sm.reset();
    };
    sm.on(InvokeEndpointCommand).resolves(
      respond([{ name: 'z', datatype: 'FP32', shape: [2], data: new Float32Array(2) }]),
    );
    await fails(tiny, /output "y" is missing from the response \(got z\)/);
    answer([3, 1], [1, 2, 3]);
    await fails(tiny, /output "y" has shape \[3,1\], expected \[2\] or \[2,k\]/);
    answer([2, 3], [1, 2, 3, 4, 5, 6]);
    await fails(withOutput({ labels }), /has 3 columns, the manifest has 2 labels/);
    answer([2, 2], [1, 2, 3, 4]);
    await fails(withOutput({ kind: 'regression' }, 'regression'), /has 2 columns, a regression has 1/);
    answer([2], [0.5, Number.NaN]);
    await fails(tiny, /row 1 is not finite/);
  });
});

describe('errors', () => {
  const meta = (status: number) => ({ $metadata: { httpStatusCode: status, requestId: 'req-1' } });
  const throttling = new SageMakerRuntimeServiceException({
    name: 'ThrottlingException',
    $fault: 'client',
    message: 'Rate exceeded',
    ...meta(400),
  });
  const cases: [string, Error, new (...args: never[]) => InferenceError, boolean][] = [
    [
      'ValidationError',
      new ValidationError({ message: 'Endpoint x not found.', ...meta(400) }),
      InferenceValidationError,
      false,
    ],
    [
      'ModelError',
      new ModelError({
        message: 'Received client error (400)',
        OriginalStatusCode: 400,
        OriginalMessage: '{"error":"bad shape"}',
        LogStreamArn: 'arn:aws:logs:us-east-1:1:log-group:/aws/sagemaker/Endpoints/x',
        ...meta(424),
      }),
      InferenceModelError,
      false,
    ],
    [
      'ModelNotReadyException',
      new ModelNotReadyException({ message: 'loading', ...meta(429) }),
      InferenceModelNotReadyError,
      true,
    ],
    ['ThrottlingException', throttling, InferenceThrottlingError, true],
    [
      'InternalFailure',
      new InternalFailure({ message: 'oops', ...meta(500) }),
      InferenceInternalFailureError,
      true,
    ],
    [
      'ServiceUnavailable',
      new ServiceUnavailable({ message: 'busy', ...meta(503) }),
      InferenceServiceUnavailableError,
      true,
    ],
    [
      'InternalDependencyException',
      new InternalDependencyException({ message: 'kms', ...meta(530) }),
      InferenceInternalDependencyError,
      false,
    ],
  ];

  it.each(cases)(
    '%s → its typed error, with retryable as the SDK treats it, sent once',
    async (code, sdkError, cls, retryable) => {
      sm.on(InvokeEndpointCommand).rejects(sdkError);
      const err = await invoker()
        .predict(tiny, [row(1, 2, 3, 4)])
        .catch((e: unknown) => e);
      expect(err).toBeInstanceOf(cls);
      expect(err).toBeInstanceOf(InferenceError);
      const e = err as InferenceError;
      expect(e.code).toBe(code);
      expect(e.retryable).toBe(retryable);
      expect(e.cause).toBe(sdkError);
      expect(e.httpStatusCode).toBe(
        sdkError instanceof SageMakerRuntimeServiceException ? sdkError.$metadata.httpStatusCode : undefined,
      );
      expect(e.requestId).toBe('req-1');
      // No retry layer of ours on top of the SDK's: one send.
      expect(sm.commandCalls(InvokeEndpointCommand)).toHaveLength(1);
    },
  );

  it('keeps ModelError’s original status and message', async () => {
    sm.on(InvokeEndpointCommand).rejects(cases[1]?.[1]);
    const err = (await invoker()
      .predict(tiny, [row(1, 2, 3, 4)])
      .catch((e: unknown) => e)) as InferenceModelError;
    expect(err.originalStatusCode).toBe(400);
    expect(err.originalMessage).toBe('{"error":"bad shape"}');
    expect(err.logStreamArn).toMatch(/^arn:aws:logs:/);
  });

  it('maps by HTTP status when the SDK could not name the error, and network and abort errors', () => {
    const unknown = (status: number) =>
      Object.assign(new Error('UnknownError'), { name: 'Unknown', $metadata: { httpStatusCode: status } });
    expect(toInferenceError(unknown(424))).toBeInstanceOf(InferenceModelError);
    expect(toInferenceError(unknown(429))).toBeInstanceOf(InferenceModelNotReadyError);
    expect(toInferenceError(unknown(502))).toBeInstanceOf(InferenceServiceUnavailableError);
    expect(toInferenceError(unknown(530))).toBeInstanceOf(InferenceInternalDependencyError);
    expect(toInferenceError(unknown(400))).toBeInstanceOf(InferenceValidationError);
    const refused = Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' });
    expect(toInferenceError(refused)).toBeInstanceOf(InferenceNetworkError);
    expect(toInferenceError(refused).retryable).toBe(true);
    const abort = Object.assign(new Error('Request aborted'), { name: 'AbortError' });
    expect(toInferenceError(abort)).toBeInstanceOf(InferenceTimeoutError);
    const already = new InferenceThrottlingError('x');
    expect(toInferenceError(already)).toBe(already);
    expect(toInferenceError('boom').code).toBe('Unknown');
  });

  it('a call that runs past timeoutMs is aborted through the signal and becomes a timeout error', async () => {
    let signal: AbortSignal | undefined;
    const hanging = {
      send: (_cmd: unknown, opts: { abortSignal: AbortSignal }) => {
        signal = opts.abortSignal;
        return new Promise((_resolve, reject) => {
          opts.abortSignal.addEventListener('abort', () => {
            reject(Object.assign(new Error('Request aborted'), { name: 'AbortError' }));
          });
        });
      },
    } as unknown as SageMakerRuntimeClient;
    const err = await createInvoker({ client: hanging, endpointName: (m) => m.id, timeoutMs: 20 })
      .predict(tiny, [row(1, 2, 3, 4)])
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InferenceTimeoutError);
    expect((err as InferenceTimeoutError).retryable).toBe(true);
    expect((err as InferenceTimeoutError).timeoutMs).toBe(20);
    expect(signal?.aborted).toBe(true);
  });
  it('a call the caller aborts is not a timeout: code Aborted, not retryable', async () => {
    const hanging = {
      send: (_cmd: unknown, opts: { abortSignal: AbortSignal }) =>
        new Promise((_resolve, reject) => {
          opts.abortSignal.addEventListener('abort', () => {
            reject(Object.assign(new Error('Request aborted'), { name: 'AbortError' }));
          });
        }),
    } as unknown as SageMakerRuntimeClient;
    const controller = new AbortController();
    const pending = createInvoker({ client: hanging, endpointName: (m) => m.id })
      .predict(tiny, [row(1, 2, 3, 4)], { signal: controller.signal })
      .catch((e: unknown) => e);
    controller.abort();
    const err = await pending;
    expect(err).toBeInstanceOf(InferenceError);
    expect(err).not.toBeInstanceOf(InferenceTimeoutError);
    expect((err as InferenceError).code).toBe('Aborted');
    expect((err as InferenceError).retryable).toBe(false);
  });
});

describe('batching', () => {
  it('splits over maxBatchSize (8) and returns predictions in row order, batches answering out of order', async () => {
    let call = 0;
    sm.on(InvokeEndpointCommand).callsFake(async (input: InvokeEndpointCommandInput) => {
      // Earlier batches answer later, so order must come from the batch index, not arrival.
      const delay = 30 - 10 * call++;
      await new Promise((r) => setTimeout(r, Math.max(0, delay)));
      return sumEndpoint(input);
    });
    const rows = Array.from({ length: 20 }, (_, i) => row(i, 0, 0, 0));
    const predictions = await invoker().predict(tiny, rows);
    expect(predictions.map((p) => p.score)).toEqual(rows.map((_, i) => i));
    const calls = sm.commandCalls(InvokeEndpointCommand);
    expect(calls).toHaveLength(3);
    const shapes = calls.map((_, i) => sent(i).tensors[0]?.shape);
    expect(shapes).toEqual([
      [8, 4],
      [8, 4],
      [4, 4],
    ]);
  });

  it('a failing batch fails the whole predict with the typed error', async () => {
    sm.on(InvokeEndpointCommand)
      .callsFakeOnce(sumEndpoint)
      .rejectsOnce(new ServiceUnavailable({ message: 'busy', $metadata: { httpStatusCode: 503 } }))
      .callsFake(sumEndpoint);
    const rows = Array.from({ length: 20 }, (_, i) => row(i, 0, 0, 0));
    await expect(invoker({ concurrency: 1 }).predict(tiny, rows)).rejects.toBeInstanceOf(
      InferenceServiceUnavailableError,
    );
    // With one batch at a time, the batch after the failure is not sent.
    expect(sm.commandCalls(InvokeEndpointCommand)).toHaveLength(2);
  });
});

describe('endpoint addressing', () => {
  it('per-model (default): prefix + model id, no TargetModel', async () => {
    sm.on(InvokeEndpointCommand).callsFake(sumEndpoint);
    await createInvoker({ client: client(), endpointPrefix: 'fa-' }).predict(tiny, [row(1, 1, 1, 1)]);
    expect(sent(0).input.EndpointName).toBe('fa-tiny-linear');
    expect(sent(0).input.TargetModel).toBeUndefined();
  });

  it('multi-model: one endpoint, TargetModel = serving.tritonModelName; a missing endpoint name is refused', async () => {
    sm.on(InvokeEndpointCommand).callsFake(sumEndpoint);
    await createInvoker({
      client: client(),
      endpointMode: 'multi-model',
      multiModelEndpointName: 'fhir-analytics',
    }).predict(tiny, [row(1, 1, 1, 1)]);
    expect(sent(0).input).toMatchObject({ EndpointName: 'fhir-analytics', TargetModel: 'tiny-linear' });
    expect(() => createInvoker({ client: client(), endpointMode: 'multi-model' })).toThrow(
      /multi-model needs multiModelEndpointName/,
    );
  });
});
