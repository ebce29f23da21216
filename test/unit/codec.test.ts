/**
 * KServe v2 codec: JSON and binary-extension round trips (request and response) give the
 * same tensors, the binary layout is what Triton expects, the encoder picks binary for
 * large or non-finite payloads, and malformed bodies fail with errors that name the problem.
 */
import { describe, expect, it } from 'vitest';
import {
  BINARY_CONTENT_TYPE,
  CodecError,
  decodeRequest,
  decodeResponse,
  encodeError,
  encodeRequest,
  encodeResponse,
  JSON_CONTENT_TYPE,
  parseContentType,
} from '../../shared/inference/codec.js';
import type { Tensor } from '../../shared/inference/tensor.js';

const enc = new TextEncoder();
const json = (v: unknown): Uint8Array => enc.encode(JSON.stringify(v));

/** One tensor of every datatype, with awkward values (negative, fractional, large INT64). */
function allTypes(): Tensor[] {
  return [
    { name: 'f32', datatype: 'FP32', shape: [2, 3], data: Float32Array.from([0.1, -2.5, 3e10, 0, 1 / 3, 7]) },
    { name: 'f64', datatype: 'FP64', shape: [3], data: Float64Array.from([Math.PI, -1e-300, 12345.6789]) },
    {
      name: 'i32',
      datatype: 'INT32',
      shape: [2, 2],
      data: Int32Array.from([-2147483648, 2147483647, 0, -7]),
    },
    { name: 'i64', datatype: 'INT64', shape: [2], data: BigInt64Array.from([-(2n ** 52n), 2n ** 53n - 1n]) },
    { name: 'b', datatype: 'BOOL', shape: [1, 3], data: Uint8Array.from([1, 0, 1]) },
  ];
}

/** The header of a binary body and its binary tail. */
function splitBinary(
  body: Uint8Array,
  contentType: string,
): { header: Record<string, unknown>; tail: Uint8Array } {
  const ct = parseContentType(contentType);
  if (!ct.binary) throw new Error('not binary');
  const header = JSON.parse(new TextDecoder().decode(body.subarray(0, ct.headerSize))) as Record<
    string,
    unknown
  >;
  return { header, tail: body.subarray(ct.headerSize) };
}

