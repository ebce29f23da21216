import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ImagingStudy } from '@medplum/fhirtypes';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compileImageExtractor, type ImageExtractResult } from '../../shared/features/image.js';
import { parseContentType, parseMultipartRelated } from '../../shared/features/multipart.js';
import { ImageInputSchema } from '../../shared/inference/manifest.js';
import { startDicomWebServer, type RunningDicomWebServer } from '../../local/dicomweb/server.js';
import { TS, writeDicom, writeDicomFiles, type DicomSpec } from '../fixtures/dicom.js';

const STUDY = '1.2.826.0.1.3680043.10.9';
const uids = (n: number): { studyUid: string; seriesUid: string; sopUid: string } => ({
  studyUid: `${STUDY}.${String(n)}`,
  seriesUid: `${STUDY}.${String(n)}.1`,
  sopUid: `${STUDY}.${String(n)}.1.1`,
});

/** HU of the test ramp at column `c` of `n`: −1024 … +476, left to right. */
const rampHu = (c: number, n = 64): number => -1024 + Math.round((1500 * c) / (n - 1));
/** Stored value = HU + 1024 (Rescale Intercept −1024). */
const ramp = (_r: number, c: number): number => rampHu(c) + 1024;
/** The lung window (centre −600, width 1500) in [0, 1]. */
const lung = (hu: number): number => Math.min(1, Math.max(0, (hu + 1350) / 1500));

const FILES: Record<string, DicomSpec> = {
  ok: { ...uids(1), pixel: ramp },
  implicit: { ...uids(2), pixel: ramp, transferSyntax: TS.implicitLE },
  jpeg: { ...uids(3), transferSyntax: TS.jpegBaseline },
  j2k: { ...uids(4), transferSyntax: TS.jpeg2000 },
  rle: { ...uids(5), transferSyntax: TS.rle },
  nopixels: { ...uids(6), omitPixelData: true },
  mr: { ...uids(7), modality: 'MR' },
  huge: { ...uids(8), declaredRows: 8192, declaredColumns: 8192, rows: 64, columns: 64 },
  big128: {
    ...uids(9),
    rows: 128,
    columns: 128,
    pixel: (_r, c) => rampHu(c, 128) + 1024,
  },
  signed: { ...uids(10), pixelRepresentation: 1, rescaleIntercept: 0, pixel: () => -600 & 0xffff },
  multiframe: { ...uids(11), numberOfFrames: 3, rows: 4, columns: 4, pixel: () => 100 },
};

let dir: string;
let server: RunningDicomWebServer;
let truncatedServer: Server;
let truncatedUrl: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'dicomweb-'));
  writeDicomFiles(dir, FILES);
  // A truncated file is still served whole by a server that lies: built by hand below.
  server = await startDicomWebServer({ dir, port: 0 });
  // A second "server" on the allow-list that sends a truncated instance, a redirect off the
  // list, or a body longer than its Content-Length promises.
  const full = writeDicom({ ...uids(1), pixel: ramp });
  truncatedServer = createServer((req, res) => {
    if (req.url?.includes('/redirect/')) {
      res.writeHead(302, { location: 'http://169.254.169.254/latest/meta-data/' });
      res.end();
      return;
    }
    if (req.url?.includes('/redirect-ok/')) {
      res.writeHead(302, { location: `${server.url}${req.url.replace(/^.*\/redirect-ok/, '')}` });
      res.end();
      return;
    }
    if (req.url?.includes('/chunked/')) {
      res.writeHead(200, { 'content-type': 'application/dicom' });
      for (let i = 0; i < 64; i++) res.write(new Uint8Array(64 * 1024));
      res.end();
      return;
    }
    const cut = full.subarray(0, full.length - 500);
    res.writeHead(200, { 'content-type': 'application/dicom', 'content-length': cut.length });
    res.end(cut);
  });
  await new Promise<void>((resolve) => truncatedServer.listen(0, '127.0.0.1', resolve));
  truncatedUrl = `http://127.0.0.1:${String((truncatedServer.address() as AddressInfo).port)}/wado`;
});

afterAll(async () => {
  await server.close();
  await new Promise<void>((resolve) => {
    truncatedServer.close(() => {
      resolve();
    });
  });
  rmSync(dir, { recursive: true, force: true });
});

const input = ImageInputSchema.parse({
  kind: 'image',
  tensor: 'image',
  modality: 'CT',
  size: [64, 64],
  window: { center: -600, width: 1500 },
  normalisation: 'unit',
  maxPixels: 512 * 512,
});

