import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { firstNaN } from '../../shared/inference/input-checks.js';

/** The plain definition the fast scan must agree with. */
function naive(data: Float32Array | Float64Array): number {
  return data.findIndex((v) => Number.isNaN(v));
}

const element = fc.oneof(
  { weight: 6, arbitrary: fc.float({ noNaN: true, noDefaultInfinity: true }) },
  { weight: 1, arbitrary: fc.constantFrom(Number.NaN, Infinity, -Infinity, -0) },
);

describe('firstNaN (the NaN check of every request, client and server)', () => {
  it('finds the first NaN at every position and remainder, in float32 and float64', () => {
    for (const length of [1, 2, 3, 4, 5, 7, 8, 9, 13]) {
      for (let at = 0; at < length; at++) {
        for (const Ctor of [Float32Array, Float64Array]) {
          const data = new Ctor(length).fill(0.5);
          data[at] = Number.NaN;
          expect(firstNaN(data)).toBe(at);
        }
      }
    }
  });

  it('is not fooled by +Infinity and -Infinity in one group of four (their sum is NaN)', () => {
    expect(firstNaN(Float32Array.of(Infinity, -Infinity, 1, 2, 3))).toBe(-1);
    expect(firstNaN(Float32Array.of(Infinity, -Infinity, 1, 2, Number.NaN))).toBe(4);
    expect(firstNaN(Float64Array.of(-Infinity, 1, Infinity, Number.NaN))).toBe(3);
  });

  it('agrees with a plain scan on random data with NaN, infinities and -0', () => {
    fc.assert(
      fc.property(fc.array(element, { maxLength: 67 }), fc.boolean(), (values, single) => {
        const data = single ? Float32Array.from(values) : Float64Array.from(values);
        expect(firstNaN(data)).toBe(naive(data));
      }),
      { numRuns: 500 },
    );
  });

  it('returns -1 for an empty tensor', () => {
    expect(firstNaN(new Float32Array(0))).toBe(-1);
  });
});
