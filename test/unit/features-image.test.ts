import { describe, expect, it } from 'vitest';
import { checkAllowed } from '../../shared/features/allow-list.js';
import { decodeDicomImage } from '../../shared/features/dicom.js';
import { applyWindow, compileImageExtractor, resampleBilinear } from '../../shared/features/image.js';
import { parseContentType, parseMultipartRelated } from '../../shared/features/multipart.js';
import { ImageInputSchema } from '../../shared/inference/manifest.js';
import { TS, writeDicom } from '../fixtures/dicom.js';

const BASE = 'http://127.0.0.1:8082/dicomweb';

describe('allow-list (no SSRF)', () => {
  const cases: [string, string, string][] = [
    ['the base itself', BASE, 'ok'],
    ['a path under it', `${BASE}/studies/1.2/series/3.4/instances/5.6`, 'ok'],
    ['another port', 'http://127.0.0.1:8083/dicomweb/studies/1', 'url:not-allowed'],
    ['another host', 'http://169.254.169.254/dicomweb/studies/1', 'url:not-allowed'],
    ['https instead of http', 'https://127.0.0.1:8082/dicomweb/studies/1', 'url:not-allowed'],
    ['credentials in the URL', 'http://user:pw@127.0.0.1:8082/dicomweb/studies/1', 'url:credentials'],
    ['a file: URL', 'file:///etc/passwd', 'url:scheme'],
    ['dot-dot out of the base', `${BASE}/../admin`, 'url:not-allowed'],
    ['encoded dot-dot out of the base', `${BASE}/%2e%2e/admin`, 'url:not-allowed'],
    ['a sibling path sharing the prefix', 'http://127.0.0.1:8082/dicomweb-evil/studies', 'url:not-allowed'],
    ['not a URL', 'not a url', 'url:invalid'],
  ];
  it.each(cases)('%s', (_name, url, want) => {
    const out = checkAllowed(url, [BASE]);
    expect(out.ok ? 'ok' : out.reason).toBe(want);
  });
  it('refuses an allow-list entry that is not an http(s) base', () => {
    expect(() => checkAllowed(BASE, ['ftp://x/'])).toThrow(TypeError);
  });
});

describe('multipart/related', () => {
  const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
  it('reads the boundary (quoted or not) and the parts', () => {
    const { mediaType, params } = parseContentType(
      'Multipart/Related; type="application/dicom"; boundary="a b;c"',
    );
    expect(mediaType).toBe('multipart/related');
    expect(params.get('boundary')).toBe('a b;c');
    const body = enc(
      '--xyz\r\nContent-Type: application/dicom\r\n\r\nAB\r\n--xyz\r\n\r\nC--xyz\r\n--xyz--\r\n',
    );
    const parts = parseMultipartRelated(body, 'xyz');
    expect(parts?.map((p) => new TextDecoder().decode(p.body))).toEqual(['AB', 'C--xyz']);
    expect(parts?.[0]?.headers.get('content-type')).toBe('application/dicom');
  });
  it('refuses bodies that do not follow the boundary', () => {
    expect(parseMultipartRelated(enc('--xyz\r\n\r\nAB'), 'xyz')).toBeUndefined();
    expect(parseMultipartRelated(enc('no delimiter'), 'xyz')).toBeUndefined();
    expect(parseMultipartRelated(enc('--xyz\r\n\r\nA\r\n--xyz--'), '')).toBeUndefined();
  });
});

describe('DICOM decoding (table-driven)', () => {
  const opts = { modality: 'CT', maxPixels: 4096 * 4096 };
  const full = writeDicom();
  const cases: [string, Uint8Array, string][] = [
    ['explicit VR little endian', full, 'ok'],
    ['implicit VR little endian', writeDicom({ transferSyntax: TS.implicitLE }), 'ok'],
    ['8-bit', writeDicom({ bitsAllocated: 8, pixel: () => 5, rescaleIntercept: 0 }), 'ok'],
    ['JPEG baseline', writeDicom({ transferSyntax: TS.jpegBaseline }), 'transfer-syntax'],
    ['RLE', writeDicom({ transferSyntax: TS.rle }), 'transfer-syntax'],
    ['no pixel data', writeDicom({ omitPixelData: true }), 'pixel-data'],
    ['pixel data cut short', full.slice(0, full.length - 10), 'truncated'],
    ['cut inside the data set', full.slice(0, 300), 'truncated'],
    ['cut inside the file meta', full.slice(0, 140), 'truncated'],
    ['not DICOM at all', new Uint8Array(200), 'not-dicom'],
    ['MR', writeDicom({ modality: 'MR' }), 'modality'],
    ['RGB', writeDicom({ samplesPerPixel: 3 }), 'samples-per-pixel'],
    ['huge declared size', writeDicom({ declaredRows: 65535, declaredColumns: 65535 }), 'too-large'],
  ];
  it.each(cases)('%s → %s', (_name, bytes, want) => {
    const out = decodeDicomImage(bytes, opts);
    expect(out.ok ? 'ok' : out.problem).toBe(want);
  });
  it('applies rescale slope and intercept to stored values', () => {
    const out = decodeDicomImage(
      writeDicom({ rescaleSlope: 2, rescaleIntercept: -1000, pixel: () => 300 }),
      opts,
    );
    if (!out.ok) throw new Error(out.message);
    expect(out.image.hu[0]).toBe(-400);
  });
});

