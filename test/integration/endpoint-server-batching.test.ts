/**
 * Batching against the local endpoint server through the real SageMakerRuntimeClient:
 * the invoker splits under max batch size and under 6 MB request bodies (tiny-image, 32 KiB
 * rows) and reassembles in row order; the server's dynamic batching merges concurrent requests
 * into fewer `session.run` calls, each answer correct, and never merges sequences of different
 * lengths.
 */
import { InvokeEndpointCommand, SageMakerRuntimeClient } from '@aws-sdk/client-sagemaker-runtime';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_PAYLOAD_BYTES, planBatches } from '../../shared/inference/batching.js';
import { decodeResponse, encodeRequest } from '../../shared/inference/codec.js';
import { createInvoker, type InvokerRow } from '../../shared/inference/invoker.js';
import type { ModelManifest } from '../../shared/inference/manifest.js';
import { loadRegistry } from '../../shared/inference/registry.js';
import type { Tensor } from '../../shared/inference/tensor.js';
import { startEndpointServer, type EndpointServer } from '../../local/sagemaker/server.js';

const FIXTURES = fileURLToPath(new URL('../fixtures/models', import.meta.url));
const W = [0.1, 0.2, 0.3, 0.4];

const sdkClient = (url: string): SageMakerRuntimeClient =>
  new SageMakerRuntimeClient({
    endpoint: url,
    region: 'us-east-1',
    credentials: { accessKeyId: 'x', secretAccessKey: 'x' },
  });

let server: EndpointServer;
let client: SageMakerRuntimeClient;
let manifests: Map<string, ModelManifest>;
const manifest = (id: string): ModelManifest => {
  const m = manifests.get(id);
  if (!m) throw new Error(`fixture ${id} missing`);
  return m;
};

beforeAll(async () => {
  // A generous queue delay so that "concurrent" means concurrent on a loaded CI machine.
  server = await startEndpointServer({
    modelsDir: FIXTURES,
    port: 0,
    dynamicBatching: { maxQueueDelayMs: 100 },
  });
  client = sdkClient(server.url);
  manifests = new Map((await loadRegistry(FIXTURES)).all().map((m) => [m.id, m]));
});
afterAll(async () => {
  client.destroy();
  await server.close();
});

/** One InvokeEndpoint call with tensors, outputs decoded. */
async function invokeRaw(endpoint: string, inputs: Tensor[]): Promise<Tensor[]> {
  const { body, contentType } = encodeRequest(inputs, ['y']);
  const res = await client.send(
    new InvokeEndpointCommand({ EndpointName: endpoint, Body: body, ContentType: contentType }),
  );
  return decodeResponse(res.Body, res.ContentType ?? '');
}

describe('splitting by the invoker', () => {
  it('splits a batch over 6 MB into calls under the limit and reassembles the rows in order', async () => {
    const image = manifest('tiny-image');
    const rowBytes = 64 * 128 * 4;
    const n = 500; // 500 × 32 KiB = 16 MB, under max_batch_size 1024
    const rows: InvokerRow[] = Array.from({ length: n }, (_, i) => ({
      values: new Float32Array(64 * 128).fill(i),
      shape: [1, 64, 128],
    }));
    const plan = planBatches(image, { rowShape: [1, 64, 128] });
    expect(plan.binary).toBe(true);
    expect(plan.rowsPerCall).toBeLessThan(image.serving.maxBatchSize);
    expect(plan.rowsPerCall * rowBytes).toBeLessThanOrEqual(MAX_PAYLOAD_BYTES);

    server.resetStats();
    const predictions = await createInvoker({ client }).predict(image, rows);
    expect(predictions.map((p) => p.score)).toEqual(rows.map((_, i) => i));
    const stats = server.stats('tiny-image');
    expect(stats.requests).toBe(Math.ceil(n / plan.rowsPerCall));
    expect(stats.requests).toBeGreaterThan(1);
    expect(stats.errors).toEqual({});
  });

  it("reuses large body buffers on both sides without one call's data reaching the next", async () => {
    const image = manifest('tiny-image');
    const invoker = createInvoker({ client });
    // Bodies of 4.8, 1.3 and 3.2 MB, then 16 MB split: each round's buffers are the previous
    // round's, larger ones included, so stale bytes past a shorter body would show in the scores.
    for (const [round, n] of [150, 40, 100, 500].entries()) {
      const rows: InvokerRow[] = Array.from({ length: n }, (_, i) => ({
        values: new Float32Array(64 * 128).fill(1000 * round + i),
        shape: [1, 64, 128],
      }));
      const predictions = await invoker.predict(image, rows);
      // float32 means of 8192 pixels: within 0.01; a stale row would be off by 1 or by 1000.
      const off = predictions.map((p, i) => Math.abs(p.score - (1000 * round + i)));
      expect(predictions).toHaveLength(n);
      expect(Math.max(...off)).toBeLessThan(0.01);
    }
  });

  it('splits over max batch size (8) and under 6 MB at once, JSON and binary alike', async () => {
    const tiny = manifest('tiny-linear');
    const rows = Array.from({ length: 37 }, (_, i) => ({
      values: Float32Array.from([i, 1, 0, 0]),
      shape: [4],
    }));
    const want = rows.map((r) => Math.fround(Math.fround((r.values[0] ?? 0) * 0.1) + Math.fround(0.2) + 0.5));
    server.resetStats();
    const json = await createInvoker({ client }).predict(tiny, rows);
    const binary = await createInvoker({ client, binaryThreshold: 0 }).predict(tiny, rows);
    json.forEach((p, i) => {
      expect(p.score).toBeCloseTo(want[i] ?? Number.NaN, 5);
    });
    expect(binary).toEqual(json);
    expect(server.stats('tiny-linear').requests).toBe(2 * 5);
  });

  it('refuses a single row over 6 MB before sending anything', async () => {
    const wide = { ...manifest('tiny-image') };
    const huge = { values: new Float32Array(1_700_000), shape: [1, 1_700_000] };
    const err = await createInvoker({ client, endpointName: () => 'tiny-image' })
      .predict(
        { ...wide, serving: { ...wide.serving, inputs: [{ name: 'x', datatype: 'FP32', dims: [1, -1] }] } },
        [huge],
      )
      .catch((e: unknown) => e);
    expect((err as Error).message).toMatch(
      /exceeds the 6291456-byte limit of real-time inference; use async inference/,
    );
  });
});

