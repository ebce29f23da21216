/**
 * Dynamic batching as Triton's `dynamic_batching {}` scheduler does it, for one model instance
 * (one `session.run` at a time):
 *
 * - a request that finds the instance idle runs at once, unless the config sets a max queue
 *   delay and the request does not fill the preferred batch size (Triton's default delay is 0:
 *   a lone request, and a full batch always, run without waiting);
 * - requests that arrive while the instance is busy queue, and the next run takes the oldest
 *   of them together, concatenated along the batch dimension up to the max batch size; the
 *   outputs are split back per request.
 *
 * Only requests with the same signature merge: the same input names and datatypes and the
 * same non-batch dimensions (two sequence batches with different step counts T do not). Each
 * request is validated before it is queued, so one bad request never fails its neighbours; a
 * failing `session.run` fails every request in it.
 */
import { allocate, type Tensor } from '../../shared/inference/tensor.js';
import { TritonError, type LoadedModel } from './models.js';

export interface DynamicBatchingOptions {
  /** How long the oldest queued request may wait for others while the batch is short of the
   * preferred size, in ms. Default: the model config's `max_queue_delay_microseconds` (0). */
  maxQueueDelayMs?: number;
  /** Rows at which a queue runs without waiting. Default: the config's largest
   * `preferred_batch_size`, else (and at most) the model's max batch size. */
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
  /** When its oldest request was queued (performance.now()). */
  since: number;
  /** The signature it merges, undefined for a request that cannot merge. */
  key: string | undefined;
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

/** Rows `[start, end)` of a batched output: a view, the output is this run's own memory. */
function sliceRows(t: Tensor, start: number, end: number, total: number): Tensor {
  const width = total > 0 ? t.data.length / total : 0;
  const data = t.data.subarray(start * width, end * width);
  return { name: t.name, datatype: t.datatype, shape: [end - start, ...t.shape.slice(1)], data };
}

export class DynamicBatcher {
  /** Queued batches in the order of their oldest request. */
  private readonly waiting: Queue[] = [];
  /** The batch each signature is still filling. */
  private readonly open = new Map<string, Queue>();
  private readonly delayMs: number;
  private readonly preferred: number;
  private readonly max: number;
  private busy = false;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly model: LoadedModel,
    opts: DynamicBatchingOptions,
    private readonly onRun: RunListener,
  ) {
    const config = model.dynamicBatching;
    // No dynamic_batching in the config (or no batch dimension): every request runs alone.
    this.max = config ? (model.maxBatchSize ?? 0) : 0;
    this.delayMs = Math.max(0, opts.maxQueueDelayMs ?? config?.maxQueueDelayMs ?? 0);
    this.preferred = Math.min(this.max, opts.preferredBatchSize ?? config?.preferredBatchSize ?? this.max);
  }

  /** Validates, queues, and resolves with this request's outputs (`outputs` or all). */
  submit(inputs: readonly Tensor[], outputs: readonly string[] | undefined): Promise<Tensor[]> {
    this.model.validate(inputs, outputs);
    const fetches = outputs ?? this.model.outputNames;
    const rows = inputs[0]?.shape[0] ?? 0;
    const key = this.max > 1 && rows > 0 && rows < this.max ? signature(inputs) : undefined;
    return new Promise<Tensor[]>((resolve, reject) => {
      let q = key === undefined ? undefined : this.open.get(key);
      if (q && key !== undefined && q.rows + rows > this.max) {
        this.open.delete(key); // full: it runs as it is, this request opens the next batch
        q = undefined;
      }
      if (!q) {
        q = { items: [], rows: 0, since: performance.now(), key };
        this.waiting.push(q);
        if (key !== undefined) this.open.set(key, q);
      }
      q.items.push({ inputs, fetches, rows, resolve, reject });
      q.rows += rows;
      this.pump();
    });
  }

  /** Starts the next run if the instance is idle and the oldest batch is ready. */
  private pump(): void {
    if (this.busy) return;
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    const q = this.waiting[0];
    if (!q) return;
    const waitMs = q.since + this.delayMs - performance.now();
    if (this.delayMs > 0 && q.key !== undefined && q.rows < this.preferred && waitMs > 0) {
      this.timer = setTimeout(() => {
        this.timer = undefined;
        this.pump();
      }, waitMs);
      return;
    }
    this.waiting.shift();
    if (q.key !== undefined && this.open.get(q.key) === q) this.open.delete(q.key);
    this.busy = true;
    const { items, rows } = q;
    // The instance is free again before the answers go out, so a request sent on an answer
    // finds it idle.
    this.runBatch(items, rows).then(
      (answers) => {
        this.busy = false;
        this.pump();
        items.forEach((p, i) => {
          p.resolve(answers[i] ?? []);
        });
      },
      (err: unknown) => {
        this.busy = false;
        this.pump();
        for (const p of items) p.reject(err);
      },
    );
  }

  /** One `session.run` for the batch; the outputs of each request, in order. */
  private async runBatch(items: readonly Pending[], rows: number): Promise<Tensor[][]> {
    const [only] = items;
    this.onRun(items.length, rows);
    if (only && items.length === 1) return [await this.model.execute(only.inputs, only.fetches)];
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
    return items.map((p) => {
      const end = start + p.rows;
      const answer = p.fetches.map((name) => {
        const t = outputs.find((o) => o.name === name);
        if (!t) throw new TritonError(500, `model '${this.model.id}' produced no output '${name}'`);
        return sliceRows(t, start, end, rows);
      });
      start = end;
      return answer;
    });
  }
}
