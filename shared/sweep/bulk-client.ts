/**
 * A FHIR Bulk Data `$export` client: kick-off, polling (Retry-After, X-Progress, 429 and 5xx
 * answered with a wait, a bound on the total wait), the manifest, and NDJSON downloads as
 * streams. No file is ever held whole in memory.
 */
import { Readable } from 'node:stream';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import * as z from 'zod';
import {
  ExportExpiredError,
  ExportFailedError,
  ExportTimeoutError,
  ExportUnsupportedError,
} from './errors.js';

export const ExportManifestSchema = z.object({
  transactionTime: z.string(),
  request: z.string(),
  requiresAccessToken: z.boolean().default(false),
  output: z.array(
    z.object({ type: z.string(), url: z.url(), count: z.number().int().nonnegative().optional() }),
  ),
  error: z
    .array(z.object({ type: z.string(), url: z.url(), count: z.number().int().nonnegative().optional() }))
    .default([]),
});
export type ExportManifest = z.infer<typeof ExportManifestSchema>;

export interface ExportKickOff {
  /** `patient` (`Patient/$export`), `group` (`Group/[id]/$export`) or `system` (`$export`). */
  readonly level: 'system' | 'patient' | 'group';
  readonly group?: string;
  readonly types: readonly string[];
  readonly since?: string;
  /**
   * `_typeFilter` queries (`Observation?code=…`), one parameter each. A server that refuses
   * them (400, 404, 405, 422 or 501; Bulk Data lets a server decline `_typeFilter`) is asked
   * again without them, and `onTypeFilterRefused` told when that kick-off is accepted: what is read is filtered again anyway, so the filter only
   * saves what the server exports and the sweep downloads and stages.
   */
  readonly typeFilters?: readonly string[];
}

export interface BulkClientOptions {
  readonly baseUrl: string;
  /** Authorization and other headers, asked for before each request (tokens may refresh). */
  readonly headers?: () => Promise<Record<string, string>>;
  readonly fetch?: typeof fetch;
  readonly sleep?: (ms: number) => Promise<void>;
  /** Bound on the whole wait for the manifest. Default 30 minutes. */
  readonly maxWaitMs?: number;
  /** Shortest and longest pause between polls, whatever Retry-After says. Default 100 ms and 60 s. */
  readonly minPollMs?: number;
  readonly maxPollMs?: number;
  /** Consecutive 5xx answers tolerated while polling. Default 5. */
  readonly maxServerErrors?: number;
  readonly onPoll?: (event: { status: number; progress?: string; waitMs: number }) => void;
  /** The server refused a kick-off with `_typeFilter` (400, 404, 405, 422 or 501) and accepted it without. */
  readonly onTypeFilterRefused?: (status: number) => void;
}

export interface PollStats {
  polls: number;
  throttled: number;
  serverErrors: number;
  waitedMs: number;
}

/** One status request's answer: the manifest, or how long to wait before asking again. */
export type PollResult =
  | { readonly done: true; readonly manifest: ExportManifest }
  | {
      readonly done: false;
      /** Retry-After (202, 429, 5xx) or the default, clamped to [minPollMs, maxPollMs]. */
      readonly waitMs: number;
      /** Consecutive 5xx answers so far (pass it to the next poll). */
      readonly serverErrorsInARow: number;
    };

export interface BulkClient {
  kickOff(request: ExportKickOff): Promise<string>;
  /**
   * ONE status request. Counts it in `stats`, and the wait it asks for in `stats.waitedMs`;
   * throws `ExportTimeoutError` when that wait would pass the bound on total wait, and
   * `ExportFailedError` on a failed job or more 5xx in a row than tolerated. A Step Functions
   * Wait/Choice loop calls it once per state transition (the stats travel in the state).
   */
  poll(statusUrl: string, stats: PollStats, serverErrorsInARow?: number): Promise<PollResult>;
  /** `poll` in a loop, sleeping as it says, until the manifest. */
  waitForManifest(statusUrl: string, stats?: PollStats): Promise<ExportManifest>;
  cancel(statusUrl: string): Promise<void>;
  /** The NDJSON body as a byte stream. Throws `ExportExpiredError` on 404/410. */
  download(url: string, requiresAccessToken: boolean): Promise<Readable>;
}

const UNSUPPORTED = new Set([404, 405, 501]);
/** Answers to a kick-off with `_typeFilter` that may mean the filter, not the export, is refused. */
const REFUSED_WITH_FILTER = new Set([400, 404, 405, 422, 501]);

/** Retry-After as ms: delay-seconds or an HTTP date. */
export function retryAfterMs(header: string | null, now = Date.now()): number | undefined {
  if (header === null || header.trim() === '') return undefined;
  const seconds = Number(header);
  if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000);
  const at = Date.parse(header);
  return Number.isFinite(at) ? Math.max(0, at - now) : undefined;
}

async function outcomeText(res: Response): Promise<string> {
  const text = await res.text().catch(() => '');
  try {
    const body = JSON.parse(text) as { issue?: { code?: string; details?: { text?: string } }[] };
    const issue = body.issue?.[0];
    return issue
      ? `${issue.code ?? 'error'}: ${issue.details?.text ?? ''}`.slice(0, 200)
      : `HTTP ${res.status}`;
  } catch {
    return `HTTP ${res.status}`;
  }
}

