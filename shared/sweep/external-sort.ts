/**
 * Groups keyed lines (`<patient id>\t<json>`) by patient in bounded memory: an external sort.
 * Lines are buffered up to `runBytes`; a full buffer is sorted by key and spilled to a temp
 * file (a sorted run); at the end the runs are merged k ways with a binary heap. Memory holds
 * one buffer plus one line per run, whatever the population.
 */
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import * as path from 'node:path';
import { createInterface } from 'node:readline';

type Keyed = [key: string, line: string];

const keyOf = (line: string): string => {
  const tab = line.indexOf('\t');
  return tab < 0 ? '' : line.slice(0, tab);
};

const byKey = (a: Keyed, b: Keyed): number => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0);

export interface ExternalSorterOptions {
  /** Where runs go (a fresh folder is made under it). */
  readonly tmpDir: string;
  /** Bytes buffered before a run is spilled. Default 4 MiB. */
  readonly runBytes?: number;
}

export class ExternalSorter {
  private buffer: Keyed[] = [];
  private bytes = 0;
  private readonly runs: string[] = [];
  private dir: string | undefined;
  private readonly runBytes: number;

  constructor(private readonly opts: ExternalSorterOptions) {
    this.runBytes = opts.runBytes ?? 4 * 1024 * 1024;
  }

  /** How many runs were spilled so far. */
  get spilled(): number {
    return this.runs.length;
  }

  async add(line: string): Promise<void> {
    this.buffer.push([keyOf(line), line]);
    this.bytes += line.length + 1;
    if (this.bytes >= this.runBytes) await this.spill();
  }

  private async spill(): Promise<void> {
    if (this.buffer.length === 0) return;
    this.dir ??= await mkdtemp(path.join(this.opts.tmpDir, 'sweep-sort-'));
    const file = path.join(this.dir, `run-${String(this.runs.length).padStart(5, '0')}`);
    const sorted = this.buffer.sort(byKey);
    this.buffer = [];
    this.bytes = 0;
    const out = createWriteStream(file);
    const CHUNK = 512;
    for (let i = 0; i < sorted.length; i += CHUNK) {
      const text = sorted
        .slice(i, i + CHUNK)
        .map((k) => k[1])
        .join('\n');
      if (!out.write(text + '\n')) await new Promise<void>((r) => out.once('drain', r));
    }
    await new Promise<void>((resolve, reject) =>
      out.end((err?: Error | null) => {
        if (err) reject(err);
        else resolve();
      }),
    );
    this.runs.push(file);
  }

  /** Every line added, sorted by key (stable within a run). */
  async *sorted(): AsyncGenerator<Keyed> {
    if (this.runs.length === 0) {
      const sorted = this.buffer.sort(byKey);
      this.buffer = [];
      this.bytes = 0;
      yield* sorted;
      return;
    }
    await this.spill();
    const readers = this.runs.map((file) =>
      createInterface({ input: createReadStream(file), crlfDelay: Infinity })[Symbol.asyncIterator](),
    );
    // A min-heap of [key, line, reader index].
    const heap: [string, string, number][] = [];
    const less = (a: [string, string, number], b: [string, string, number]): boolean =>
      a[0] < b[0] || (a[0] === b[0] && a[2] < b[2]);
    const push = (item: [string, string, number]): void => {
      heap.push(item);
      let i = heap.length - 1;
      while (i > 0) {
        const parent = (i - 1) >> 1;
        if (!less(heap[i] as [string, string, number], heap[parent] as [string, string, number])) break;
        [heap[i], heap[parent]] = [
          heap[parent] as [string, string, number],
          heap[i] as [string, string, number],
        ];
        i = parent;
      }
    };
    const pop = (): [string, string, number] | undefined => {
      const top = heap[0];
      const last = heap.pop();
      if (heap.length > 0 && last) {
        heap[0] = last;
        let i = 0;
        for (;;) {
          const l = 2 * i + 1;
          const r = l + 1;
          let m = i;
          if (
            l < heap.length &&
            less(heap[l] as [string, string, number], heap[m] as [string, string, number])
          )
            m = l;
          if (
            r < heap.length &&
            less(heap[r] as [string, string, number], heap[m] as [string, string, number])
          )
            m = r;
          if (m === i) break;
          [heap[i], heap[m]] = [heap[m] as [string, string, number], heap[i] as [string, string, number]];
          i = m;
        }
      }
      return top;
    };
    const next = async (i: number): Promise<void> => {
      const r = await (readers[i] as AsyncIterator<string>).next();
      if (!r.done && r.value !== '') push([keyOf(r.value), r.value, i]);
    };
    for (let i = 0; i < readers.length; i++) await next(i);
    for (let top = pop(); top; top = pop()) {
      yield [top[0], top[1]];
      await next(top[2]);
    }
  }

  async dispose(): Promise<void> {
    this.buffer = [];
    if (this.dir) await rm(this.dir, { recursive: true, force: true });
  }
}

/** Consecutive lines of the same key, as one group. */
export async function* groupByKey(
  sorted: AsyncIterable<Keyed>,
): AsyncGenerator<{ key: string; lines: string[] }> {
  let current: { key: string; lines: string[] } | undefined;
  for await (const [key, line] of sorted) {
    if (current && current.key === key) {
      current.lines.push(line.slice(key.length + 1));
      continue;
    }
    if (current) yield current;
    current = { key, lines: [line.slice(key.length + 1)] };
  }
  if (current) yield current;
}
