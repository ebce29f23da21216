import { describe, expect, it } from 'vitest';
import { BufferPool } from '../../shared/inference/buffer-pool.js';

const MIB = 1 << 20;

describe('BufferPool (large request bodies reused between calls)', () => {
  it('hands back a released buffer for the next body that fits, at offset 0 and of the asked length', () => {
    const pool = new BufferPool();
    const a = pool.acquire(4 * MIB + 3);
    expect(a.length).toBe(4 * MIB + 3);
    expect(a.byteOffset).toBe(0);
    pool.release(a);
    expect(pool.size).toBe(1);
    const b = pool.acquire(2 * MIB);
    expect(b.buffer).toBe(a.buffer);
    expect(b.length).toBe(2 * MIB);
    expect(pool.size).toBe(0);
    // Nothing free that fits: a new buffer.
    const c = pool.acquire(6 * MIB);
    expect(c.buffer).not.toBe(a.buffer);
  });

  it('never pools small bodies, foreign buffers, views at an offset or the same buffer twice', () => {
    const pool = new BufferPool({ minBytes: MIB });
    pool.release(pool.acquire(1000));
    pool.release(new Uint8Array(3 * MIB + 1));
    const big = pool.acquire(2 * MIB);
    pool.release(big.subarray(8));
    expect(pool.size).toBe(0);
    pool.release(big);
    pool.release(big);
    expect(pool.size).toBe(1);
  });

  it('keeps at most maxFree buffers', () => {
    const pool = new BufferPool({ maxFree: 2 });
    const bodies = [1, 2, 3].map(() => pool.acquire(MIB));
    for (const b of bodies) pool.release(b);
    expect(pool.size).toBe(2);
  });
});
