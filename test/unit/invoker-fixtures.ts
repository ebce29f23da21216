/**
 * What the SageMaker invoker's tests (invoker*.test.ts) share: the tiny-linear manifest, the
 * mocked SageMakerRuntimeClient (aws-sdk-client-mock; each test file resets it in `afterEach`),
 * an invoker on it, rows, and a fake endpoint answering y = sum of the row.
 */
import {
  InvokeEndpointCommand,
  SageMakerRuntimeClient,
  type InvokeEndpointCommandInput,
  type InvokeEndpointCommandOutput,
} from '@aws-sdk/client-sagemaker-runtime';
import { mockClient } from 'aws-sdk-client-mock';
import { readFileSync } from 'node:fs';
import { decodeRequest, encodeResponse } from '../../shared/inference/codec.js';
import { createInvoker, type InvokerRow } from '../../shared/inference/invoker.js';
import { parseManifest, type ModelManifest } from '../../shared/inference/manifest.js';
import type { Tensor } from '../../shared/inference/tensor.js';

const MANIFEST_FILE = new URL('../fixtures/models/tiny-linear/manifest.json', import.meta.url);
/** tiny-linear: tabular, x FP32 [N,4] → y FP32 [N,1], maxBatchSize 8, probability with no labels. */
export const tiny: ModelManifest = parseManifest(
  JSON.parse(readFileSync(MANIFEST_FILE, 'utf8')),
  'tiny-linear',
);

export const sm = mockClient(SageMakerRuntimeClient);

export const client = (): SageMakerRuntimeClient => new SageMakerRuntimeClient({ region: 'us-east-1' });
export const invoker = (extra: Partial<Parameters<typeof createInvoker>[0]> = {}) =>
  createInvoker({ client: client(), endpointName: (m) => `ep-${m.id}`, ...extra });

export const row = (...values: number[]): InvokerRow => ({
  values: Float32Array.from(values),
  shape: [values.length],
});

/** A response body as the endpoint would send it. */
export function respond(outputs: Tensor[], binary = false): InvokeEndpointCommandOutput {
  const { body, contentType } = encodeResponse(outputs, { modelName: 'm', binary });
  return { Body: body, ContentType: contentType, $metadata: {} } as unknown as InvokeEndpointCommandOutput;
}

/** The request tensors of the n-th InvokeEndpoint call. */
export function sent(n: number): {
  input: InvokeEndpointCommandInput;
  tensors: Tensor[];
  outputs?: string[];
} {
  const call = sm.commandCalls(InvokeEndpointCommand)[n];
  if (!call) throw new Error(`no call ${n}`);
  const input = call.args[0].input;
  const req = decodeRequest(input.Body as Uint8Array, input.ContentType ?? '');
  const outputs = req.outputs?.map((o) => o.name);
  return { input, tensors: req.inputs, ...(outputs ? { outputs } : {}) };
}

/** A fake endpoint: y = sum of the row, as [N,1]. */
export function sumEndpoint(input: InvokeEndpointCommandInput): InvokeEndpointCommandOutput {
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