describe('request round trip', () => {
  it('JSON and binary both give back every datatype exactly, and the same tensors', () => {
    const inputs = allTypes();
    const asJson = encodeRequest(inputs, ['y'], { binary: false, id: '42' });
    const asBinary = encodeRequest(inputs, ['y'], { binary: true });
    expect(asJson.contentType).toBe(JSON_CONTENT_TYPE);
    expect(asBinary.contentType).toMatch(
      /^application\/vnd\.sagemaker-triton\.binary\+json;json-header-size=\d+$/,
    );

    const fromJson = decodeRequest(asJson.body, asJson.contentType);
    const fromBinary = decodeRequest(asBinary.body, asBinary.contentType);
    expect(fromJson.id).toBe('42');
    expect(fromJson.inputs).toEqual(inputs);
    expect(fromBinary.inputs).toEqual(inputs);
    expect(fromJson.outputs).toEqual([{ name: 'y', binary: false }]);
    expect(fromBinary.outputs).toEqual([{ name: 'y', binary: true }]);
  });

  it('lays the binary body out as Triton does: header with binary_data_size, then little-endian tensors in order', () => {
    const inputs: Tensor[] = [
      { name: 'a', datatype: 'FP32', shape: [1, 2], data: Float32Array.from([1, -2]) },
      { name: 'b', datatype: 'INT64', shape: [1], data: BigInt64Array.from([258n]) },
    ];
    const { body, contentType } = encodeRequest(inputs, ['y'], { binary: true });
    const { header, tail } = splitBinary(body, contentType);
    expect(header).toEqual({
      inputs: [
        { name: 'a', shape: [1, 2], datatype: 'FP32', parameters: { binary_data_size: 8 } },
        { name: 'b', shape: [1], datatype: 'INT64', parameters: { binary_data_size: 8 } },
      ],
      outputs: [{ name: 'y', parameters: { binary_data: true } }],
    });
    expect([...tail]).toEqual([0, 0, 0x80, 0x3f, 0, 0, 0, 0xc0, 2, 1, 0, 0, 0, 0, 0, 0]);
  });

  it('picks binary above the element threshold and for NaN, JSON otherwise', () => {
    const small: Tensor = { name: 'x', datatype: 'FP32', shape: [1, 4], data: new Float32Array(4) };
    const large: Tensor = { name: 'x', datatype: 'FP32', shape: [300, 4], data: new Float32Array(1200) };
    const nan: Tensor = {
      name: 'x',
      datatype: 'FP32',
      shape: [1, 2],
      data: Float32Array.from([1, Number.NaN]),
    };
    expect(encodeRequest([small], ['y']).contentType).toBe(JSON_CONTENT_TYPE);
    expect(encodeRequest([large], ['y']).contentType.startsWith(BINARY_CONTENT_TYPE)).toBe(true);
    expect(
      encodeRequest([small], ['y'], { binaryThreshold: 3 }).contentType.startsWith(BINARY_CONTENT_TYPE),
    ).toBe(true);
    const encoded = encodeRequest([nan], ['y']);
    expect(encoded.contentType.startsWith(BINARY_CONTENT_TYPE)).toBe(true);
    const back = decodeRequest(encoded.body, encoded.contentType).inputs[0];
    expect(back?.data[0]).toBe(1);
    expect(Number.isNaN(back?.data[1])).toBe(true);
  });

  it('refuses NaN in forced JSON and data that do not fit the shape, naming the tensor', () => {
    const nan: Tensor = { name: 'x', datatype: 'FP32', shape: [1], data: Float32Array.from([Number.NaN]) };
    expect(() => encodeRequest([nan], ['y'], { binary: false })).toThrow(/tensor "x": holds NaN/);
    const short: Tensor = { name: 'x', datatype: 'FP32', shape: [2, 3], data: new Float32Array(5) };
    expect(() => encodeRequest([short], ['y'])).toThrow(/tensor "x": shape \[2,3\] needs 6 elements, got 5/);
    const wrongType: Tensor = { name: 'x', datatype: 'FP64', shape: [1], data: new Float32Array(1) };
    expect(() => encodeRequest([wrongType], ['y'])).toThrow(
      /tensor "x": datatype FP64 does not match a Float32Array/,
    );
  });

  it('accepts nested JSON data and request-level binary_data_output', () => {
    const body = json({
      parameters: { binary_data_output: true },
      inputs: [
        {
          name: 'x',
          shape: [2, 2],
          datatype: 'FP32',
          data: [
            [1, 2],
            [3, 4],
          ],
        },
      ],
    });
    const req = decodeRequest(body, 'application/json');
    expect(req.inputs[0]?.data).toEqual(Float32Array.from([1, 2, 3, 4]));
    expect(req.outputs).toBeUndefined();
    expect(req.binaryOutput).toBe(true);
  });
});

describe('response round trip', () => {
  it('JSON and binary responses decode to identical tensors', () => {
    const outputs = allTypes();
    const asJson = encodeResponse(outputs, { modelName: 'm', binary: false });
    const asBinary = encodeResponse(outputs, { modelName: 'm', binary: true });
    expect(asJson.contentType).toBe(JSON_CONTENT_TYPE);
    expect(asBinary.contentType.startsWith(BINARY_CONTENT_TYPE)).toBe(true);
    const a = decodeResponse(asJson.body, asJson.contentType);
    const b = decodeResponse(asBinary.body, asBinary.contentType);
    expect(a).toEqual(outputs);
    expect(b).toEqual(a);
  });

  it('mixes JSON and binary outputs per name, and sends non-finite outputs in binary', () => {
    const outputs: Tensor[] = [
      { name: 'p', datatype: 'FP32', shape: [1, 2], data: Float32Array.from([0.25, 0.75]) },
      { name: 'q', datatype: 'FP32', shape: [1], data: Float32Array.from([Number.POSITIVE_INFINITY]) },
      { name: 'label', datatype: 'INT64', shape: [1], data: BigInt64Array.from([1n]) },
    ];
    const encoded = encodeResponse(outputs, { modelName: 'm', modelVersion: '3', binary: (n) => n === 'p' });
    const { header } = splitBinary(encoded.body, encoded.contentType);
    expect(header.model_version).toBe('3');
    const heads = header.outputs as { name: string; data?: unknown; parameters?: unknown }[];
    expect(heads.map((h) => [h.name, h.data === undefined])).toEqual([
      ['p', true],
      ['q', true],
      ['label', false],
    ]);
    expect(decodeResponse(encoded.body, encoded.contentType)).toEqual(outputs);
  });
});

