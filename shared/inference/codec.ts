/**
 * KServe v2 (Triton) inference protocol codec, JSON and the binary tensor extension as
 * Triton speaks it behind SageMaker: `application/vnd.sagemaker-triton.binary+json;
 * json-header-size=N`, a JSON header of N bytes, then the raw little-endian tensors in the
 * order of the header's tensors that carry `parameters.binary_data_size`.
 *
 * Client side: `encodeRequest` / `decodeResponse`. Server side (the local endpoint server):
 * `decodeRequest` / `encodeResponse` / `encodeError`. Every decode is validated; a
 * `CodecError` names the tensor and what was expected against what came.
 */
import * as z from 'zod';
import { flatten, fromBytes, fromJsonData, toBytes, toJsonData } from './codec-data.js';
import { CodecError } from './codec-error.js';
import {
  bytesPerElement,
  checkTensor,
  elementCount,
  hasNonFinite,
  isTensorDataType,
  TensorError,
  type Tensor,
} from './tensor.js';

export const JSON_CONTENT_TYPE = 'application/json';
export const BINARY_CONTENT_TYPE = 'application/vnd.sagemaker-triton.binary+json';
/** Above this many elements in all inputs together, `encodeRequest` picks the binary extension. */
export const DEFAULT_BINARY_THRESHOLD = 1024;

export interface EncodedBody {
  body: Uint8Array;
  contentType: string;
}

export { CodecError };

// ---------------------------------------------------------------------------------------
// Schemas
// ---------------------------------------------------------------------------------------

const ParametersSchema = z.record(z.string(), z.unknown());

const TensorJsonSchema = z.object({
  name: z.string().min(1),
  shape: z.array(z.number().int().nonnegative()),
  datatype: z.string().min(1),
  data: z.array(z.unknown()).optional(),
  parameters: z.looseObject({ binary_data_size: z.number().int().nonnegative().optional() }).optional(),
});
type TensorJson = z.infer<typeof TensorJsonSchema>;

/**
 * The request schema, built on the first `decodeRequest`: only the endpoint servers decode
 * requests, so a function bundle (which encodes them) neither builds nor carries it.
 */
function buildRequestSchema() {
  return z.object({
    id: z.string().optional(),
    parameters: z.looseObject({ binary_data_output: z.boolean().optional() }).optional(),
    inputs: z.array(TensorJsonSchema).min(1),
    outputs: z
      .array(
        z.object({
          name: z.string().min(1),
          parameters: z.looseObject({ binary_data: z.boolean().optional() }).optional(),
        }),
      )
      .optional(),
  });
}
let requestSchema: ReturnType<typeof buildRequestSchema> | undefined;

const ResponseSchema = z.object({
  model_name: z.string().optional(),
  model_version: z.string().optional(),
  id: z.string().optional(),
  parameters: ParametersSchema.optional(),
  outputs: z.array(TensorJsonSchema),
});

const ErrorSchema = z.object({ error: z.string() });

// ---------------------------------------------------------------------------------------
// Content type and framing
// ---------------------------------------------------------------------------------------

/** Whether a content type is the binary extension, and its JSON header size if so. */
export function parseContentType(
  contentType: string,
): { binary: false } | { binary: true; headerSize: number } {
  const [type = '', ...params] = contentType.split(';').map((p) => p.trim());
  if (type.toLowerCase() !== BINARY_CONTENT_TYPE) return { binary: false };
  for (const p of params) {
    const [k = '', v = ''] = p.split('=').map((s) => s.trim());
    if (k.toLowerCase() === 'json-header-size') {
      if (!/^\d+$/.test(v)) throw new CodecError(`content type: json-header-size "${v}" is not a byte count`);
      return { binary: true, headerSize: Number(v) };
    }
  }
  throw new CodecError(`content type: ${BINARY_CONTENT_TYPE} without json-header-size`);
}

// One decoder (stateless without streaming) and one encoder for every call.
const UTF8 = new TextDecoder('utf-8', { fatal: true });
const ENCODER = new TextEncoder();

function splitBody(body: Uint8Array, contentType: string): { header: unknown; binary: Uint8Array } {
  const ct = parseContentType(contentType);
  const headerSize = ct.binary ? ct.headerSize : body.length;
  if (headerSize > body.length) {
    throw new CodecError(`json-header-size ${headerSize} is larger than the body (${body.length} bytes)`);
  }
  let text: string;
  try {
    text = UTF8.decode(body.subarray(0, headerSize));
  } catch {
    throw new CodecError('body: the JSON header is not valid UTF-8');
  }
  let header: unknown;
  try {
    header = JSON.parse(text);
  } catch (err) {
    throw new CodecError(`body: the JSON header does not parse (${(err as Error).message})`);
  }
  return { header, binary: body.subarray(headerSize) };
}

