/**
 * The embedded DICOMweb server over a folder of DICOM Part 10 files, on loopback
 * (default http://127.0.0.1:8082/dicomweb):
 *
 * - WADO-RS: `GET /studies/{study}`, `/studies/{study}/series/{series}`,
 *   `/studies/{study}/series/{series}/instances/{sop}` → `multipart/related;
 *   type="application/dicom"` (the files as stored, no transcoding);
 *   `.../instances/{sop}/frames/{n[,m…]}` → `multipart/related;
 *   type="application/octet-stream"` of the native frames' bytes.
 * - QIDO-RS (minimal): `GET /studies`, `/studies/{study}/series`,
 *   `/studies/{study}/series/{series}/instances` → `application/dicom+json`, with exact-match
 *   filters `StudyInstanceUID`, `PatientID`, `ModalitiesInStudy` / `Modality`, `SeriesInstanceUID`,
 *   `SOPInstanceUID`.
 *
 * Errors are JSON `{ "status", "error" }`: 400 for a malformed UID or frame list, 404 for what
 * is not there, 405 for other methods, 406 when the Accept header asks for what it cannot give.
 * The folder is indexed at start (every `*.dcm`, and files without extension holding `DICM`,
 * one level of subfolders included); `reindex()` reads it again.
 */
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import dicomParser from 'dicom-parser';

export interface DicomWebServerOptions {
  /** Folder of DICOM Part 10 files. */
  readonly dir: string;
  /** Default 8082; 0 picks a free port. */
  readonly port?: number;
  /** Default 127.0.0.1; only loopback addresses are accepted. */
  readonly host?: string;
}

export interface RunningDicomWebServer {
  /** e.g. `http://127.0.0.1:8082/dicomweb`, no trailing slash. */
  readonly url: string;
  /** How many instances are indexed. */
  readonly size: () => number;
  reindex(): void;
  close(): Promise<void>;
}

interface Instance {
  readonly file: string;
  readonly studyUid: string;
  readonly seriesUid: string;
  readonly sopUid: string;
  readonly sopClassUid: string;
  readonly modality: string;
  readonly patientId: string;
  readonly studyDate: string;
  readonly instanceNumber: number | undefined;
  readonly seriesNumber: number | undefined;
  readonly rows: number | undefined;
  readonly columns: number | undefined;
  readonly transferSyntax: string;
  readonly frames: number;
}

const LOOPBACK = /^(127(\.\d{1,3}){3}|::1|localhost)$/;
const UID = /^[0-9]+(\.[0-9]+)*$/;
const BASE = '/dicomweb';
const NATIVE = new Set(['1.2.840.10008.1.2', '1.2.840.10008.1.2.1', '1.2.840.10008.1.2.2']);

function listFiles(dir: string, depth = 0): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory() && depth < 1) out.push(...listFiles(path, depth + 1));
    else if (entry.isFile() && (entry.name.endsWith('.dcm') || !entry.name.includes('.'))) out.push(path);
  }
  return out.sort();
}

function readInstance(file: string): Instance | undefined {
  let bytes: Uint8Array;
  try {
    bytes = readFileSync(file);
  } catch {
    return undefined;
  }
  if (bytes.length < 132 || String.fromCharCode(...bytes.subarray(128, 132)) !== 'DICM') return undefined;
  try {
    const ds = dicomParser.parseDicom(bytes, { untilTag: 'x7fe00010' });
    const s = (tag: string): string => (ds.string(tag) ?? '').trim();
    const int = (tag: string): number | undefined => ds.intString(tag);
    const studyUid = s('x0020000d');
    const seriesUid = s('x0020000e');
    const sopUid = s('x00080018');
    if (!studyUid || !seriesUid || !sopUid) return undefined;
    return {
      file,
      studyUid,
      seriesUid,
      sopUid,
      sopClassUid: s('x00080016'),
      modality: s('x00080060'),
      patientId: s('x00100020'),
      studyDate: s('x00080020'),
      instanceNumber: int('x00200013'),
      seriesNumber: int('x00200011'),
      rows: ds.uint16('x00280010'),
      columns: ds.uint16('x00280011'),
      transferSyntax: s('x00020010'),
      frames: int('x00280008') ?? 1,
    };
  } catch {
    return undefined;
  }
}

type DicomJson = Record<string, { vr: string; Value?: unknown[] }>;

const attr = (vr: string, value: string | number | undefined): { vr: string; Value?: unknown[] } =>
  value === undefined || value === '' ? { vr } : { vr, Value: [value] };

function studyJson(instances: readonly Instance[]): DicomJson {
  const first = instances[0] as Instance;
  return {
    '00080020': attr('DA', first.studyDate),
    '00080061': { vr: 'CS', Value: [...new Set(instances.map((i) => i.modality))].sort() },
    '00100020': attr('LO', first.patientId),
    '0020000D': attr('UI', first.studyUid),
    '00201206': attr('IS', new Set(instances.map((i) => i.seriesUid)).size),
    '00201208': attr('IS', instances.length),
  };
}

