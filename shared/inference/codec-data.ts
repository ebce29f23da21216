/**
 * Tensor data to and from the wire for the KServe v2 codec: little-endian bytes for the binary
 * extension (decoded in place when aligned), and JSON arrays (validated per datatype).
 */
import { CodecError } from './codec-error.js';
import {
  bytesPerElement,
  fromNumbers,
  hasNonFinite,
  type Tensor,
  type TensorData,
  type TensorDataType,
} from './tensor.js';

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

export function toBytes(data: TensorData): Uint8Array {
  if (LITTLE_ENDIAN || data instanceof Uint8Array) {
    return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  }
  const out = new Uint8Array(data.byteLength);
  const view = new DataView(out.buffer);
  for (let i = 0; i < data.length; i++) {
    if (data instanceof Float32Array) view.setFloat32(i * 4, data[i] ?? 0, true);
    else if (data instanceof Float64Array) view.setFloat64(i * 8, data[i] ?? 0, true);
    else if (data instanceof Int32Array) view.setInt32(i * 4, data[i] ?? 0, true);
    else view.setBigInt64(i * 8, data[i] ?? 0n, true);
  }
  return out;
}

export function fromBytes(datatype: TensorDataType, bytes: Uint8Array): TensorData {
  const size = bytesPerElement(datatype);
  const n = bytes.length / size;
  // Aligned (the encoder pads the JSON header to 8 bytes): a view, no copy. The body is owned
  // by this decode (a request or response body), so sharing its memory is safe.
  if (LITTLE_ENDIAN && bytes.byteOffset % size === 0) {
    switch (datatype) {
      case 'FP32':
        return new Float32Array(bytes.buffer, bytes.byteOffset, n);
      case 'FP64':
        return new Float64Array(bytes.buffer, bytes.byteOffset, n);
      case 'INT32':
        return new Int32Array(bytes.buffer, bytes.byteOffset, n);
      case 'INT64':
        return new BigInt64Array(bytes.buffer, bytes.byteOffset, n);
      case 'BOOL':
        return new Uint8Array(bytes.buffer, bytes.byteOffset, n);
    }
  }
  // Misaligned: a copy into a fresh, aligned buffer.
  const copy = new Uint8Array(bytes);
  if (LITTLE_ENDIAN || datatype === 'BOOL') {
    switch (datatype) {
      case 'FP32':
        return new Float32Array(copy.buffer, 0, n);
      case 'FP64':
        return new Float64Array(copy.buffer, 0, n);
      case 'INT32':
        return new Int32Array(copy.buffer, 0, n);
      case 'INT64':
        return new BigInt64Array(copy.buffer, 0, n);
      case 'BOOL':
        return copy;
    }
  }
  const view = new DataView(copy.buffer);
  switch (datatype) {
    case 'FP32':
      return Float32Array.from({ length: n }, (_, i) => view.getFloat32(i * 4, true));
    case 'FP64':
      return Float64Array.from({ length: n }, (_, i) => view.getFloat64(i * 8, true));
    case 'INT32':
      return Int32Array.from({ length: n }, (_, i) => view.getInt32(i * 4, true));
    case 'INT64':
      return BigInt64Array.from({ length: n }, (_, i) => view.getBigInt64(i * 8, true));
  }
}

export function toJsonData(t: Tensor): (number | boolean)[] {
  if (t.datatype === 'BOOL') return Array.from(t.data as Uint8Array, (v) => v !== 0);
  if (t.data instanceof BigInt64Array) {
    return Array.from(t.data, (v, i) => {
      const n = Number(v);
      if (!Number.isSafeInteger(n)) {
        throw new CodecError(`tensor "${t.name}": element ${i} (INT64) does not fit a JSON number exactly`);
      }
      return n;
    });
  }
  if (hasNonFinite(t)) {
    throw new CodecError(
      `tensor "${t.name}": holds NaN or Infinity, which JSON cannot carry; use the binary extension`,
    );
  }
  return Array.from(t.data as Float32Array | Float64Array | Int32Array);
}

export function flatten(name: string, data: readonly unknown[]): (number | boolean)[] {
  const out: (number | boolean)[] = [];
  const walk = (items: readonly unknown[]): void => {
    for (const v of items) {
      if (Array.isArray(v)) walk(v);
      else if (typeof v === 'number' || typeof v === 'boolean') out.push(v);
      else
        throw new CodecError(
          `tensor "${name}": element ${out.length} is ${v === null ? 'null' : typeof v}, not a number`,
        );
    }
  };
  walk(data);
  return out;
}

export function fromJsonData(
  name: string,
  datatype: TensorDataType,
  values: readonly (number | boolean)[],
): TensorData {
  if (datatype !== 'FP32' && datatype !== 'FP64') {
    values.forEach((v, i) => {
      const ok = datatype === 'BOOL' ? typeof v === 'boolean' || v === 0 || v === 1 : Number.isInteger(v);
      if (!ok)
        throw new CodecError(`tensor "${name}": element ${i} (${String(v)}) is not a valid ${datatype}`);
    });
  } else if (values.some((v) => typeof v !== 'number')) {
    throw new CodecError(`tensor "${name}": ${datatype} data holds a boolean`);
  }
  return fromNumbers(name, datatype, values);
}