function frame(
  header: unknown,
  chunks: readonly Uint8Array[],
  allocate: (n: number) => Uint8Array = (n) => new Uint8Array(n),
): EncodedBody {
  const text = JSON.stringify(header);
  if (chunks.length === 0) return { body: ENCODER.encode(text), contentType: JSON_CONTENT_TYPE };
  // The header is padded with spaces (valid JSON whitespace) to a multiple of 8 bytes, so that
  // tensors start aligned and the decoder can view them in place. An ASCII header (every one but
  // those with non-ASCII tensor names) is written straight into the body, and each tensor is
  // copied once, into its place.
  const utf8 = /[^ -~]/.test(text) ? ENCODER.encode(text) : undefined;
  const headerBytes = utf8?.length ?? text.length;
  const headerSize = Math.ceil(headerBytes / 8) * 8;
  const total = chunks.reduce((n, c) => n + c.length, headerSize);
  const body = allocate(total);
  if (utf8) body.set(utf8, 0);
  else ENCODER.encodeInto(text, body);
  body.fill(0x20, headerBytes, headerSize);
  let offset = headerSize;
  for (const c of chunks) {
    body.set(c, offset);
    offset += c.length;
  }
  return { body, contentType: `${BINARY_CONTENT_TYPE};json-header-size=${headerSize}` };
}

/** Names the failing place of a zod error with the tensor's name where there is one. */
function describeIssues(error: z.ZodError, raw: unknown, what: string): string {
  const issues = error.issues
    .slice(0, 5)
    .map((issue) => {
      const [list, index, ...rest] = issue.path;
      let where = issue.path.map(String).join('.');
      if ((list === 'inputs' || list === 'outputs') && typeof index === 'number') {
        const item = (raw as Record<string, unknown[] | undefined>)[list]?.[index] as
          { name?: unknown } | undefined;
        const name = typeof item?.name === 'string' ? ` ("${item.name}")` : '';
        where = `${list}[${index}]${name}${rest.length ? '.' + rest.map(String).join('.') : ''}`;
      }
      return `${where || '(root)'}: ${issue.message}`;
    })
    .join('; ');
  return `${what}: ${issues}`;
}

// ---------------------------------------------------------------------------------------
// Tensor <-> JSON and bytes
// ---------------------------------------------------------------------------------------

/** Reads the tensors of a parsed header, taking binary data from `binary` in order. */
function readTensors(items: readonly TensorJson[], binary: Uint8Array, what: 'input' | 'output'): Tensor[] {
  let offset = 0;
  const seen = new Set<string>();
  const tensors = items.map((item): Tensor => {
    const { name, shape } = item;
    if (seen.has(name)) throw new CodecError(`${what} "${name}" appears twice`);
    seen.add(name);
    if (!isTensorDataType(item.datatype)) {
      throw new CodecError(`${what} "${name}": datatype "${item.datatype}" is not supported`);
    }
    const datatype = item.datatype;
    const count = elementCount(shape);
    const size = item.parameters?.binary_data_size;
    if (size !== undefined) {
      if (item.data !== undefined) {
        throw new CodecError(`${what} "${name}": has both data and parameters.binary_data_size`);
      }
      const expected = count * bytesPerElement(datatype);
      if (size !== expected) {
        throw new CodecError(
          `${what} "${name}": binary_data_size ${size} does not match shape [${shape.join(',')}] ${datatype} (${expected} bytes)`,
        );
      }
      if (offset + size > binary.length) {
        throw new CodecError(
          `${what} "${name}": binary data ends early (needs ${size} bytes at offset ${offset}, body has ${binary.length})`,
        );
      }
      const data = fromBytes(datatype, binary.subarray(offset, offset + size));
      offset += size;
      return { name, datatype, shape, data };
    }
    if (item.data === undefined)
      throw new CodecError(`${what} "${name}": has neither data nor binary_data_size`);
    const values = flatten(name, item.data);
    if (values.length !== count) {
      throw new CodecError(
        `${what} "${name}": shape [${shape.join(',')}] needs ${count} elements, got ${values.length}`,
      );
    }
    return { name, datatype, shape, data: fromJsonData(name, datatype, values) };
  });
  if (offset !== binary.length) {
    throw new CodecError(`${binary.length - offset} bytes of binary data follow the last ${what} tensor`);
  }
  return tensors;
}

function writeTensor(t: Tensor, binary: boolean, chunks: Uint8Array[]): Record<string, unknown> {
  try {
    checkTensor(t);
  } catch (err) {
    if (err instanceof TensorError) throw new CodecError(err.message);
    throw err;
  }
  const head = { name: t.name, shape: t.shape, datatype: t.datatype };
  if (!binary) return { ...head, data: toJsonData(t) };
  const bytes = toBytes(t.data);
  chunks.push(bytes);
  return { ...head, parameters: { binary_data_size: bytes.length } };
}

