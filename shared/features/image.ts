/**
 * The image feature extractor (CNN): an ImagingStudy → one DICOM instance fetched over
 * DICOMweb WADO-RS → Hounsfield units → window → bilinear resample → `Float32Array [1, H, W]`.
 *
 * - The series: the first (by `number`) whose modality is the model's (and whose bodySite,
 *   when both say one, is the model's), with instances; the instance: the middle one by
 *   `number` (the centre of the scanned range).
 * - The endpoint: the series' `endpoint`, else the study's; a contained `#id`, an Endpoint the
 *   caller passes, or `resolveEndpoint`. Its `address` is the WADO-RS base URL.
 * - `GET {address}/studies/{study}/series/{series}/instances/{sop}` with
 *   `Accept: multipart/related; type="application/dicom"`; a bare `application/dicom` answer is
 *   accepted too. UIDs must be DICOM UIDs (digits and dots), so nothing can be injected into
 *   the path.
 * - SSRF: the URL, and each redirect target (redirects are followed by hand, at most
 *   `maxRedirects`), must be on the allow-list; other schemes and credentials are refused.
 * - Memory: Content-Length above `maxBytes` is refused before reading; the body is streamed
 *   and abandoned as soon as it passes `maxBytes`; Rows × Columns is checked against
 *   `maxPixels` before any pixel buffer is made.
 *
 * Outcomes: `ok`; `insufficient-data` when the study or the DICOM cannot give this model an
 * image (wrong modality, no instance, unsupported transfer syntax, truncated, no pixel data,
 * too large, 404), with a `reason` and a human `message`; `failed` when the fetch itself failed
 * (refused by the allow-list, network, timeout, 5xx: `retryable` says whether to try again).
 * Nothing throws out of `extract`.
 */
import type { Endpoint, ImagingStudy, ImagingStudySeries, Reference } from '@medplum/fhirtypes';
import type { ImageInput } from '../inference/manifest.js';
import type { FeatureRow, SkippedInput } from '../types.js';
import { compileAllowList, type AllowList } from './allow-list.js';
import type { DecodedImage } from './dicom.js';
import { parseFhirDateTime } from './fhir-time.js';
import { applyWindow, resampleBilinear } from './image-pixels.js';

export { applyWindow, resampleBilinear } from './image-pixels.js';
import {
  dicomBytes,
  discard,
  failed,
  fetchChecked,
  insufficient,
  Problem,
  readCapped,
  redact,
  type DicomHttp,
} from './image-http.js';

export type FetchLike = (url: string, init: RequestInit) => Promise<Response>;

export interface ImageExtractorOptions {
  /** The fetch to use (injected: `globalThis.fetch` in production, anything in tests). */
  readonly fetch: FetchLike;
  /** DICOMweb base URLs that may be fetched from, e.g. `http://127.0.0.1:8082/dicomweb`. */
  readonly allowList: AllowList;
  /** Largest response body read, in bytes (default: `maxPixels` × 2 bytes + 4 MiB of header). */
  readonly maxBytes?: number;
  /** Per request (default 30 000 ms). */
  readonly timeoutMs?: number;
  /** Redirects followed, each checked against the allow-list (default 3). */
  readonly maxRedirects?: number;
  /** Resolves an `Endpoint/<id>` (or absolute) reference the study does not contain. */
  readonly resolveEndpoint?: (reference: string) => Promise<Endpoint | undefined>;
}

export interface ImageExtractContext {
  /** Endpoints the caller already read (matched by `Endpoint/<id>`). */
  readonly endpoints?: readonly Endpoint[];
  readonly signal?: AbortSignal;
}

export type ImageExtractResult =
  | {
      readonly status: 'ok';
      readonly row: FeatureRow;
      readonly skipped: readonly SkippedInput[];
      /** The WADO-RS URL the instance came from. */
      readonly source: string;
    }
  | {
      readonly status: 'insufficient-data';
      readonly missing: readonly string[];
      readonly skipped: readonly SkippedInput[];
      /** A short machine reason: `transfer-syntax:unsupported`, `modality:none`, `dicom:truncated`, … */
      readonly reason: string;
      /** What a person reads: `unsupported transfer syntax 1.2.840.10008.1.2.4.50 (JPEG Baseline)`. */
      readonly message: string;
    }
  | {
      readonly status: 'failed';
      readonly reason: string;
      readonly message: string;
      /** Network errors, timeouts, 429 and 5xx: worth another try later. */
      readonly retryable: boolean;
      readonly skipped: readonly SkippedInput[];
    };

export interface ImageExtractor {
  /** The model's modality (`CT`). */
  readonly modality: string;
  readonly shape: readonly [1, number, number];
  extract(study: ImagingStudy, asOf: Date, context?: ImageExtractContext): Promise<ImageExtractResult>;
}

const DICOM_UID_SYSTEM = 'urn:dicom:uid';
const UID = /^[0-9]+(?:\.[0-9]+)*$/;
const HEADER_ALLOWANCE = 4 * 1024 * 1024;
const WADO_RS = 'dicom-wado-rs';

