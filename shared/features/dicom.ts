/**
 * DICOM Part 10 → Hounsfield units, with dicom-parser. Only uncompressed transfer syntaxes are
 * decoded (implicit and explicit VR little endian, explicit VR big endian); every other one
 * (JPEG, JPEG-LS, JPEG 2000, RLE, deflate, HT-J2K, video…) is answered with
 * `unsupported transfer syntax <uid>`, never thrown. Checks run before any pixel buffer is
 * allocated: modality, samples per pixel 1, bits allocated 8 or 16, Rows × Columns within
 * `maxPixels`, pixel data present, native (not encapsulated) and complete.
 */
import dicomParser from 'dicom-parser';
import type { DataSet } from 'dicom-parser';

export const TS_IMPLICIT_LE = '1.2.840.10008.1.2';
export const TS_EXPLICIT_LE = '1.2.840.10008.1.2.1';
export const TS_EXPLICIT_BE = '1.2.840.10008.1.2.2';
const SUPPORTED_TS: ReadonlySet<string> = new Set([TS_IMPLICIT_LE, TS_EXPLICIT_LE, TS_EXPLICIT_BE]);

/** Names of common transfer syntaxes we refuse, for clearer messages. */
const TS_NAMES: Readonly<Record<string, string>> = {
  '1.2.840.10008.1.2.1.99': 'Deflated Explicit VR Little Endian',
  '1.2.840.10008.1.2.4.50': 'JPEG Baseline',
  '1.2.840.10008.1.2.4.51': 'JPEG Extended',
  '1.2.840.10008.1.2.4.57': 'JPEG Lossless',
  '1.2.840.10008.1.2.4.70': 'JPEG Lossless SV1',
  '1.2.840.10008.1.2.4.80': 'JPEG-LS Lossless',
  '1.2.840.10008.1.2.4.81': 'JPEG-LS Near-Lossless',
  '1.2.840.10008.1.2.4.90': 'JPEG 2000 Lossless',
  '1.2.840.10008.1.2.4.91': 'JPEG 2000',
  '1.2.840.10008.1.2.4.201': 'HTJ2K Lossless',
  '1.2.840.10008.1.2.4.203': 'HTJ2K',
  '1.2.840.10008.1.2.5': 'RLE Lossless',
};

export interface DecodedImage {
  readonly rows: number;
  readonly columns: number;
  /** Hounsfield units (rescaled stored values), row-major `[rows × columns]`, first frame. */
  readonly hu: Float32Array;
  readonly transferSyntax: string;
  readonly modality: string;
  readonly sopInstanceUid: string | undefined;
}

export type DicomProblem =
  | 'not-dicom'
  | 'truncated'
  | 'transfer-syntax'
  | 'modality'
  | 'samples-per-pixel'
  | 'bits-allocated'
  | 'dimensions'
  | 'too-large'
  | 'pixel-data';

export type DicomDecodeOutcome =
  | { readonly ok: true; readonly image: DecodedImage }
  | { readonly ok: false; readonly problem: DicomProblem; readonly message: string };

export interface DecodeOptions {
  /** The modality the model takes (`CT`); another one is refused. */
  readonly modality: string;
  /** Largest Rows × Columns accepted. */
  readonly maxPixels: number;
}

const fail = (problem: DicomProblem, message: string): DicomDecodeOutcome => ({
  ok: false,
  problem,
  message,
});

/**
 * The transfer syntax from the File Meta Information (group 0002, always explicit VR little
 * endian), read by hand so that a syntax we cannot decode is named before the data set is parsed.
 */