function study(n: number, address: string, extra: Partial<ImagingStudy> = {}): ImagingStudy {
  const u = uids(n);
  return {
    resourceType: 'ImagingStudy',
    id: `is${String(n)}`,
    meta: { versionId: '2' },
    status: 'available',
    subject: { reference: 'Patient/p1' },
    started: '2024-05-01T09:00:00Z',
    identifier: [{ system: 'urn:dicom:uid', value: `urn:oid:${u.studyUid}` }],
    contained: [
      {
        resourceType: 'Endpoint',
        id: 'wado',
        status: 'active',
        connectionType: {
          system: 'http://terminology.hl7.org/CodeSystem/endpoint-connection-type',
          code: 'dicom-wado-rs',
        },
        payloadType: [{ text: 'DICOM' }],
        address,
      },
    ],
    endpoint: [{ reference: '#wado' }],
    modality: [{ system: 'http://dicom.nema.org/resources/ontology/DCM', code: 'CT' }],
    series: [
      {
        uid: u.seriesUid,
        number: 1,
        modality: { system: 'http://dicom.nema.org/resources/ontology/DCM', code: 'CT' },
        instance: [
          {
            uid: u.sopUid,
            number: 1,
            sopClass: { system: 'urn:ietf:rfc:3986', code: 'urn:oid:1.2.840.10008.5.1.4.1.1.2' },
          },
        ],
      },
    ],
    ...extra,
  };
}

const AS_OF = new Date('2024-06-01T00:00:00Z');

describe('DICOMweb server: QIDO-RS', () => {
  it('lists studies as application/dicom+json, filtered by StudyInstanceUID', async () => {
    const all = await fetch(`${server.url}/studies`);
    expect(all.headers.get('content-type')).toBe('application/dicom+json');
    expect(((await all.json()) as unknown[]).length).toBe(Object.keys(FILES).length);
    const one = (await (
      await fetch(`${server.url}/studies?StudyInstanceUID=${uids(1).studyUid}`)
    ).json()) as Record<string, { Value?: unknown[] }>[];
    expect(one).toHaveLength(1);
    expect(one[0]?.['0020000D']?.Value).toEqual([uids(1).studyUid]);
    expect(one[0]?.['00080061']?.Value).toEqual(['CT']);
    expect(one[0]?.['00201208']?.Value).toEqual([1]);
  });

  it('lists series and instances of a study', async () => {
    const u = uids(9);
    const series = (await (await fetch(`${server.url}/studies/${u.studyUid}/series`)).json()) as Record<
      string,
      { Value?: unknown[] }
    >[];
    expect(series.map((s) => s['0020000E']?.Value?.[0])).toEqual([u.seriesUid]);
    const instances = (await (
      await fetch(`${server.url}/studies/${u.studyUid}/series/${u.seriesUid}/instances`)
    ).json()) as Record<string, { Value?: unknown[] }>[];
    expect(instances[0]?.['00080018']?.Value).toEqual([u.sopUid]);
    expect(instances[0]?.['00280010']?.Value).toEqual([128]);
  });

  it('answers 404 and 400 with a JSON body', async () => {
    const missing = await fetch(`${server.url}/studies/1.2.3.4/series`);
    expect(missing.status).toBe(404);
    const body = (await missing.json()) as { status: number; error: string };
    expect(body.status).toBe(404);
    expect(body.error).toContain('1.2.3.4');
    const bad = await fetch(`${server.url}/studies/1.2.x/series`);
    expect(bad.status).toBe(400);
    expect(await bad.json()).toMatchObject({ status: 400 });
    expect((await fetch(`${server.url}/nothing`)).status).toBe(404);
    expect((await fetch(`${server.url}/studies`, { method: 'POST' })).status).toBe(405);
  });
});

