/**
 * The SageMaker invoker against a mocked SageMakerRuntimeClient (aws-sdk-client-mock):
 * what goes on the wire (endpoint, TargetModel, content types, tensors), how outputs become
 * Predictions, and endpoint addressing. How every SageMaker error class maps to a typed error,
 * timeouts and batching: invoker-errors.test.ts.
 */
import { InvokeEndpointCommand, type InvokeEndpointCommandInput } from '@aws-sdk/client-sagemaker-runtime';
import { afterEach, describe, expect, it } from 'vitest';
import { BINARY_CONTENT_TYPE, decodeRequest, JSON_CONTENT_TYPE } from '../../shared/inference/codec.js';
import {
  type InferenceError,
  InferenceProtocolError,
  InferenceValidationError,
} from '../../shared/inference/errors.js';
import { createInvoker, type InvokerRow } from '../../shared/inference/invoker.js';
import { parseManifest, type ModelManifest } from '../../shared/inference/manifest.js';
import { client, invoker, respond, row, sent, sm, sumEndpoint, tiny } from './invoker-fixtures.js';

afterEach(() => {
  sm.reset();
});

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