describe('malformed bodies', () => {
  const req =
    (v: unknown): (() => unknown) =>
    () =>
      decodeRequest(json(v), 'application/json');
  const x = { name: 'x', shape: [2, 2], datatype: 'FP32' };

  it('names JSON and schema problems', () => {
    expect(() => decodeRequest(enc.encode('{"inputs": ['), 'application/json')).toThrow(
      /JSON header does not parse/,
    );
    expect(() => decodeRequest(Uint8Array.from([0xff, 0xfe]), 'application/json')).toThrow(/not valid UTF-8/);
    expect(req({})).toThrow(/request: inputs: /);
    expect(req({ inputs: [] })).toThrow(/request: inputs: /);
    expect(req({ inputs: [{ ...x, shape: [2, -1], data: [1, 2] }] })).toThrow(
      /inputs\[0\] \("x"\)\.shape\.1: /,
    );
    expect(req({ inputs: [{ name: 'x', datatype: 'FP32', data: [1] }] })).toThrow(
      /inputs\[0\] \("x"\)\.shape: /,
    );
  });

  it('names the tensor with a wrong element count, datatype or element', () => {
    expect(req({ inputs: [{ ...x, data: [1, 2, 3] }] })).toThrow(
      /input "x": shape \[2,2\] needs 4 elements, got 3/,
    );
    expect(req({ inputs: [{ ...x, datatype: 'BYTES', data: ['a', 'b', 'c', 'd'] }] })).toThrow(
      /input "x": datatype "BYTES" is not supported/,
    );
    expect(req({ inputs: [{ ...x, data: [1, 2, 'three', 4] }] })).toThrow(/tensor "x": element 2 is string/);
    expect(req({ inputs: [{ ...x, data: [1, 2, null, 4] }] })).toThrow(/tensor "x": element 2 is null/);
    expect(req({ inputs: [{ ...x, datatype: 'INT32', data: [1, 2, 3.5, 4] }] })).toThrow(
      /tensor "x": element 2 \(3.5\) is not a valid INT32/,
    );
    expect(
      req({
        inputs: [
          { ...x, data: [1, 2, 3, 4] },
          { ...x, data: [1, 2, 3, 4] },
        ],
      }),
    ).toThrow(/input "x" appears twice/);
    expect(req({ inputs: [{ ...x }] })).toThrow(/input "x": has neither data nor binary_data_size/);
  });

  it('names binary framing problems', () => {
    const good = encodeRequest(
      [{ name: 'x', datatype: 'FP32', shape: [2, 2], data: new Float32Array(4) }],
      ['y'],
      { binary: true },
    );
    const { header } = splitBinary(good.body, good.contentType);
    const headerBytes = json(header);
    const ct = `${BINARY_CONTENT_TYPE};json-header-size=${headerBytes.length}`;
    const withTail = (n: number): Uint8Array => {
      const b = new Uint8Array(headerBytes.length + n);
      b.set(headerBytes);
      return b;
    };
    expect(() => decodeRequest(withTail(12), ct)).toThrow(
      /input "x": binary data ends early \(needs 16 bytes/,
    );
    expect(() => decodeRequest(withTail(20), ct)).toThrow(
      /4 bytes of binary data follow the last input tensor/,
    );
    expect(() => decodeRequest(good.body, BINARY_CONTENT_TYPE)).toThrow(/without json-header-size/);
    expect(() => decodeRequest(good.body, `${BINARY_CONTENT_TYPE};json-header-size=abc`)).toThrow(
      /json-header-size "abc" is not a byte count/,
    );
    expect(() => decodeRequest(good.body, `${BINARY_CONTENT_TYPE};json-header-size=999999`)).toThrow(
      /json-header-size 999999 is larger than the body/,
    );
    const badSize = json({
      inputs: [{ name: 'x', shape: [2, 2], datatype: 'FP32', parameters: { binary_data_size: 12 } }],
    });
    expect(() => decodeRequest(badSize, 'application/json')).toThrow(
      /input "x": binary_data_size 12 does not match shape \[2,2\] FP32 \(16 bytes\)/,
    );
  });

  it('turns a Triton error body into a CodecError with its text, and checks responses too', () => {
    const err = encodeError('unexpected inference input');
    expect(() => decodeResponse(err.body, err.contentType)).toThrow(CodecError);
    expect(() => decodeResponse(err.body, err.contentType)).toThrow(
      /server error: unexpected inference input/,
    );
    expect(() =>
      decodeResponse(json({ outputs: [{ name: 'y', shape: [1], datatype: 'FP32' }] }), 'application/json'),
    ).toThrow(/output "y": has neither data nor binary_data_size/);
    expect(() => decodeResponse(json({ model_name: 'm' }), 'application/json')).toThrow(
      /response: outputs: /,
    );
  });
});

describe('zero-copy binary decode', () => {
  it('pads the JSON header to 8 bytes and decodes aligned tensors as views of the body', () => {
    const inputs: Tensor[] = [
      { name: 'x', datatype: 'FP32', shape: [2, 3], data: Float32Array.from([1, 2, 3, 4, 5, 6]) },
      { name: 'i', datatype: 'INT64', shape: [2], data: BigInt64Array.from([7n, -8n]) },
    ];
    const { body, contentType } = encodeRequest(inputs, ['y'], { binary: true });
    const ct = parseContentType(contentType);
    expect(ct.binary && ct.headerSize % 8).toBe(0);
    const decoded = decodeRequest(body, contentType);
    expect(decoded.inputs).toEqual(inputs);
    expect(decoded.inputs[0]?.data.buffer).toBe(body.buffer); // a view, not a copy
    // A body at an odd offset (e.g. a pooled Buffer) is copied into aligned memory instead.
    const shifted = new Uint8Array(body.length + 1);
    shifted.set(body, 1);
    const fromShifted = decodeRequest(shifted.subarray(1), contentType);
    expect(fromShifted.inputs).toEqual(inputs);
    expect(fromShifted.inputs[0]?.data.buffer).not.toBe(shifted.buffer);
  });

  it('writes a header with non-ASCII tensor names as UTF-8, padded, and the tensors after it', () => {
    const inputs: Tensor[] = [
      { name: 'gewicht_ä', datatype: 'FP32', shape: [1, 2], data: Float32Array.from([1.5, -2]) },
      { name: '体重', datatype: 'FP64', shape: [1], data: Float64Array.from([3.25]) },
    ];
    const { body, contentType } = encodeRequest(inputs, ['y'], { binary: true });
    const ct = parseContentType(contentType);
    if (!ct.binary) throw new Error('expected the binary extension');
    expect(ct.headerSize % 8).toBe(0);
    const header = new TextDecoder().decode(body.subarray(0, ct.headerSize));
    expect((JSON.parse(header) as { inputs: { name: string }[] }).inputs.map((t) => t.name)).toEqual([
      'gewicht_ä',
      '体重',
    ]);
    expect(body.length).toBe(ct.headerSize + 8 + 8);
    expect(decodeRequest(body, contentType).inputs).toEqual(inputs);
  });
});