describe('DICOMweb server: WADO-RS', () => {
  it('returns an instance as multipart/related with a correct boundary', async () => {
    const u = uids(1);
    const res = await fetch(
      `${server.url}/studies/${u.studyUid}/series/${u.seriesUid}/instances/${u.sopUid}`,
      {
        headers: { accept: 'multipart/related; type="application/dicom"' },
      },
    );
    expect(res.status).toBe(200);
    const { mediaType, params } = parseContentType(res.headers.get('content-type') ?? '');
    expect(mediaType).toBe('multipart/related');
    expect(params.get('type')).toBe('application/dicom');
    const parts = parseMultipartRelated(
      new Uint8Array(await res.arrayBuffer()),
      params.get('boundary') ?? '',
    );
    expect(parts).toHaveLength(1);
    const part = parts?.[0];
    expect(part?.headers.get('content-type')).toBe(`application/dicom; transfer-syntax=${TS.explicitLE}`);
    expect([...(part?.body ?? new Uint8Array())]).toEqual([...writeDicom(FILES.ok)]);
  });

  it('returns a whole study and a series as one part per instance', async () => {
    const u = uids(2);
    for (const path of [`/studies/${u.studyUid}`, `/studies/${u.studyUid}/series/${u.seriesUid}`]) {
      const res = await fetch(server.url + path);
      const { params } = parseContentType(res.headers.get('content-type') ?? '');
      const parts = parseMultipartRelated(
        new Uint8Array(await res.arrayBuffer()),
        params.get('boundary') ?? '',
      );
      expect(parts?.length).toBe(1);
      expect(String.fromCharCode(...(parts?.[0]?.body.subarray(128, 132) ?? []))).toBe('DICM');
    }
  });

  it('returns frames as application/octet-stream parts', async () => {
    const u = uids(11);
    const res = await fetch(
      `${server.url}/studies/${u.studyUid}/series/${u.seriesUid}/instances/${u.sopUid}/frames/1,3`,
    );
    expect(res.status).toBe(200);
    const { params } = parseContentType(res.headers.get('content-type') ?? '');
    expect(params.get('type')).toBe('application/octet-stream');
    const parts =
      parseMultipartRelated(new Uint8Array(await res.arrayBuffer()), params.get('boundary') ?? '') ?? [];
    expect(parts.map((p) => p.body.length)).toEqual([32, 32]);
    const view = (b: Uint8Array): number => new DataView(b.buffer, b.byteOffset).getUint16(0, true);
    expect(parts.map((p) => view(p.body))).toEqual([100, 102]); // the writer adds the frame index
    expect(
      (
        await fetch(
          `${server.url}/studies/${u.studyUid}/series/${u.seriesUid}/instances/${u.sopUid}/frames/4`,
        )
      ).status,
    ).toBe(404);
    expect(
      (
        await fetch(
          `${server.url}/studies/${u.studyUid}/series/${u.seriesUid}/instances/${u.sopUid}/frames/0`,
        )
      ).status,
    ).toBe(400);
  });

  it('refuses an Accept it cannot satisfy with 406 (no transcoding)', async () => {
    const u = uids(3);
    const url = `${server.url}/studies/${u.studyUid}/series/${u.seriesUid}/instances/${u.sopUid}`;
    const res = await fetch(url, {
      headers: { accept: `multipart/related; type="application/dicom"; transfer-syntax=${TS.explicitLE}` },
    });
    expect(res.status).toBe(406);
    expect((await fetch(url, { headers: { accept: 'application/json' } })).status).toBe(406);
  });

  it('binds loopback only', async () => {
    await expect(startDicomWebServer({ dir, port: 0, host: '0.0.0.0' })).rejects.toThrow(/loopback/);
  });
});

