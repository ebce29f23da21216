/**
 * The HTTP side of the image extractor: WADO-RS fetches that follow redirects by hand, each hop
 * checked against the allow-list, bodies read with a byte cap, multipart/related unwrapped, and
 * the internal `Problem` that stops an extraction early (turned into a result, never thrown out).
 */
import type { AllowOutcome } from './allow-list.js';
import { parseContentType, parseMultipartRelated } from './multipart.js';

export const ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*';

/** What a fetch needs: the allow-list check, the injected fetch and the redirect bound. */
export interface DicomHttp {
  readonly allowed: (url: string) => AllowOutcome;
  readonly fetch: (url: string, init: RequestInit) => Promise<Response>;
  readonly maxRedirects: number;
}

/** Internal: how `run` stops early; turned into a result in `extract`, never escapes. */
export class Problem extends Error {
  override name = 'ImageProblem';
  constructor(
    readonly kind: 'insufficient' | 'failed',
    readonly reason: string,
    message: string,
    readonly retryable = false,
  ) {
    super(message);
  }
}

export const insufficient = (reason: string, message: string): Problem =>
  new Problem('insufficient', reason, message);
export const failed = (reason: string, message: string, retryable: boolean): Problem =>
  new Problem('failed', reason, message, retryable);

export async function fetchChecked(http: DicomHttp, url: string, signal: AbortSignal): Promise<Response> {
  let current = url;
  for (let hop = 0; ; hop++) {
    const check: AllowOutcome = http.allowed(current);
    if (!check.ok) {
      throw failed(
        'endpoint:not-allowed',
        `${hop === 0 ? 'URL' : 'redirect target'} refused (${check.reason}): ${redact(current)}`,
        false,
      );
    }
    let response: Response;
    try {
      response = await http.fetch(check.url.href, {
        method: 'GET',
        headers: { accept: ACCEPT },
        redirect: 'manual',
        signal,
      });
    } catch (err) {
      const timedOut = signal.aborted;
      throw failed(
        timedOut ? 'fetch:timeout' : 'fetch:network',
        `${timedOut ? 'timed out' : 'network error'} fetching ${redact(current)}: ${err instanceof Error ? err.message : String(err)}`,
        true,
      );
    }
    if (response.status >= 300 && response.status < 400 && response.headers.has('location')) {
      await discard(response);
      if (hop >= http.maxRedirects)
        throw failed('fetch:redirects', `more than ${String(http.maxRedirects)} redirects`, false);
      current = new URL(response.headers.get('location') ?? '', check.url).href;
      continue;
    }
    return response;
  }
}

export async function readCapped(response: Response, maxBytes: number): Promise<Uint8Array> {
  const declared = Number(response.headers.get('content-length') ?? Number.NaN);
  if (Number.isFinite(declared) && declared > maxBytes) {
    await discard(response);
    throw insufficient(
      'dicom:too-large',
      `response of ${String(declared)} bytes exceeds the limit of ${String(maxBytes)}`,
    );
  }
  if (response.body === null) return new Uint8Array(0);
  const reader = (response.body as ReadableStream<Uint8Array>).getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > maxBytes) {
      await reader.cancel().catch(() => undefined);
      throw insufficient('dicom:too-large', `response passed the limit of ${String(maxBytes)} bytes`);
    }
    chunks.push(value);
  }
  if (chunks.length === 1) return chunks[0] as Uint8Array;
  const out = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.byteLength;
  }
  return out;
}

export function dicomBytes(response: Response, body: Uint8Array): Uint8Array {
  const { mediaType, params } = parseContentType(response.headers.get('content-type') ?? '');
  if (mediaType === 'application/dicom') return body;
  if (mediaType !== 'multipart/related') {
    throw insufficient('response:media-type', `unexpected response type ${mediaType || '(none)'}`);
  }
  const parts = parseMultipartRelated(body, params.get('boundary') ?? '');
  if (parts === undefined) throw insufficient('response:multipart', 'malformed multipart/related response');
  const part = parts.find((p) => {
    const type = p.headers.get('content-type');
    return type === undefined || parseContentType(type).mediaType === 'application/dicom';
  });
  if (part === undefined)
    throw insufficient('response:multipart', 'no application/dicom part in the response');
  return part.body;
}

/** A URL for messages, without credentials or query. */
export function redact(url: string): string {
  try {
    const u = new URL(url);
    u.username = '';
    u.password = '';
    u.search = '';
    return u.href;
  } catch {
    return '(invalid URL)';
  }
}

export async function discard(response: Response): Promise<void> {
  try {
    await response.body?.cancel();
  } catch {
    // nothing to free
  }
}
