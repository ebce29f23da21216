/**
 * A few large body buffers kept for reuse. An image batch is a 4 MB request body on each side of
 * every call; allocated afresh each time, those buffers are external memory to V8, and their
 * churn set off a full mark-compact on nearly every call of the CNN at batch 256 (`--trace-gc`:
 * "external memory pressure", 4–27 ms each on the shared 2-core machine). Reusing them takes that
 * churn away. Only bodies of at least `minBytes` are pooled; smaller ones are plain allocations.
 *
 * A buffer goes back with `release` only once nothing reads it any more (the caller's contract);
 * a buffer never released is simply collected.
 */
export interface BufferPoolOptions {
  /** Smallest body worth pooling. Default 1 MiB. */
  minBytes?: number;
  /** Free buffers kept at most. Default 4. */
  maxFree?: number;
}

/** Capacities are whole MiB, so that bodies of slightly different sizes share buffers. */
const MIB = 1 << 20;

export class BufferPool {
  private readonly free: ArrayBuffer[] = [];
  private readonly minBytes: number;
  private readonly maxFree: number;

  constructor(opts: BufferPoolOptions = {}) {
    this.minBytes = opts.minBytes ?? MIB;
    this.maxFree = opts.maxFree ?? 4;
  }

  /** A zero-offset Uint8Array of `n` bytes (contents undefined), from the pool when it is large. */
  acquire(n: number): Uint8Array {
    if (n < this.minBytes) return new Uint8Array(n);
    const i = this.free.findIndex((b) => b.byteLength >= n);
    const buffer =
      i >= 0 ? (this.free.splice(i, 1)[0] as ArrayBuffer) : new ArrayBuffer(Math.ceil(n / MIB) * MIB);
    return new Uint8Array(buffer, 0, n);
  }

  /** Returns a buffer from `acquire` to the pool; smaller or foreign ones are ignored. */
  release(bytes: Uint8Array): void {
    const buffer = bytes.buffer;
    if (!(buffer instanceof ArrayBuffer) || bytes.byteOffset !== 0) return;
    if (bytes.length < this.minBytes || buffer.byteLength % MIB !== 0) return;
    if (this.free.length >= this.maxFree || this.free.includes(buffer)) return;
    this.free.push(buffer);
  }

  /** Free buffers held now (for tests). */
  get size(): number {
    return this.free.length;
  }
}