// ---------------------------------------------------------------------------------------
// Client side
// ---------------------------------------------------------------------------------------

export interface EncodeRequestOptions {
  /** Force the binary extension (true) or JSON (false). Default: binary above `binaryThreshold`
   * elements, or when a floating-point input holds NaN/Infinity (JSON cannot carry them). */
  binary?: boolean;
  binaryThreshold?: number;
  id?: string;
  /** Where a binary body goes: a zero-offset buffer of exactly `n` bytes, any contents (the
   * invoker passes pooled ones, see buffer-pool.ts). Default: a new one. */
  allocate?: (n: number) => Uint8Array;
}

export function encodeRequest(
  inputs: readonly Tensor[],
  outputs: readonly string[],
  opts: EncodeRequestOptions = {},
): EncodedBody {
  if (inputs.length === 0) throw new CodecError('request: no inputs');
  const elements = inputs.reduce((n, t) => n + t.data.length, 0);
  const binary =
    opts.binary ??
    (elements > (opts.binaryThreshold ?? DEFAULT_BINARY_THRESHOLD) || inputs.some(hasNonFinite));
  const chunks: Uint8Array[] = [];
  const header = {
    ...(opts.id !== undefined ? { id: opts.id } : {}),
    inputs: inputs.map((t) => writeTensor(t, binary, chunks)),
    outputs: outputs.map((name) => (binary ? { name, parameters: { binary_data: true } } : { name })),
  };
  // Binary chosen with only empty tensors yields no chunks, hence a plain JSON body.
  return frame(header, chunks, opts.allocate);
}

/** Decodes an inference response; a Triton `{"error": ...}` body becomes a CodecError with its text. */
export function decodeResponse(body: Uint8Array, contentType: string): Tensor[] {
  const { header, binary } = splitBody(body, contentType);
  const error = ErrorSchema.safeParse(header);
  if (error.success) throw new CodecError(`server error: ${error.data.error}`);
  const parsed = ResponseSchema.safeParse(header);
  if (!parsed.success) throw new CodecError(describeIssues(parsed.error, header, 'response'));
  return readTensors(parsed.data.outputs, binary, 'output');
}

// ---------------------------------------------------------------------------------------
// Server side
// ---------------------------------------------------------------------------------------

export interface RequestedOutput {
  name: string;
  /** The client asked for this output in binary. */
  binary: boolean;
}

export interface DecodedRequest {
  id?: string;
  inputs: Tensor[];
  /** Outputs the client named; undefined means "all of them". */
  outputs?: RequestedOutput[];
  /** Request-level `parameters.binary_data_output`: all outputs in binary. */
  binaryOutput: boolean;
}

export function decodeRequest(body: Uint8Array, contentType: string): DecodedRequest {
  const { header, binary } = splitBody(body, contentType);
  const parsed = (requestSchema ??= buildRequestSchema()).safeParse(header);
  if (!parsed.success) throw new CodecError(describeIssues(parsed.error, header, 'request'));
  const req = parsed.data;
  const inputs = readTensors(req.inputs, binary, 'input');
  const binaryOutput = req.parameters?.binary_data_output === true;
  const outputs = req.outputs?.map((o) => ({
    name: o.name,
    binary: o.parameters?.binary_data ?? binaryOutput,
  }));
  return {
    ...(req.id !== undefined ? { id: req.id } : {}),
    inputs,
    ...(outputs ? { outputs } : {}),
    binaryOutput,
  };
}

export interface EncodeResponseOptions {
  modelName: string;
  modelVersion?: string;
  id?: string;
  /** Which outputs go binary: all (true), none (false), or per name. Floating-point outputs
   * holding NaN/Infinity always go binary, since JSON cannot carry them. */
  binary?: boolean | ((name: string) => boolean);
}

export function encodeResponse(outputs: readonly Tensor[], opts: EncodeResponseOptions): EncodedBody {
  const chunks: Uint8Array[] = [];
  const wantsBinary = (name: string): boolean =>
    typeof opts.binary === 'function' ? opts.binary(name) : (opts.binary ?? false);
  const header = {
    model_name: opts.modelName,
    model_version: opts.modelVersion ?? '1',
    ...(opts.id !== undefined ? { id: opts.id } : {}),
    outputs: outputs.map((t) => writeTensor(t, wantsBinary(t.name) || hasNonFinite(t), chunks)),
  };
  return frame(header, chunks);
}

/** A Triton error body. */
export function encodeError(message: string): EncodedBody {
  return {
    body: ENCODER.encode(JSON.stringify({ error: message })),
    contentType: JSON_CONTENT_TYPE,
  };
}