describe('dynamic batching in the server', () => {
  it('merges 16 concurrent single-row requests into fewer session.run calls, each answer its own', async () => {
    server.resetStats();
    const xs = Array.from({ length: 16 }, (_, i) => [i, -i, i / 2, 1]);
    const answers = await Promise.all(
      xs.map((x) =>
        invokeRaw('tiny-linear', [
          { name: 'x', datatype: 'FP32', shape: [1, 4], data: Float32Array.from(x) },
        ]),
      ),
    );
    answers.forEach((outputs, i) => {
      const y = outputs[0];
      expect(y?.shape).toEqual([1, 1]);
      const want = (xs[i] ?? []).reduce((s, v, j) => s + v * (W[j] ?? 0), 0.5);
      expect(y?.data[0]).toBeCloseTo(want, 5);
    });
    const stats = server.stats('tiny-linear');
    expect(stats.requests).toBe(16);
    expect(stats.sessionRuns).toBeLessThan(16);
    expect(stats.sessionRuns).toBeGreaterThanOrEqual(2); // max_batch_size 8
    expect(stats.requestsPerRun.reduce((a, b) => a + b, 0)).toBe(16);
    expect(Math.max(...stats.requestsPerRun)).toBeLessThanOrEqual(8);
    expect(stats.mergedRequests).toBeGreaterThan(0);
  });

  it('merges multi-row requests up to max batch size and splits the rows back per request', async () => {
    server.resetStats();
    const sizes = [3, 2, 3, 1, 4];
    const answers = await Promise.all(
      sizes.map((n, r) => {
        const data = Float32Array.from({ length: n * 4 }, (_, k) =>
          k % 4 === 0 ? 10 * r + Math.floor(k / 4) : 0,
        );
        return invokeRaw('tiny-linear', [{ name: 'x', datatype: 'FP32', shape: [n, 4], data }]);
      }),
    );
    answers.forEach((outputs, r) => {
      const y = outputs[0];
      expect(y?.shape).toEqual([sizes[r], 1]);
      const got = y ? Array.from(y.data as Float32Array) : [];
      expect(got).toHaveLength(sizes[r] ?? 0);
      got.forEach((v, k) => {
        expect(v).toBeCloseTo((10 * r + k) * 0.1 + 0.5, 4);
      });
    });
    const stats = server.stats('tiny-linear');
    expect(stats.sessionRuns).toBeLessThan(sizes.length);
    expect(stats.requestsPerRun.reduce((a, b) => a + b, 0)).toBe(sizes.length);
  });

  it('merges sequences only when their step count T matches', async () => {
    server.resetStats();
    const seqInputs = (t: number, v: number): Tensor[] => [
      { name: 'x', datatype: 'FP32', shape: [1, t, 2], data: new Float32Array(t * 2).fill(v) },
      { name: 'mask', datatype: 'FP32', shape: [1, t], data: new Float32Array(t).fill(1) },
    ];
    const cases = [
      [2, 1],
      [3, 1],
      [2, 2],
      [3, 2],
      [2, 3],
      [3, 3],
    ] as const;
    const answers = await Promise.all(cases.map(([t, v]) => invokeRaw('tiny-seq', seqInputs(t, v))));
    answers.forEach((outputs, i) => {
      const [t, v] = cases[i] ?? [0, 0];
      expect(outputs[0]?.data[0]).toBeCloseTo(t * 2 * v, 5);
    });
    const stats = server.stats('tiny-seq');
    // Two groups (T=2 and T=3), never one run across both.
    expect(stats.sessionRuns).toBeGreaterThanOrEqual(2);
    expect(stats.sessionRuns).toBeLessThan(cases.length);
    expect(stats.requestsPerRun.reduce((a, b) => a + b, 0)).toBe(cases.length);
  });

  it('a bad request queued among good ones fails alone', async () => {
    server.resetStats();
    const good = invokeRaw('tiny-linear', [
      { name: 'x', datatype: 'FP32', shape: [1, 4], data: Float32Array.from([1, 0, 0, 0]) },
    ]);
    const bad = invokeRaw('tiny-linear', [
      { name: 'x', datatype: 'FP32', shape: [1, 3], data: new Float32Array(3) },
    ]);
    await expect(bad).rejects.toThrow(/Received client error \(400\)/);
    expect((await good)[0]?.data[0]).toBeCloseTo(0.6, 6);
  });
});