export function createBulkClient(opts: BulkClientOptions): BulkClient {
  const doFetch = opts.fetch ?? fetch;
  const sleep = opts.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  const base = opts.baseUrl.replace(/\/+$/, '');
  const headers = async (extra: Record<string, string>, auth = true): Promise<Record<string, string>> => ({
    ...(auth && opts.headers ? await opts.headers() : {}),
    ...extra,
  });
  const minPoll = opts.minPollMs ?? 100;
  const maxPoll = opts.maxPollMs ?? 60_000;

  const poll: BulkClient['poll'] = async (statusUrl, stats, serverErrorsInARow = 0) => {
    const maxWait = opts.maxWaitMs ?? 30 * 60_000;
    const res = await doFetch(statusUrl, { headers: await headers({ Accept: 'application/json' }) });
    stats.polls++;
    if (res.status === 200) {
      const body: unknown = await res.json().catch(() => undefined);
      const parsed = ExportManifestSchema.safeParse(body);
      if (!parsed.success) throw new ExportFailedError('the export manifest does not parse', 200);
      return { done: true, manifest: parsed.data };
    }
    let waitMs: number;
    let inARow = serverErrorsInARow;
    const progress = res.headers.get('x-progress') ?? undefined;
    if (res.status === 202 || res.status === 429) {
      await res.body?.cancel();
      if (res.status === 429) stats.throttled++;
      inARow = 0;
      waitMs = retryAfterMs(res.headers.get('retry-after')) ?? (res.status === 429 ? 1000 : minPoll * 10);
    } else if (res.status >= 500 && res.status !== 501) {
      const detail = await outcomeText(res);
      stats.serverErrors++;
      if (++inARow > (opts.maxServerErrors ?? 5)) {
        throw new ExportFailedError(`export status failed (${res.status}: ${detail})`, res.status);
      }
      waitMs = retryAfterMs(res.headers.get('retry-after')) ?? 500 * 2 ** inARow;
    } else {
      const detail = await outcomeText(res);
      throw new ExportFailedError(`export failed (${res.status}: ${detail})`, res.status);
    }
    waitMs = Math.min(maxPoll, Math.max(minPoll, waitMs));
    opts.onPoll?.({ status: res.status, ...(progress ? { progress } : {}), waitMs });
    if (stats.waitedMs + waitMs > maxWait) {
      throw new ExportTimeoutError(`export not complete after ${stats.waitedMs} ms (bound ${maxWait} ms)`);
    }
    stats.waitedMs += waitMs;
    return { done: false, waitMs, serverErrorsInARow: inARow };
  };

  const kickOff = async (request: ExportKickOff): Promise<string> => {
    const path =
      request.level === 'group'
        ? `Group/${request.group ?? ''}/$export`
        : request.level === 'patient'
          ? 'Patient/$export'
          : '$export';
    const url = new URL(`${base}/${path}`);
    url.searchParams.set('_outputFormat', 'application/fhir+ndjson');
    if (request.types.length > 0) url.searchParams.set('_type', request.types.join(','));
    if (request.since) url.searchParams.set('_since', request.since);
    for (const q of request.typeFilters ?? []) url.searchParams.append('_typeFilter', q);
    const res = await doFetch(url, {
      headers: await headers({ Accept: 'application/fhir+json', Prefer: 'respond-async' }),
    });
    if ((request.typeFilters?.length ?? 0) > 0 && REFUSED_WITH_FILTER.has(res.status)) {
      // Asked again without the filter: what that answers is the verdict (a server without
      // `$export` at all still says so, and the sweep falls back to paged search).
      await res.body?.cancel();
      const statusUrl = await kickOff({ ...request, typeFilters: [] });
      opts.onTypeFilterRefused?.(res.status);
      return statusUrl;
    }
    if (res.status === 202) {
      await res.body?.cancel();
      const location = res.headers.get('content-location');
      if (!location)
        throw new ExportFailedError('$export kick-off answered 202 without Content-Location', 202);
      return new URL(location, `${base}/`).href;
    }
    const detail = await outcomeText(res);
    if (UNSUPPORTED.has(res.status)) {
      throw new ExportUnsupportedError(`$export not supported (${res.status}: ${detail})`, res.status);
    }
    throw new ExportFailedError(`$export kick-off refused (${res.status}: ${detail})`, res.status);
  };

  return {
    kickOff,

    poll,

    async waitForManifest(statusUrl, stats = { polls: 0, throttled: 0, serverErrors: 0, waitedMs: 0 }) {
      for (let inARow = 0; ;) {
        const result = await poll(statusUrl, stats, inARow);
        if (result.done) return result.manifest;
        inARow = result.serverErrorsInARow;
        await sleep(result.waitMs);
      }
    },

    async cancel(statusUrl) {
      const res = await doFetch(statusUrl, { method: 'DELETE', headers: await headers({}) });
      await res.body?.cancel();
    },

    async download(url, requiresAccessToken) {
      const res = await doFetch(url, {
        headers: await headers({ Accept: 'application/fhir+ndjson' }, requiresAccessToken),
      });
      if (res.status === 404 || res.status === 410) {
        await res.body?.cancel();
        throw new ExportExpiredError(`export file answered ${res.status}: expired`, res.status);
      }
      if (!res.ok || !res.body) {
        const detail = await outcomeText(res);
        throw new ExportFailedError(`export file download failed (${res.status}: ${detail})`, res.status);
      }
      return Readable.fromWeb(res.body as WebReadableStream<Uint8Array>);
    },
  };
}
