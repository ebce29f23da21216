/**
 * The local endpoint server's dynamic batcher over a real onnxruntime session (the tiny-linear
 * fixture, max_batch_size 8, `dynamic_batching { }`): Triton's scheduling for one model
 * instance. A lone request runs at once (no queue delay by default), requests that arrive
 * while a run is in flight merge into the next run, and a configured queue delay holds a
 * short batch but never a full one. Every check reads the run counter right after `submit`
 * returns (onnxruntime runs the session on a later turn), so nothing depends on timing.
 */
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DynamicBatcher } from '../../local/sagemaker/batcher.js';
import { parseModelConfig } from '../../local/sagemaker/model-config.js';
import { ModelStore, type LoadedModel } from '../../local/sagemaker/models.js';
import type { Tensor } from '../../shared/inference/tensor.js';

const FIXTURES = fileURLToPath(new URL('../fixtures/models', import.meta.url));
const W = [0.1, 0.2, 0.3, 0.4];
const B = 0.5;

const store = new ModelStore(FIXTURES);
let model: LoadedModel;
beforeAll(async () => {
  const m = await store.get('tiny-linear');
  if (!m) throw new Error('fixture tiny-linear missing');
  model = m;
});
afterAll(async () => {
  await store.close();
});

/** `n` rows of the tiny-linear input, row i = [base + i, 1, 0, 0]. */
const rows = (n: number, base: number): Tensor[] => [
  {
    name: 'x',
    datatype: 'FP32',
    shape: [n, 4],
    data: Float32Array.from({ length: n * 4 }, (_, k) => (k % 4 === 0 ? base + k / 4 : k % 4 === 1 ? 1 : 0)),
  },
];
const expected = (n: number, base: number): number[] =>
  Array.from({ length: n }, (_, i) => Math.fround((base + i) * (W[0] ?? 0) + (W[1] ?? 0) + B));

function counting(opts: ConstructorParameters<typeof DynamicBatcher>[1] = {}) {
  const runs: { requests: number; rows: number }[] = [];
  const batcher = new DynamicBatcher(model, opts, (requests, n) => {
    runs.push({ requests, rows: n });
  });
  return { batcher, runs };
}

describe('dynamic batcher (one model instance)', () => {
  it('reads the model config: dynamic_batching on, no queue delay', () => {
    expect(model.maxBatchSize).toBe(8);
    expect(model.dynamicBatching).toEqual({ maxQueueDelayMs: 0, preferredBatchSize: undefined });
  });

  it('runs a lone short request at once, without waiting for others', async () => {
    const { batcher, runs } = counting();
    const pending = batcher.submit(rows(2, 0), undefined);
    expect(runs).toEqual([{ requests: 1, rows: 2 }]);
    const [y] = await pending;
    const want = expected(2, 0);
    expect(y?.data[0]).toBeCloseTo(want[0] ?? Number.NaN, 5);
    expect(y?.data[1]).toBeCloseTo(want[1] ?? Number.NaN, 5);
  });

  it('merges what arrives while a run is in flight into the next run, each answer its own', async () => {
    const { batcher, runs } = counting();
    const first = batcher.submit(rows(1, 0), undefined);
    const queued = [batcher.submit(rows(3, 10), undefined), batcher.submit(rows(2, 20), undefined)];
    const overflow = batcher.submit(rows(4, 30), undefined); // 3 + 2 + 4 > 8: the run after
    expect(runs).toEqual([{ requests: 1, rows: 1 }]);
    const answers = await Promise.all([first, ...queued, overflow]);
    expect(runs).toEqual([
      { requests: 1, rows: 1 },
      { requests: 2, rows: 5 },
      { requests: 1, rows: 4 },
    ]);
    const cases: [number, number][] = [
      [1, 0],
      [3, 10],
      [2, 20],
      [4, 30],
    ];
    answers.forEach(([y], i) => {
      const [n, base] = cases[i] ?? [0, 0];
      expect(y?.shape).toEqual([n, 1]);
      const want = expected(n, base);
      expect(y?.data).toHaveLength(n);
      Array.from(y?.data as Float32Array).forEach((v, k) => {
        expect(v).toBeCloseTo(want[k] ?? Number.NaN, 5);
      });
    });
  });

  it('with a queue delay, holds a short batch but runs a full one at once', async () => {
    const { batcher, runs } = counting({ maxQueueDelayMs: 5 });
    const short = batcher.submit(rows(2, 0), undefined);
    expect(runs).toEqual([]);
    await short;
    expect(runs).toEqual([{ requests: 1, rows: 2 }]);
    runs.length = 0;
    const full = batcher.submit(rows(8, 0), undefined);
    expect(runs).toEqual([{ requests: 1, rows: 8 }]);
    await full;
  });

  it('refuses a bad request before queueing it, its neighbours unharmed', async () => {
    const { batcher, runs } = counting();
    const good = batcher.submit(rows(1, 0), undefined);
    expect(() =>
      batcher.submit([{ name: 'x', datatype: 'FP32', shape: [1, 3], data: new Float32Array(3) }], undefined),
    ).toThrow(/unexpected shape for input 'x'/);
    expect((await good)[0]?.data[0]).toBeCloseTo(expected(1, 0)[0] ?? Number.NaN, 6);
    expect(runs).toHaveLength(1);
  });
});

describe('model config (config.pbtxt)', () => {
  it("reads Triton's dynamic_batching fields, with Triton's defaults", () => {
    expect(parseModelConfig('max_batch_size: 16\ndynamic_batching { }\n')).toEqual({
      maxBatchSize: 16,
      dynamicBatching: { maxQueueDelayMs: 0, preferredBatchSize: undefined },
    });
    expect(
      parseModelConfig(
        'max_batch_size: 64\ndynamic_batching {\n  preferred_batch_size: [ 8, 32 ]\n  max_queue_delay_microseconds: 1500\n  default_queue_policy { timeout_action: REJECT }\n}\n',
      ),
    ).toEqual({ maxBatchSize: 64, dynamicBatching: { maxQueueDelayMs: 1.5, preferredBatchSize: 32 } });
  });

  it('has no dynamic batching without the block', () => {
    expect(parseModelConfig('name: "m"\nmax_batch_size: 4\ninstance_group [ { kind: KIND_CPU } ]\n')).toEqual(
      {
        maxBatchSize: 4,
        dynamicBatching: undefined,
      },
    );
  });

  it('a model without dynamic_batching runs every request alone, one at a time', async () => {
    const alone = { ...model, dynamicBatching: undefined };
    const runs: number[] = [];
    const batcher = new DynamicBatcher(alone, {}, (requests) => {
      runs.push(requests);
    });
    const answers = await Promise.all([
      batcher.submit(rows(1, 0), undefined),
      batcher.submit(rows(1, 5), undefined),
    ]);
    expect(runs).toEqual([1, 1]);
    expect(answers[0][0]?.data[0]).toBeCloseTo(expected(1, 0)[0] ?? Number.NaN, 5);
    expect(answers[1][0]?.data[0]).toBeCloseTo(expected(1, 5)[0] ?? Number.NaN, 5);
  });
});
