/**
 * Dynamic batching as Triton's `dynamic_batching {}` does it: requests to the same model that
 * arrive within `maxQueueDelayMs` of the first one queued are concatenated along the batch
 * dimension into one `session.run`, up to the model's max batch size (the preferred batch
 * size: a queue that reaches it runs at once), and the outputs are split back per request.
 *
 * Only requests with the same signature merge: the same input names and datatypes and the
 * same non-batch dimensions (two sequence batches with different step counts T do not). Each
 * request is validated before it is queued, so one bad request never fails its neighbours; a
 * failing `session.run` fails every request in it.
 */
import { allocate, type Tensor, type TensorData } from '../../shared/inference/tensor.js';
import { TritonError, type LoadedModel } from './models.js';

export interface DynamicBatchingOptions {
  /** How long the first queued request waits for others, in ms. Default 2; 0 merges only
   * what arrives in the same turn of the event loop. */
  maxQueueDelayMs?: number;
  /** Rows at which a queue runs without waiting. Default (and cap): the model's max batch size. */
  preferredBatchSize?: number;
}

interface Pending {
  inputs: readonly Tensor[];
  fetches: readonly string[];
  rows: number;
  resolve: (outputs: Tensor[]) => void;
  reject: (err: unknown) => void;
}

interface Queue {
  items: Pending[];
  rows: number;
  cancel: (() => void) | undefined;
}

/** Called once per `session.run` with the number of requests and rows in it. */
export type RunListener = (requests: number, rows: number) => void;

const signature = (inputs: readonly Tensor[]): string =>
  inputs
    .map((t) => `${t.name}:${t.datatype}:${t.shape.slice(1).join('x')}`)
    .sort()
    .join('|');

/** Concatenates one input over the requests, along the batch dimension. */
function concat(name: string, items: readonly Pending[], rows: number): Tensor {
  const parts = items.map((p) => p.inputs.find((t) => t.name === name));
  const first = parts[0];
  if (!first) throw new TritonError(500, `input '${name}' vanished while batching`);
  const data = allocate(first.datatype, rows * (first.data.length / Math.max(1, first.shape[0] ?? 1)));
  let offset = 0;
  for (const t of parts) {
    if (!t) continue;
    (data as Float32Array).set(t.data as Float32Array, offset);
    offset += t.data.length;
  }
  return { name, datatype: first.datatype, shape: [rows, ...first.shape.slice(1)], data };
}

/** Rows `[start, end)` of a batched output. */
function sliceRows(t: Tensor, start: number, end: number, total: number): Tensor {
  const width = total > 0 ? t.data.length / total : 0;
  const data = t.data.slice(start * width, end * width) as TensorData;
  return { name: t.name, datatype: t.datatype, shape: [end - start, ...t.shape.slice(1)], data };
}

export class DynamicBatcher {
  private readonly queues = new Map<string, Queue>();
  private readonly delayMs: number;
  private readonly preferred: number;

  constructor(
    private readonly model: LoadedModel,
    opts: DynamicBatchingOptions,
    private readonly onRun: RunListener,
  ) {
    this.delayMs = Math.max(0, opts.maxQueueDelayMs ?? 2);
    const max = model.maxBatchSize ?? 0;
    this.preferred = Math.min(max, opts.preferredBatchSize ?? max);
  }

  /** Validates, queues, and resolves with this request's outputs (`outputs` or all). */
  submit(inputs: readonly Tensor[], outputs: readonly string[] | undefined): Promise<Tensor[]> {
    this.model.validate(inputs, outputs);
    const fetches = outputs ?? this.model.outputNames;
    const rows = inputs[0]?.shape[0] ?? 0;
    if (this.preferred <= 1 || rows >= this.preferred || rows === 0) {
      this.onRun(1, rows);
      return this.model.execute(inputs, fetches);
    }
    return new Promise<Tensor[]>((resolve, reject) => {
      const key = signature(inputs);
      let q = this.queues.get(key);
      if (q && q.rows + rows > this.preferred) {
        this.flush(key, q);
        q = undefined;
      }
      if (!q) {
        q = { items: [], rows: 0, cancel: undefined };
        this.queues.set(key, q);
        const queue = q;
        const fire = (): void => {
          this.flush(key, queue);
        };
        if (this.delayMs > 0) {
          const timer = setTimeout(fire, this.delayMs);
          queue.cancel = () => {
            clearTimeout(timer);
          };
        } else {
          const immediate = setImmediate(fire);
          queue.cancel = () => {
            clearImmediate(immediate);
          };
        }
      }
      q.items.push({ inputs, fetches, rows, resolve, reject });
      q.rows += rows;
      if (q.rows >= this.preferred) this.flush(key, q);
    });
  }

  private flush(key: string, q: Queue): void {
    if (this.queues.get(key) !== q) return; // already flushed
    this.queues.delete(key);
    q.cancel?.();
    this.runBatch(q.items, q.rows).catch((err: unknown) => {
      for (const p of q.items) p.reject(err);
    });
  }

  private async runBatch(items: readonly Pending[], rows: number): Promise<void> {
    const [only] = items;
    this.onRun(items.length, rows);
    if (only && items.length === 1) {
      only.resolve(await this.model.execute(only.inputs, only.fetches));
      return;
    }
    const fetches = [...new Set(items.flatMap((p) => p.fetches))];
    const inputs = (items[0]?.inputs ?? []).map((t) => concat(t.name, items, rows));
    const outputs = await this.model.execute(inputs, fetches);
    for (const t of outputs) {
      if (t.shape[0] !== rows) {
        throw new TritonError(
          500,
          `output '${t.name}' of model '${this.model.id}' has batch ${t.shape[0] ?? 0} for ${rows} batched rows`,
        );
      }
    }
    let start = 0;
    for (const p of items) {
      const end = start + p.rows;
      p.resolve(
        p.fetches.map((name) => {
          const t = outputs.find((o) => o.name === name);
          if (!t) throw new TritonError(500, `model '${this.model.id}' produced no output '${name}'`);
          return sliceRows(t, start, end, rows);
        }),
      );
      start = end;
    }
  }
}