describe('window and resample', () => {
  it('the lung window maps −1350 … +150 HU onto 0 … 1 and clamps', () => {
    const out = applyWindow(
      new Float32Array([-2000, -1350, -600, 150, 3000]),
      { center: -600, width: 1500 },
      'unit',
    );
    expect([...out]).toEqual([0, 0, 0.5, 1, 1]);
    const raw = applyWindow(new Float32Array([-2000, 0]), { center: -600, width: 1500 }, 'none');
    expect([...raw]).toEqual([-1350, 0]);
  });
  it('bilinear 2×2 → 4×4 with pixel centres aligned', () => {
    const out = resampleBilinear(new Float32Array([0, 1, 2, 3]), 2, 2, 4, 4);
    expect([...out.subarray(0, 4)]).toEqual([0, 0.25, 0.75, 1]);
    expect([...out.subarray(12, 16)]).toEqual([2, 2.25, 2.75, 3]);
  });
});

describe('image extractor with an injected fetch', () => {
  const input = ImageInputSchema.parse({
    kind: 'image',
    tensor: 'x',
    modality: 'CT',
    size: [8, 8],
    window: { center: -600, width: 1500 },
  });
  const study = (extra: Record<string, unknown> = {}) =>
    ({
      resourceType: 'ImagingStudy',
      id: 's',
      status: 'available',
      subject: { reference: 'Patient/p' },
      identifier: [{ system: 'urn:dicom:uid', value: 'urn:oid:1.2.3' }],
      contained: [
        {
          resourceType: 'Endpoint',
          id: 'e',
          status: 'active',
          address: BASE,
          connectionType: { code: 'dicom-wado-rs' },
          payloadType: [],
        },
      ],
      endpoint: [{ reference: '#e' }],
      series: [
        {
          uid: '1.2.3.4',
          modality: { code: 'CT' },
          instance: [{ uid: '1.2.3.4.5', sopClass: { code: 'x' } }],
        },
      ],
      ...extra,
    }) as never;
  const asOf = new Date('2024-01-01T00:00:00Z');

  it('sends the WADO-RS Accept header to the instance URL and reads a bare application/dicom answer', async () => {
    const seen: { url: string; accept: string }[] = [];
    const fetchFake = (url: string, init: RequestInit): Promise<Response> => {
      seen.push({ url, accept: String((init.headers as Record<string, string>).accept) });
      return Promise.resolve(
        new Response(writeDicom({ rows: 8, columns: 8, pixel: () => 424 }), {
          headers: { 'content-type': 'application/dicom' },
        }),
      );
    };
    const result = await compileImageExtractor(input, { fetch: fetchFake, allowList: [BASE] }).extract(
      study(),
      asOf,
    );
    expect(seen).toEqual([
      {
        url: `${BASE}/studies/1.2.3/series/1.2.3.4/instances/1.2.3.4.5`,
        accept: 'multipart/related; type="application/dicom"; transfer-syntax=*',
      },
    ]);
    if (result.status !== 'ok') throw new Error(result.message);
    expect(result.row.values[0]).toBeCloseTo(0.5, 6); // 424 − 1024 = −600 HU, the centre
  });

  const refusals: [string, Record<string, unknown>, string][] = [
    [
      'a study with only an X-ray series',
      { series: [{ uid: '1.2', modality: { code: 'DX' }, instance: [{ uid: '1.3' }] }] },
      'modality:none',
    ],
    ['no Study Instance UID', { identifier: [] }, 'study:uid-missing'],
    [
      'a UID that would inject a path',
      { series: [{ uid: '1.2/../../x', modality: { code: 'CT' }, instance: [{ uid: '1.3' }] }] },
      'uid:invalid',
    ],
    ['no endpoint', { endpoint: [] }, 'endpoint:none'],
    [
      'an endpoint that is not WADO-RS',
      {
        contained: [
          {
            resourceType: 'Endpoint',
            id: 'e',
            status: 'active',
            address: BASE,
            connectionType: { code: 'dicom-qido-rs' },
          },
        ],
      },
      'endpoint:not-wado-rs',
    ],
    ['a study started after asOf', { started: '2030-01-01' }, 'effective:future'],
    ['an entered-in-error study', { status: 'entered-in-error' }, 'status:entered-in-error'],
    ['not an ImagingStudy', { resourceType: 'Media' }, 'resource:not-imaging-study'],
  ];
  it.each(refusals)('%s → insufficient-data, no fetch', async (_name, extra, reason) => {
    let calls = 0;
    const fetchFake = (): Promise<Response> => {
      calls++;
      return Promise.resolve(new Response(''));
    };
    const result = await compileImageExtractor(input, { fetch: fetchFake, allowList: [BASE] }).extract(
      study(extra),
      asOf,
    );
    expect(result).toMatchObject({ status: 'insufficient-data', reason });
    expect(calls).toBe(0);
  });

  it('a 503 is a retryable failure; a thrown fetch is a network failure', async () => {
    const unavailable = (): Promise<Response> => Promise.resolve(new Response('busy', { status: 503 }));
    expect(
      await compileImageExtractor(input, { fetch: unavailable, allowList: [BASE] }).extract(study(), asOf),
    ).toMatchObject({ status: 'failed', reason: 'fetch:http-503', retryable: true });
    const broken = (): Promise<Response> => Promise.reject(new Error('ECONNRESET'));
    expect(
      await compileImageExtractor(input, { fetch: broken, allowList: [BASE] }).extract(study(), asOf),
    ).toMatchObject({ status: 'failed', reason: 'fetch:network', retryable: true });
  });
});
