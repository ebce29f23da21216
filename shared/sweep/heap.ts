/**
 * A full collection between an item's batches, when the heap has grown well past what the last
 * one left. Why: the item worker holds little (one sort buffer, one line per sorted run, two
 * batches of feature rows: 24–37 MB after a full GC, 2,000 or 20,000 patients), but every line
 * it streams lives long enough to be promoted, and V8 let that garbage reach about four times the
 * live heap before a full GC, so the footprint followed how long the item ran, not what it held.
 *
 * A heap flag cannot fix that in AWS: Lambda's Node bootstrap starts node with its own
 * `--max-old-space-size` on the command line (`lambdaNodeFlags`), which overrides NODE_OPTIONS,
 * and a tight bound would risk running out of memory on one unusually large patient. The same
 * bootstrap passes `--expose-gc`, so the worker collects itself, with no bound: a no-op where
 * `globalThis.gc` is absent.
 *
 * Measured (bench/sweep.ts, children started with Lambda's flags for 2,048 MB): it is a safety
 * net that has not fired yet. With a 102 MB semi-space most lines die young, the old generation
 * stayed under the 64 MB floor at every checkpoint (10,000 and 100,000 patients, and at 20,000
 * with a 16 MB semi-space), and peak RSS at 100,000 was 1.10–1.18× that at 10,000 with or
 * without it; the RSS is mostly the young generation at the bootstrap's size (heap committed
 * ~310–335 MB), which no collection gives back.
 */
import { getHeapSpaceStatistics } from 'node:v8';

export interface HeapCollectorOptions {
  /** The full collection (default `globalThis.gc`, present under `--expose-gc`). */
  readonly gc?: (() => void) | undefined;
  /**
   * Bytes of heap in use now. Default: V8's old generation (every space but the young one, whose
   * garbage each scavenge drops anyway: counting it would collect after nearly every batch).
   */
  readonly heapUsed?: () => number;
  /** No collection below this many bytes in use. Default 64 MiB. */
  readonly floorBytes?: number;
  /** Collect once in use exceeds this multiple of what the last collection left. Default 2. */
  readonly factor?: number;
  /** A clock in ms (timings). Default `performance.now`. */
  readonly now?: () => number;
}

export interface HeapCollectorStats {
  /** Full collections run. */
  readonly collections: number;
  /** Their total time (ms). */
  readonly ms: number;
  /** Bytes in use after the last one (0 before any). */
  readonly liveBytes: number;
}

export interface HeapCollector {
  /** Collects when in use > max(floor, factor × live after the last collection); true if it did. */
  maybeCollect(): boolean;
  stats(): HeapCollectorStats;
}

export const HEAP_FLOOR_BYTES = 64 * 2 ** 20;

const exposedGc = (): (() => void) | undefined => {
  const gc: unknown = (globalThis as { gc?: unknown }).gc;
  return typeof gc === 'function' ? (gc as () => void) : undefined;
};

const YOUNG = new Set(['new_space', 'new_large_object_space']);
const oldGenerationUsed = (): number =>
  getHeapSpaceStatistics().reduce((n, s) => (YOUNG.has(s.space_name) ? n : n + s.space_used_size), 0);

export function createHeapCollector(opts: HeapCollectorOptions = {}): HeapCollector {
  const gc = 'gc' in opts ? opts.gc : exposedGc();
  const heapUsed = opts.heapUsed ?? oldGenerationUsed;
  const floor = opts.floorBytes ?? HEAP_FLOOR_BYTES;
  const factor = opts.factor ?? 2;
  const now = opts.now ?? ((): number => performance.now());
  let collections = 0;
  let ms = 0;
  let live = 0;
  return {
    maybeCollect(): boolean {
      if (gc === undefined || heapUsed() <= Math.max(floor, factor * live)) return false;
      const t0 = now();
      gc();
      ms += now() - t0;
      live = heapUsed();
      collections++;
      return true;
    },
    stats: () => ({ collections, ms: Math.round(ms), liveBytes: live }),
  };
}

/**
 * The V8 flags Lambda's Node bootstrap starts node with for a function of `memoryMb`: new space
 * a tenth of the memory (two semi-spaces), old space the rest, and `--expose-gc`. On the command
 * line they override NODE_OPTIONS. The sweep bench starts its sweep processes with them.
 */
export function lambdaNodeFlags(memoryMb: number): string[] {
  const newSpace = Math.floor(memoryMb / 10);
  return [
    '--expose-gc',
    `--max-semi-space-size=${String(Math.floor(newSpace / 2))}`,
    `--max-old-space-size=${String(memoryMb - newSpace)}`,
  ];
}