export function readTransferSyntax(
  bytes: Uint8Array,
):
  | { readonly ok: true; readonly uid: string }
  | { readonly ok: false; readonly problem: 'not-dicom' | 'truncated' } {
  const bad = (problem: 'not-dicom' | 'truncated') => ({ ok: false, problem }) as const;
  if (bytes.length < 132) return bad(bytes.length >= 128 ? 'truncated' : 'not-dicom');
  if (bytes[128] !== 0x44 || bytes[129] !== 0x49 || bytes[130] !== 0x43 || bytes[131] !== 0x4d) {
    return bad('not-dicom');
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let pos = 132;
  while (pos + 8 <= bytes.length) {
    const group = view.getUint16(pos, true);
    if (group !== 0x0002) return bad('not-dicom');
    const element = view.getUint16(pos + 2, true);
    const vr = String.fromCharCode(bytes[pos + 4] as number, bytes[pos + 5] as number);
    let length: number;
    let valueAt: number;
    if (['OB', 'OW', 'OF', 'SQ', 'UT', 'UN', 'UC', 'UR', 'OD', 'OL', 'OV', 'SV', 'UV'].includes(vr)) {
      if (pos + 12 > bytes.length) return bad('truncated');
      length = view.getUint32(pos + 8, true);
      valueAt = pos + 12;
    } else {
      length = view.getUint16(pos + 6, true);
      valueAt = pos + 8;
    }
    if (valueAt + length > bytes.length) return bad('truncated');
    if (element === 0x0010) {
      let uid = '';
      for (let i = valueAt; i < valueAt + length; i++) uid += String.fromCharCode(bytes[i] as number);
      return { ok: true, uid: uid.replace(/[\0 ]+$/, '') };
    }
    pos = valueAt + length;
  }
  return bad(bytes.length < pos + 8 ? 'truncated' : 'not-dicom');
}

function describeSyntax(uid: string): string {
  const name = TS_NAMES[uid];
  return name === undefined ? uid : `${uid} (${name})`;
}

/** Decodes the first frame of a DICOM Part 10 instance into Hounsfield units. Never throws. */
export function decodeDicomImage(bytes: Uint8Array, options: DecodeOptions): DicomDecodeOutcome {
  const meta = readTransferSyntax(bytes);
  if (!meta.ok) {
    return meta.problem === 'not-dicom'
      ? fail('not-dicom', 'not a DICOM Part 10 file (no DICM prefix or file meta)')
      : fail('truncated', 'DICOM file is truncated in its file meta information');
  }
  const ts = meta.uid;
  if (!SUPPORTED_TS.has(ts))
    return fail('transfer-syntax', `unsupported transfer syntax ${describeSyntax(ts)}`);

  let ds: DataSet;
  try {
    // Parse up to the pixel data's header only; its value is checked and read by hand below.
    ds = dicomParser.parseDicom(bytes, { untilTag: 'x7fe00010' });
  } catch (err) {
    // dicom-parser throws `{ exception, dataSet }`, an Error, or a string.
    const cause: unknown = (err as { exception?: unknown } | null)?.exception ?? err;
    const text = cause instanceof Error ? cause.message : typeof cause === 'string' ? cause : 'parse error';
    const truncated = /end of buffer|past|overr|truncat|not enough/i.test(text);
    return fail(truncated ? 'truncated' : 'not-dicom', `DICOM data set could not be parsed: ${text}`);
  }

  const modality = (ds.string('x00080060') ?? '').trim();
  if (modality !== options.modality) {
    return fail(
      'modality',
      `modality ${modality === '' ? '(none)' : modality}, the model takes ${options.modality}`,
    );
  }
  const samples = ds.uint16('x00280002') ?? 1;
  if (samples !== 1)
    return fail('samples-per-pixel', `samples per pixel ${String(samples)}, only 1 is supported`);
  const rows = ds.uint16('x00280010') ?? 0;
  const columns = ds.uint16('x00280011') ?? 0;
  if (rows <= 0 || columns <= 0) return fail('dimensions', 'rows or columns missing or zero');
  if (rows * columns > options.maxPixels) {
    return fail(
      'too-large',
      `image of ${String(rows)}×${String(columns)} pixels exceeds the limit of ${String(options.maxPixels)}`,
    );
  }
  const bitsAllocated = ds.uint16('x00280100') ?? 0;
  if (bitsAllocated !== 16 && bitsAllocated !== 8) {
    return fail('bits-allocated', `bits allocated ${String(bitsAllocated)}, only 8 and 16 are supported`);
  }
  const bitsStored = Math.min(ds.uint16('x00280101') ?? bitsAllocated, bitsAllocated);
  const signed = (ds.uint16('x00280103') ?? 0) === 1;
  const slope = ds.floatString('x00281053') ?? 1;
  const intercept = ds.floatString('x00281052') ?? 0;
  if (!Number.isFinite(slope) || !Number.isFinite(intercept)) {
    return fail('pixel-data', 'rescale slope or intercept is not a number');
  }

  const pixel = ds.elements.x7fe00010;
  if (pixel === undefined) return fail('pixel-data', 'no pixel data (7FE0,0010)');
  if (
    pixel.encapsulatedPixelData === true ||
    pixel.hadUndefinedLength === true ||
    pixel.length === 0xffffffff
  ) {
    return fail('pixel-data', 'pixel data is encapsulated although the transfer syntax is native');
  }
  const bytesPerPixel = bitsAllocated / 8;
  const needed = rows * columns * bytesPerPixel;
  const available = Math.min(pixel.length, bytes.length - pixel.dataOffset);
  if (pixel.dataOffset > bytes.length || available < needed) {
    return fail(
      'truncated',
      `pixel data holds ${String(Math.max(0, available))} bytes, ${String(needed)} needed for one frame`,
    );
  }

  const view = new DataView(bytes.buffer, bytes.byteOffset + pixel.dataOffset, needed);
  const littleEndian = ts !== TS_EXPLICIT_BE;
  const count = rows * columns;
  const hu = new Float32Array(count);
  const storedMask = bitsStored >= 32 ? 0xffffffff : 2 ** bitsStored - 1;
  const signBit = 2 ** (bitsStored - 1);
  const range = 2 ** bitsStored;
  for (let i = 0; i < count; i++) {
    let raw = bitsAllocated === 16 ? view.getUint16(i * 2, littleEndian) : view.getUint8(i);
    raw &= storedMask;
    if (signed && raw >= signBit) raw -= range;
    hu[i] = raw * slope + intercept;
  }
  return {
    ok: true,
    image: {
      rows,
      columns,
      hu,
      transferSyntax: ts,
      modality,
      sopInstanceUid: ds.string('x00080018')?.trim(),
    },
  };
}