function numberOf(x: { number?: unknown }, fallback: number): number {
  return typeof x.number === 'number' && Number.isFinite(x.number) ? x.number : fallback;
}

function studyUid(study: ImagingStudy): string | undefined {
  const ids: unknown = study.identifier;
  if (!Array.isArray(ids)) return undefined;
  for (const id of ids as { system?: unknown; value?: unknown }[]) {
    if (id.system === DICOM_UID_SYSTEM && typeof id.value === 'string') {
      const uid = id.value.replace(/^urn:oid:/, '');
      if (UID.test(uid) && uid.length <= 64) return uid;
    }
  }
  return undefined;
}

function studyReference(study: ImagingStudy): string {
  const id = typeof study.id === 'string' && study.id !== '' ? study.id : undefined;
  if (id === undefined) return 'ImagingStudy';
  const v = study.meta?.versionId;
  return typeof v === 'string' && v !== '' ? `ImagingStudy/${id}/_history/${v}` : `ImagingStudy/${id}`;
}

/** Compiles an image input. Throws a TypeError for an allow-list entry that is not an http(s) base URL. */
export function compileImageExtractor(input: ImageInput, options: ImageExtractorOptions): ImageExtractor {
  const allowed = compileAllowList(options.allowList);
  const maxBytes = options.maxBytes ?? input.maxPixels * 2 + HEADER_ALLOWANCE;
  const timeoutMs = options.timeoutMs ?? 30_000;
  const http: DicomHttp = { allowed, fetch: options.fetch, maxRedirects: options.maxRedirects ?? 3 };
  const [height, width] = input.size;
  const tensorName = input.tensor;

  const bodySiteMatches = (series: ImagingStudySeries): boolean => {
    if (input.bodySite === undefined || series.bodySite === undefined) return true;
    const site = series.bodySite as { system?: unknown; code?: unknown };
    return site.system === input.bodySite.system && site.code === input.bodySite.code;
  };

  function pickSeries(study: ImagingStudy): ImagingStudySeries {
    const all: unknown = study.series;
    const list = Array.isArray(all) ? (all as ImagingStudySeries[]) : [];
    const ofModality = list.filter(
      (s) => (s as { modality?: { code?: unknown } }).modality?.code === input.modality,
    );
    if (ofModality.length === 0) {
      const seen = [
        ...new Set(list.map((s) => String((s as { modality?: { code?: unknown } }).modality?.code))),
      ];
      throw insufficient(
        'modality:none',
        `no ${input.modality} series in the study${seen.length ? ` (has ${seen.join(', ')})` : ''}`,
      );
    }
    const usable = ofModality
      .filter(bodySiteMatches)
      .filter((s) => Array.isArray(s.instance) && s.instance.length > 0)
      .map((s, i) => ({ s, n: numberOf(s, i) }))
      .sort((a, b) => a.n - b.n);
    const chosen = usable[0];
    if (chosen === undefined) {
      throw insufficient(
        'instance:none',
        `no ${input.modality} series with instances (and the model's body site)`,
      );
    }
    return chosen.s;
  }

  async function resolveEndpoint(
    study: ImagingStudy,
    series: ImagingStudySeries,
    context: ImageExtractContext | undefined,
  ): Promise<string> {
    const refs: unknown[] = [
      ...(Array.isArray(series.endpoint) ? series.endpoint : []),
      ...(Array.isArray(study.endpoint) ? study.endpoint : []),
    ];
    const ref = (refs[0] as Reference | undefined)?.reference;
    if (typeof ref !== 'string' || ref === '')
      throw insufficient('endpoint:none', 'the study names no endpoint');
    let endpoint: Endpoint | undefined;
    if (ref.startsWith('#')) {
      const contained: unknown = study.contained;
      endpoint = (
        Array.isArray(contained) ? (contained as { resourceType?: unknown; id?: unknown }[]) : []
      ).find((r) => r.resourceType === 'Endpoint' && r.id === ref.slice(1)) as Endpoint | undefined;
    } else {
      endpoint = context?.endpoints?.find(
        (e) => ref === `Endpoint/${String(e.id)}` || ref.endsWith(`/Endpoint/${String(e.id)}`),
      );
      if (endpoint === undefined && options.resolveEndpoint) {
        try {
          endpoint = await options.resolveEndpoint(ref);
        } catch (err) {
          throw failed('endpoint:unresolved', `endpoint ${ref} could not be read: ${String(err)}`, true);
        }
      }
    }
    if (endpoint === undefined)
      throw insufficient('endpoint:unresolved', `endpoint ${ref} could not be resolved`);
    const typeCode: unknown = (endpoint.connectionType as { code?: unknown } | undefined)?.code;
    if (typeCode !== undefined && typeCode !== WADO_RS) {
      throw insufficient(
        'endpoint:not-wado-rs',
        `endpoint ${ref} is ${JSON.stringify(typeCode)}, not ${WADO_RS}`,
      );
    }
    const endpointStatus: unknown = endpoint.status;
    if (endpointStatus !== undefined && endpointStatus !== 'active') {
      throw insufficient('endpoint:inactive', `endpoint ${ref} is ${JSON.stringify(endpointStatus)}`);
    }
    if (typeof endpoint.address !== 'string' || endpoint.address === '') {
      throw insufficient('endpoint:no-address', `endpoint ${ref} has no address`);
    }
    return endpoint.address.replace(/\/+$/, '');
  }

  function toRow(image: DecodedImage, reference: string, effective: string | undefined): FeatureRow {
    const resampled = resampleBilinear(image.hu, image.rows, image.columns, height, width);
    const values = applyWindow(resampled, input.window, input.normalisation);
    return {
      values,
      shape: [1, height, width],
      inputs: reference === 'ImagingStudy' ? [] : [reference],
      effective,
      provenance: [
        { feature: tensorName, imputed: false, inputs: reference === 'ImagingStudy' ? [] : [reference] },
      ],
    };
  }

  async function run(
    study: ImagingStudy,
    asOf: Date,
    context: ImageExtractContext | undefined,
  ): Promise<ImageExtractResult> {
    const resource: unknown = study;
    const type: unknown = (resource as { resourceType?: unknown } | null)?.resourceType;
    if (resource === null || typeof resource !== 'object' || type !== 'ImagingStudy') {
      throw insufficient('resource:not-imaging-study', 'the focus is not an ImagingStudy');
    }
    const status: unknown = study.status;
    if (status === 'cancelled' || status === 'entered-in-error') {
      throw insufficient(`status:${status}`, `the study is ${status}`);
    }
    const started = study.started === undefined ? undefined : parseFhirDateTime(study.started);
    if (study.started !== undefined && started === undefined)
      throw insufficient('effective:invalid', 'started is not a dateTime');
    if (started !== undefined && started.ms > asOf.getTime())
      throw insufficient('effective:future', 'the study starts after asOf');
    const uid = studyUid(study);
    if (uid === undefined)
      throw insufficient('study:uid-missing', 'the study has no DICOM Study Instance UID identifier');
    const series = pickSeries(study);
    const seriesUid = typeof series.uid === 'string' ? series.uid : '';
    const instances = (series.instance ?? [])
      .map((inst, i) => ({ inst, n: numberOf(inst, i) }))
      .sort((a, b) => a.n - b.n);
    const instance = instances[Math.floor((instances.length - 1) / 2)]?.inst;
    const sop = typeof instance?.uid === 'string' ? instance.uid : '';
    if (!UID.test(seriesUid) || !UID.test(sop) || seriesUid.length > 64 || sop.length > 64) {
      throw insufficient('uid:invalid', 'series or instance UID is not a DICOM UID');
    }
    const base = await resolveEndpoint(study, series, context);
    const url = `${base}/studies/${uid}/series/${seriesUid}/instances/${sop}`;
    const timeout = AbortSignal.timeout(timeoutMs);
    const signal = context?.signal ? AbortSignal.any([timeout, context.signal]) : timeout;
    const response = await fetchChecked(http, url, signal);
    if (response.status !== 200) {
      await discard(response);
      const s = response.status;
      if (s === 404 || s === 410)
        throw insufficient('instance:not-found', `instance not found (${String(s)}) at ${redact(url)}`);
      throw failed(
        `fetch:http-${String(s)}`,
        `DICOMweb answered ${String(s)} for ${redact(url)}`,
        s === 429 || s >= 500,
      );
    }
    let body: Uint8Array;
    try {
      body = await readCapped(response, maxBytes);
    } catch (err) {
      if (err instanceof Problem) throw err;
      throw failed(
        signal.aborted ? 'fetch:timeout' : 'fetch:network',
        `reading ${redact(url)} failed: ${String(err)}`,
        true,
      );
    }
    // dicom.ts and dicom-parser load with the first image decoded, not at the function's init.
    const { decodeDicomImage } = await import('./dicom.js');
    const decoded = decodeDicomImage(dicomBytes(response, body), {
      modality: input.modality,
      maxPixels: input.maxPixels,
    });
    if (!decoded.ok) {
      const reason =
        decoded.problem === 'transfer-syntax' ? 'transfer-syntax:unsupported' : `dicom:${decoded.problem}`;
      throw insufficient(reason, decoded.message);
    }
    const effective = started?.text;
    return {
      status: 'ok',
      row: toRow(decoded.image, studyReference(study), effective),
      skipped: [],
      source: url,
    };
  }

  return {
    modality: input.modality,
    shape: [1, height, width],
    async extract(study, asOf, context) {
      try {
        return await run(study, asOf, context);
      } catch (err) {
        let reference = 'ImagingStudy';
        try {
          reference = studyReference(study);
        } catch {
          // keep the bare type
        }
        const problem =
          err instanceof Problem
            ? err
            : insufficient('resource:malformed', `the study could not be read: ${String(err)}`);
        const skipped: SkippedInput[] = [{ feature: tensorName, reference, reason: problem.reason }];
        return problem.kind === 'failed'
          ? {
              status: 'failed',
              reason: problem.reason,
              message: problem.message,
              retryable: problem.retryable,
              skipped,
            }
          : {
              status: 'insufficient-data',
              missing: [tensorName],
              skipped,
              reason: problem.reason,
              message: problem.message,
            };
      }
    },
  };
}
