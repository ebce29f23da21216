import { describe, expect, it } from 'vitest';
import { createHeapCollector, HEAP_FLOOR_BYTES, lambdaNodeFlags } from '../../shared/sweep/heap.js';

const MB = 2 ** 20;

/** A heap whose use the test sets, and a gc that leaves `liveAfter` in use; each call recorded. */
function fakeHeap(liveAfter: number[]) {
  let used = 0;
  let gcs = 0;
  let clock = 0;
  return {
    set: (bytes: number): void => {
      used = bytes;
    },
    gcs: (): number => gcs,
    opts: {
      heapUsed: (): number => used,
      gc: (): void => {
        used = liveAfter[gcs] ?? used;
        gcs++;
        clock += 7;
      },
      now: (): number => clock,
    },
  };
}

describe('sweep heap collector', () => {
  it('does not collect below the floor, however little the last collection left', () => {
    const heap = fakeHeap([]);
    const c = createHeapCollector(heap.opts);
    heap.set(HEAP_FLOOR_BYTES);
    expect(c.maybeCollect()).toBe(false);
    expect(heap.gcs()).toBe(0);
    expect(c.stats()).toEqual({ collections: 0, ms: 0, liveBytes: 0 });
  });

  it('collects past the floor, then only past twice what that collection left', () => {
    const heap = fakeHeap([40 * MB, 50 * MB]);
    const c = createHeapCollector(heap.opts);
    heap.set(65 * MB);
    expect(c.maybeCollect()).toBe(true);
    expect(c.stats()).toEqual({ collections: 1, ms: 7, liveBytes: 40 * MB });
    // The bar is now max(64 MB, 2 × 40 MB) = 80 MB.
    heap.set(80 * MB);
    expect(c.maybeCollect()).toBe(false);
    heap.set(81 * MB);
    expect(c.maybeCollect()).toBe(true);
    expect(c.stats()).toEqual({ collections: 2, ms: 14, liveBytes: 50 * MB });
    expect(heap.gcs()).toBe(2);
  });

  it('follows a live heap that grew: the bar is the factor times the last live heap', () => {
    const heap = fakeHeap([300 * MB]);
    const c = createHeapCollector({ ...heap.opts, factor: 1.5 });
    heap.set(400 * MB);
    expect(c.maybeCollect()).toBe(true);
    heap.set(450 * MB);
    expect(c.maybeCollect()).toBe(false);
    heap.set(451 * MB);
    expect(c.maybeCollect()).toBe(true);
  });

  it('is a no-op without a gc (node started without --expose-gc)', () => {
    const heap = fakeHeap([]);
    const c = createHeapCollector({ ...heap.opts, gc: undefined });
    heap.set(10_000 * MB);
    expect(c.maybeCollect()).toBe(false);
    expect(c.stats().collections).toBe(0);
  });

  it("uses globalThis.gc when none is given, and V8's own heap figure", () => {
    const c = createHeapCollector({ floorBytes: 0 });
    const exposed = typeof (globalThis as { gc?: unknown }).gc === 'function';
    // Vitest's workers start without --expose-gc: then nothing is collected.
    expect(c.maybeCollect()).toBe(exposed);
    expect(c.stats().collections).toBe(exposed ? 1 : 0);
  });
});

describe("Lambda's node flags for a memory size", () => {
  it('gives a tenth to new space (two semi-spaces), the rest to old space, and exposes gc', () => {
    expect(lambdaNodeFlags(2048)).toEqual([
      '--expose-gc',
      '--max-semi-space-size=102',
      '--max-old-space-size=1844',
    ]);
    expect(lambdaNodeFlags(1024)).toEqual([
      '--expose-gc',
      '--max-semi-space-size=51',
      '--max-old-space-size=922',
    ]);
  });
});