describe('image extractor over the real DICOMweb server', () => {
  const extractor = () => compileImageExtractor(input, { fetch, allowList: [server.url, truncatedUrl] });
  const reason = (r: ImageExtractResult): string => (r.status === 'ok' ? 'ok' : r.reason);

  it('fetches, decodes, windows: the HU ramp becomes 0 … 1 across columns', async () => {
    const result = await extractor().extract(study(1, server.url), AS_OF);
    if (result.status !== 'ok') throw new Error(`${result.status}: ${result.message}`);
    const { row } = result;
    expect(row.shape).toEqual([1, 64, 64]);
    expect(row.values.length).toBe(64 * 64);
    expect(row.values[0]).toBeCloseTo(326 / 1500, 5); // −1024 HU
    expect(row.values[32]).toBeCloseTo(lung(rampHu(32)), 5);
    expect(row.values[63]).toBe(1); // +476 HU clamps at the window's top (+150)
    expect(row.values[64 * 10 + 32]).toBeCloseTo(lung(rampHu(32)), 5);
    expect(row.inputs).toEqual(['ImagingStudy/is1/_history/2']);
    expect(row.effective).toBe('2024-05-01T09:00:00Z');
    expect(result.source).toBe(
      `${server.url}/studies/${uids(1).studyUid}/series/${uids(1).seriesUid}/instances/${uids(1).sopUid}`,
    );
  });

  it('implicit VR little endian decodes the same', async () => {
    const a = await extractor().extract(study(1, server.url), AS_OF);
    const b = await extractor().extract(study(2, server.url), AS_OF);
    if (a.status !== 'ok' || b.status !== 'ok') throw new Error('expected ok');
    expect([...b.row.values]).toEqual([...a.row.values]);
  });

  it('resamples 128×128 to 64×64 bilinearly (the ramp stays a ramp)', async () => {
    const result = await extractor().extract(study(9, server.url), AS_OF);
    if (result.status !== 'ok') throw new Error(result.message);
    // Output column x samples source column 2x + 0.5: between two ramp steps.
    expect(result.row.values[10]).toBeCloseTo(lung((rampHu(20, 128) + rampHu(21, 128)) / 2), 5);
  });

  it('signed pixels (pixel representation 1) are read as negative HU', async () => {
    const result = await extractor().extract(study(10, server.url), AS_OF);
    if (result.status !== 'ok') throw new Error(result.message);
    expect(result.row.values[0]).toBeCloseTo(750 / 1500, 5); // −600 HU, the window's centre
  });

  const cases: [string, number, string, RegExp][] = [
    [
      'JPEG baseline',
      3,
      'transfer-syntax:unsupported',
      /unsupported transfer syntax 1\.2\.840\.10008\.1\.2\.4\.50/,
    ],
    [
      'JPEG 2000',
      4,
      'transfer-syntax:unsupported',
      /unsupported transfer syntax 1\.2\.840\.10008\.1\.2\.4\.90/,
    ],
    ['RLE', 5, 'transfer-syntax:unsupported', /unsupported transfer syntax 1\.2\.840\.10008\.1\.2\.5 /],
    ['no pixel data', 6, 'dicom:pixel-data', /no pixel data/],
    ['an MR instance in a CT series', 7, 'dicom:modality', /modality MR/],
    ['huge declared dimensions', 8, 'dicom:too-large', /8192×8192/],
  ];
  it.each(cases)('%s → insufficient-data with a clear message', async (_name, n, why, message) => {
    const result = await extractor().extract(study(n, server.url), AS_OF);
    expect(result.status).toBe('insufficient-data');
    expect(reason(result)).toBe(why);
    if (result.status === 'insufficient-data') {
      expect(result.message).toMatch(message);
      expect(result.missing).toEqual(['image']);
    }
  });

  it('a truncated instance → dicom:truncated', async () => {
    const result = await extractor().extract(study(1, truncatedUrl), AS_OF);
    expect(result).toMatchObject({ status: 'insufficient-data', reason: 'dicom:truncated' });
  });

  it('a body past maxBytes is abandoned while streaming', async () => {
    const small = compileImageExtractor(input, { fetch, allowList: [truncatedUrl], maxBytes: 1024 * 1024 });
    const result = await small.extract(study(1, `${truncatedUrl}/chunked`), AS_OF);
    expect(result).toMatchObject({ status: 'insufficient-data', reason: 'dicom:too-large' });
  });

  it('a Content-Length past maxBytes is refused before reading', async () => {
    const small = compileImageExtractor(input, { fetch, allowList: [server.url], maxBytes: 1000 });
    const result = await small.extract(study(1, server.url), AS_OF);
    expect(result).toMatchObject({ status: 'insufficient-data', reason: 'dicom:too-large' });
    if (result.status === 'insufficient-data') expect(result.message).toMatch(/exceeds the limit of 1000/);
  });

  it('an instance the server does not have → instance:not-found', async () => {
    const s = study(1, server.url);
    const result = await extractor().extract(
      {
        ...s,
        series: [
          {
            ...(s.series?.[0] as NonNullable<ImagingStudy['series']>[number]),
            instance: [{ uid: '1.2.3.4', sopClass: { code: 'x' } }],
          },
        ],
      },
      AS_OF,
    );
    expect(result).toMatchObject({ status: 'insufficient-data', reason: 'instance:not-found' });
  });

  it('SSRF: a redirect off the allow-list is refused; one onto it is followed', async () => {
    const off = await extractor().extract(study(1, `${truncatedUrl}/redirect`), AS_OF);
    expect(off).toMatchObject({ status: 'failed', reason: 'endpoint:not-allowed', retryable: false });
    if (off.status === 'failed') expect(off.message).toMatch(/redirect target refused/);
    const on = await extractor().extract(study(1, `${truncatedUrl}/redirect-ok`), AS_OF);
    expect(on.status).toBe('ok');
  });

  it('SSRF: another port on the same host is not on the list', async () => {
    const other = compileImageExtractor(input, { fetch, allowList: [server.url] });
    const result = await other.extract(study(1, truncatedUrl), AS_OF);
    expect(result).toMatchObject({ status: 'failed', reason: 'endpoint:not-allowed' });
  });

  it('a server that is down → failed, retryable', async () => {
    const down = 'http://127.0.0.1:9/dicomweb';
    const ext = compileImageExtractor(input, { fetch, allowList: [down], timeoutMs: 2000 });
    const result = await ext.extract(study(1, down), AS_OF);
    expect(result).toMatchObject({ status: 'failed', retryable: true });
  });
});
