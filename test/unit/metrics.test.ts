/**
 * Metrics: the invoker reports latency, batch size, request bytes and errors by class to the
 * injected sink (dimensions: model, endpoint, error class; no patient data), and the EMF
 * emitter writes CloudWatch Embedded Metric Format lines on flush.
 */
import {
  InvokeEndpointCommand,
  SageMakerRuntimeClient,
  ServiceUnavailable,
  type InvokeEndpointCommandInput,
  type InvokeEndpointCommandOutput,
} from '@aws-sdk/client-sagemaker-runtime';
import { mockClient } from 'aws-sdk-client-mock';
import { readFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { decodeRequest, encodeResponse } from '../../shared/inference/codec.js';
import { createInvoker } from '../../shared/inference/invoker.js';
import { parseManifest } from '../../shared/inference/manifest.js';
import { createEmfEmitter, METRIC, type Metric } from '../../shared/inference/metrics.js';

const tiny = parseManifest(
  JSON.parse(readFileSync(new URL('../fixtures/models/tiny-linear/manifest.json', import.meta.url), 'utf8')),
  'tiny-linear',
);
const sm = mockClient(SageMakerRuntimeClient);
afterEach(() => {
  sm.reset();
});

function echo(input: InvokeEndpointCommandInput): InvokeEndpointCommandOutput {
  const [x] = decodeRequest(input.Body as Uint8Array, input.ContentType ?? '').inputs;
  const n = x?.shape[0] ?? 0;
  const { body, contentType } = encodeResponse(
    [{ name: 'y', datatype: 'FP32', shape: [n, 1], data: new Float32Array(n).fill(0.25) }],
    { modelName: 'm' },
  );
  return { Body: body, ContentType: contentType, $metadata: {} } as unknown as InvokeEndpointCommandOutput;
}

describe('invoker metrics', () => {
  it('reports latency, batch size and bytes per call, and errors by class', async () => {
    const seen: Metric[] = [];
    sm.on(InvokeEndpointCommand)
      .callsFakeOnce(echo)
      .callsFakeOnce(echo)
      .rejects(new ServiceUnavailable({ message: 'busy', $metadata: { httpStatusCode: 503 } }));
    const invoker = createInvoker({
      client: new SageMakerRuntimeClient({ region: 'us-east-1' }),
      endpointPrefix: 'ep-',
      metrics: { onMetric: (m) => seen.push(m) },
      concurrency: 1,
    });
    const rows = Array.from({ length: 10 }, () => ({ values: new Float32Array(4), shape: [4] }));
    await invoker.predict(tiny, rows);
    const dims = { Model: 'tiny-linear', Endpoint: 'ep-tiny-linear' };
    expect(seen.filter((m) => m.name === METRIC.batchSize)).toEqual([
      { name: 'BatchSize', value: 8, unit: 'Count', dimensions: dims },
      { name: 'BatchSize', value: 2, unit: 'Count', dimensions: dims },
    ]);
    const latency = seen.filter((m) => m.name === METRIC.latency);
    expect(latency).toHaveLength(2);
    expect(latency.every((m) => m.unit === 'Milliseconds' && m.value >= 0)).toBe(true);
    expect(seen.filter((m) => m.name === METRIC.requestBytes).every((m) => m.value > 0)).toBe(true);

    await expect(invoker.predict(tiny, rows.slice(0, 1))).rejects.toThrow();
    expect(seen.filter((m) => m.name === METRIC.errors)).toEqual([
      {
        name: 'InvocationErrors',
        value: 1,
        unit: 'Count',
        dimensions: { ...dims, ErrorClass: 'ServiceUnavailable' },
      },
    ]);
  });
});

describe('EMF emitter', () => {
  it('writes one EMF line per flush and dimension set, values as arrays, then starts afresh', () => {
    const lines: string[] = [];
    const emf = createEmfEmitter({
      namespace: 'Test/NS',
      write: (l) => lines.push(l),
      now: () => 1_700_000_000_000,
    });
    const a = { Model: 'a', Endpoint: 'ep-a' };
    emf.onMetric({ name: 'InvocationLatency', value: 12, unit: 'Milliseconds', dimensions: a });
    emf.onMetric({ name: 'InvocationLatency', value: 7, unit: 'Milliseconds', dimensions: a });
    emf.onMetric({
      name: 'BatchSize',
      value: 8,
      unit: 'Count',
      dimensions: { Endpoint: 'ep-a', Model: 'a' },
    });
    emf.onMetric({
      name: 'BatchSize',
      value: 1,
      unit: 'Count',
      dimensions: { Model: 'b', Endpoint: 'ep-b' },
    });
    emf.flush();
    expect(lines).toHaveLength(2);
    expect(JSON.parse(lines[0] ?? '')).toEqual({
      Model: 'a',
      Endpoint: 'ep-a',
      InvocationLatency: [12, 7],
      BatchSize: 8,
      _aws: {
        Timestamp: 1_700_000_000_000,
        CloudWatchMetrics: [
          {
            Namespace: 'Test/NS',
            Dimensions: [['Model', 'Endpoint']],
            Metrics: [
              { Name: 'InvocationLatency', Unit: 'Milliseconds' },
              { Name: 'BatchSize', Unit: 'Count' },
            ],
          },
        ],
      },
    });
    expect(JSON.parse(lines[1] ?? '')).toMatchObject({ Model: 'b', BatchSize: 1 });
    emf.flush();
    expect(lines).toHaveLength(2); // nothing new
  });

  it('splits more than 100 values of a metric over several lines', () => {
    const lines: string[] = [];
    const emf = createEmfEmitter({ write: (l) => lines.push(l) });
    for (let i = 0; i < 250; i++)
      emf.onMetric({ name: 'BatchSize', value: i, unit: 'Count', dimensions: {} });
    emf.flush();
    const values = lines.map((l) => (JSON.parse(l) as { BatchSize: number[] }).BatchSize);
    expect(values.map((v) => v.length)).toEqual([100, 100, 50]);
    expect(values.flat()).toEqual(Array.from({ length: 250 }, (_, i) => i));
    expect(JSON.parse(lines[0] ?? '')).toMatchObject({
      _aws: { CloudWatchMetrics: [{ Namespace: 'FhirAnalytics/Inference', Dimensions: [[]] }] },
    });
  });
});