function seriesJson(instances: readonly Instance[]): DicomJson {
  const first = instances[0] as Instance;
  return {
    '00080060': attr('CS', first.modality),
    '0020000D': attr('UI', first.studyUid),
    '0020000E': attr('UI', first.seriesUid),
    '00200011': attr('IS', first.seriesNumber),
    '00201209': attr('IS', instances.length),
  };
}

function instanceJson(i: Instance): DicomJson {
  return {
    '00080016': attr('UI', i.sopClassUid),
    '00080018': attr('UI', i.sopUid),
    '00080060': attr('CS', i.modality),
    '0020000D': attr('UI', i.studyUid),
    '0020000E': attr('UI', i.seriesUid),
    '00200013': attr('IS', i.instanceNumber),
    '00280008': attr('IS', i.frames),
    '00280010': attr('US', i.rows),
    '00280011': attr('US', i.columns),
  };
}

function groupBy<K>(items: readonly Instance[], key: (i: Instance) => K): Map<K, Instance[]> {
  const map = new Map<K, Instance[]>();
  for (const i of items) {
    const list = map.get(key(i));
    if (list) list.push(i);
    else map.set(key(i), [i]);
  }
  return map;
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

function sendJson(res: ServerResponse, status: number, body: unknown, type = 'application/json'): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function sendMultipart(res: ServerResponse, type: string, parts: readonly Uint8Array[], extra: string): void {
  const boundary = `dicomweb-${randomBytes(12).toString('hex')}`;
  const chunks: Buffer[] = [];
  for (const part of parts) {
    chunks.push(
      Buffer.from(
        `--${boundary}\r\nContent-Type: ${type}${extra}\r\nContent-Length: ${String(part.length)}\r\n\r\n`,
      ),
      Buffer.from(part.buffer, part.byteOffset, part.byteLength),
      Buffer.from('\r\n'),
    );
  }
  chunks.push(Buffer.from(`--${boundary}--\r\n`));
  const body = Buffer.concat(chunks);
  res.writeHead(200, {
    'content-type': `multipart/related; type="${type}"; boundary=${boundary}`,
    'content-length': body.length,
  });
  res.end(body);
}

/** Checks the Accept header against what a route produces (`multipart/related; type=…`). */
function negotiate(req: IncomingMessage, partType: string, transferSyntax?: string): void {
  const accept = req.headers.accept;
  if (accept === undefined || accept.trim() === '') return;
  const ranges = accept.split(',').map((r) => r.trim().toLowerCase());
  const fits = ranges.some((range) => {
    const [media = '', ...params] = range.split(';').map((p) => p.trim());
    if (media === '*/*' || media === 'multipart/*') return true;
    if (media !== 'multipart/related') return false;
    const get = (name: string): string | undefined =>
      params
        .find((p) => p.startsWith(`${name}=`))
        ?.slice(name.length + 1)
        .replace(/^"|"$/g, '');
    const type = get('type');
    const ts = get('transfer-syntax');
    if (type !== undefined && type !== partType) return false;
    if (ts !== undefined && ts !== '*' && transferSyntax !== undefined && ts !== transferSyntax) return false;
    return true;
  });
  if (!fits) throw new HttpError(406, `cannot produce ${partType} for Accept: ${accept}`);
}

function checkUid(uid: string, what: string): string {
  if (!UID.test(uid) || uid.length > 64) throw new HttpError(400, `${what} is not a DICOM UID: ${uid}`);
  return uid;
}

/** The native frames of an instance, each `rows × columns × samples × bytes` long. */
function frameBytes(inst: Instance, numbers: readonly number[]): Uint8Array[] {
  if (!NATIVE.has(inst.transferSyntax)) {
    throw new HttpError(
      406,
      `frames of transfer syntax ${inst.transferSyntax} are not served (no transcoding)`,
    );
  }
  const bytes = readFileSync(inst.file);
  const ds = dicomParser.parseDicom(bytes, { untilTag: 'x7fe00010' });
  const pixel = ds.elements.x7fe00010;
  if (pixel === undefined) throw new HttpError(404, 'the instance has no pixel data');
  const rows = ds.uint16('x00280010') ?? 0;
  const columns = ds.uint16('x00280011') ?? 0;
  const samples = ds.uint16('x00280002') ?? 1;
  const bits = ds.uint16('x00280100') ?? 16;
  const size = (rows * columns * samples * bits) / 8;
  return numbers.map((n) => {
    if (n < 1 || n > inst.frames) throw new HttpError(404, `frame ${String(n)} does not exist`);
    const start = pixel.dataOffset + (n - 1) * size;
    if (start + size > bytes.length) throw new HttpError(404, `frame ${String(n)} is truncated in the file`);
    return bytes.subarray(start, start + size);
  });
}

export async function startDicomWebServer(opts: DicomWebServerOptions): Promise<RunningDicomWebServer> {
  const host = opts.host ?? '127.0.0.1';
  if (!LOOPBACK.test(host)) throw new Error(`The DICOMweb server binds loopback only, not ${host}`);
  if (!statSync(opts.dir).isDirectory()) throw new Error(`not a folder: ${opts.dir}`);
  let instances: Instance[] = [];
  const reindex = (): void => {
    instances = listFiles(opts.dir)
      .map(readInstance)
      .filter((i): i is Instance => i !== undefined)
      .sort(
        (a, b) =>
          a.studyUid.localeCompare(b.studyUid) ||
          (a.seriesNumber ?? 0) - (b.seriesNumber ?? 0) ||
          a.seriesUid.localeCompare(b.seriesUid) ||
          (a.instanceNumber ?? 0) - (b.instanceNumber ?? 0) ||
          a.sopUid.localeCompare(b.sopUid),
      );
  };
  reindex();

  const handle = (req: IncomingMessage, res: ServerResponse): void => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    if (url.pathname !== BASE && !url.pathname.startsWith(`${BASE}/`)) throw new HttpError(404, 'not found');
    if (req.method !== 'GET' && req.method !== 'HEAD')
      throw new HttpError(405, `method ${String(req.method)}`);
    const segments = url.pathname.slice(BASE.length).split('/').filter(Boolean).map(decodeURIComponent);
    const q = url.searchParams;
    const filter = (list: Instance[], param: string, get: (i: Instance) => string): Instance[] => {
      const v = q.get(param);
      return v === null ? list : list.filter((i) => get(i) === v);
    };
    const [s0, study, s2, series, s4, sop, s6, frames, ...rest] = segments;
    if (s0 !== 'studies' || rest.length > 0) throw new HttpError(404, 'not found');
    const inStudy = (): Instance[] => {
      const list = instances.filter((i) => i.studyUid === checkUid(study ?? '', 'study'));
      if (list.length === 0) throw new HttpError(404, `study ${String(study)} not found`);
      return list;
    };
    const inSeries = (): Instance[] => {
      const list = inStudy().filter((i) => i.seriesUid === checkUid(series ?? '', 'series'));
      if (list.length === 0) throw new HttpError(404, `series ${String(series)} not found`);
      return list;
    };
    const one = (): Instance => {
      const found = inSeries().find((i) => i.sopUid === checkUid(sop ?? '', 'instance'));
      if (found === undefined) throw new HttpError(404, `instance ${String(sop)} not found`);
      return found;
    };
    const wado = (list: readonly Instance[]): void => {
      const syntaxes = new Set(list.map((i) => i.transferSyntax));
      negotiate(req, 'application/dicom', syntaxes.size === 1 ? [...syntaxes][0] : undefined);
      const extra = syntaxes.size === 1 ? `; transfer-syntax=${String([...syntaxes][0])}` : '';
      sendMultipart(
        res,
        'application/dicom',
        list.map((i) => readFileSync(i.file)),
        extra,
      );
    };
    const dicomJson = (body: unknown): void => {
      sendJson(res, 200, body, 'application/dicom+json');
    };

    if (study === undefined) {
      let list = filter(instances, 'StudyInstanceUID', (i) => i.studyUid);
      list = filter(list, 'PatientID', (i) => i.patientId);
      const modality = q.get('ModalitiesInStudy');
      const studies = [...groupBy(list, (i) => i.studyUid).values()].filter(
        (g) => modality === null || g.some((i) => i.modality === modality),
      );
      dicomJson(studies.map(studyJson));
      return;
    }
    if (s2 === undefined) {
      wado(inStudy());
      return;
    }
    if (s2 !== 'series') throw new HttpError(404, 'not found');
    if (series === undefined) {
      let list = filter(inStudy(), 'SeriesInstanceUID', (i) => i.seriesUid);
      list = filter(list, 'Modality', (i) => i.modality);
      dicomJson([...groupBy(list, (i) => i.seriesUid).values()].map(seriesJson));
      return;
    }
    if (s4 === undefined) {
      wado(inSeries());
      return;
    }
    if (s4 !== 'instances') throw new HttpError(404, 'not found');
    if (sop === undefined) {
      dicomJson(filter(inSeries(), 'SOPInstanceUID', (i) => i.sopUid).map(instanceJson));
      return;
    }
    if (s6 === undefined) {
      wado([one()]);
      return;
    }
    if (s6 !== 'frames' || frames === undefined) throw new HttpError(404, 'not found');
    if (!/^[1-9]\d{0,5}(,[1-9]\d{0,5})*$/.test(frames)) throw new HttpError(400, `bad frame list: ${frames}`);
    const inst = one();
    negotiate(req, 'application/octet-stream');
    sendMultipart(res, 'application/octet-stream', frameBytes(inst, frames.split(',').map(Number)), '');
  };

  const server = createServer((req, res) => {
    try {
      handle(req, res);
    } catch (err) {
      const status = err instanceof HttpError ? err.status : 500;
      const message = err instanceof Error ? err.message : String(err);
      if (!res.headersSent) sendJson(res, status, { status, error: message });
      else res.destroy();
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 8082, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  const hostText = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return {
    url: `http://${hostText}:${String(address.port)}${BASE}`,
    size: () => instances.length,
    reindex,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.closeAllConnections();
        server.close((err) => {
          if (err) reject(err);
          else resolve();
        });
      }),
  };
}
