/**
 * Tensors as they travel between the featurizer, the KServe v2 codec and the endpoint:
 * a name, a KServe datatype, a shape and a flat row-major typed array.
 */
import type { TensorDataType } from './manifest.js';

export type { TensorDataType } from './manifest.js';

export type TensorData = Float32Array | Float64Array | Int32Array | BigInt64Array | Uint8Array;

export interface Tensor {
  name: string;
  datatype: TensorDataType;
  /** Full shape, batch dimension included. */
  shape: number[];
  /** Row-major values; BOOL is one byte per element (0 or 1). */
  data: TensorData;
}

/** Every datatype this project sends or receives. */
export const TENSOR_DATATYPES: readonly TensorDataType[] = ['FP32', 'FP64', 'INT64', 'INT32', 'BOOL'];

export function isTensorDataType(value: string): value is TensorDataType {
  return (TENSOR_DATATYPES as readonly string[]).includes(value);
}

/** Bytes per element on the wire (binary extension) and in memory. */
export function bytesPerElement(datatype: TensorDataType): number {
  switch (datatype) {
    case 'FP32':
    case 'INT32':
      return 4;
    case 'FP64':
    case 'INT64':
      return 8;
    case 'BOOL':
      return 1;
  }
}

/** The number of elements a shape holds (1 for a scalar `[]`). */
export function elementCount(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** A zeroed typed array of the right kind for `datatype`. */
export function allocate(datatype: TensorDataType, length: number): TensorData {
  switch (datatype) {
    case 'FP32':
      return new Float32Array(length);
    case 'FP64':
      return new Float64Array(length);
    case 'INT32':
      return new Int32Array(length);
    case 'INT64':
      return new BigInt64Array(length);
    case 'BOOL':
      return new Uint8Array(length);
  }
}

/** Whether `data` is the typed array that `datatype` calls for. */
export function dataMatches(datatype: TensorDataType, data: TensorData): boolean {
  switch (datatype) {
    case 'FP32':
      return data instanceof Float32Array;
    case 'FP64':
      return data instanceof Float64Array;
    case 'INT32':
      return data instanceof Int32Array;
    case 'INT64':
      return data instanceof BigInt64Array;
    case 'BOOL':
      return data instanceof Uint8Array;
  }
}

export class TensorError extends Error {
  override name = 'TensorError';
}

/** Throws a TensorError naming the tensor when its data do not fit its datatype and shape. */
export function checkTensor(t: Tensor): void {
  if (!t.shape.every((d) => Number.isInteger(d) && d >= 0)) {
    throw new TensorError(
      `tensor "${t.name}": shape [${t.shape.join(',')}] has a negative or fractional dimension`,
    );
  }
  if (!dataMatches(t.datatype, t.data)) {
    throw new TensorError(
      `tensor "${t.name}": datatype ${t.datatype} does not match a ${t.data.constructor.name}`,
    );
  }
  const expected = elementCount(t.shape);
  if (t.data.length !== expected) {
    throw new TensorError(
      `tensor "${t.name}": shape [${t.shape.join(',')}] needs ${expected} elements, got ${t.data.length}`,
    );
  }
}

/**
 * Converts numbers (or booleans) into the typed array of `datatype`: integers are rounded,
 * BOOL is 1 for any non-zero value. Throws a TensorError naming `name` for an integer type
 * given a non-finite value.
 */
export function fromNumbers(
  name: string,
  datatype: TensorDataType,
  values: ArrayLike<number | boolean>,
): TensorData {
  const n = values.length;
  const at = (i: number): number => {
    const raw = values[i];
    return typeof raw === 'boolean' ? (raw ? 1 : 0) : (raw ?? Number.NaN);
  };
  const integer = (i: number): number => {
    const v = at(i);
    if (!Number.isFinite(v)) {
      throw new TensorError(`tensor "${name}": element ${i} is not finite, cannot be ${datatype}`);
    }
    return Math.round(v);
  };
  switch (datatype) {
    case 'FP32':
    case 'FP64': {
      const out = datatype === 'FP32' ? new Float32Array(n) : new Float64Array(n);
      for (let i = 0; i < n; i++) out[i] = at(i);
      return out;
    }
    case 'INT32': {
      const out = new Int32Array(n);
      for (let i = 0; i < n; i++) out[i] = integer(i);
      return out;
    }
    case 'INT64': {
      const out = new BigInt64Array(n);
      for (let i = 0; i < n; i++) out[i] = BigInt(integer(i));
      return out;
    }
    case 'BOOL': {
      const out = new Uint8Array(n);
      for (let i = 0; i < n; i++) {
        const v = at(i);
        out[i] = v !== 0 && !Number.isNaN(v) ? 1 : 0;
      }
      return out;
    }
  }
}

/** Element `i` as a JavaScript number (INT64 is converted, losing precision beyond 2^53). */
export function numberAt(data: TensorData, i: number): number {
  const v = data[i];
  if (v === undefined) return Number.NaN;
  return typeof v === 'bigint' ? Number(v) : v;
}

/** All elements as JavaScript numbers. */
export function toNumbers(data: TensorData): number[] {
  const out = new Array<number>(data.length);
  for (let i = 0; i < data.length; i++) out[i] = numberAt(data, i);
  return out;
}

/** Whether any element is NaN or infinite (floating-point tensors only). */
export function hasNonFinite(t: Tensor): boolean {
  if (!(t.data instanceof Float32Array || t.data instanceof Float64Array)) return false;
  for (const v of t.data) if (!Number.isFinite(v)) return true;
  return false;
}
