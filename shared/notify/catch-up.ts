/**
 * Catching up on missed events from the FHIR server: the R4 Backport `$events` operation
 * (`GET [base]/Subscription/{id}/$events?eventsSinceNumber=..&eventsUntilNumber=..`) where the
 * server has it, else a `_lastUpdated` search over the topic's resource types.
 *
 * Only the configured FHIR base is ever called (never a URL named by a notification), and
 * `next` links are followed only on that origin.
 */
import type { ResourceLike } from '../events/notification.js';

export type FetchLike = (url: string, init: RequestInit) => Promise<Response>;

export interface CatchUpSource {
  /**
   * The `$events` response (a notification bundle, unparsed) for events `since..until`.
   * Throws {@link CatchUpError}: `unsupported` when the server has no `$events`.
   */
  events(subscriptionId: string, since: number, until: number): Promise<unknown>;
  /** Every match of a search (`params` values may repeat, e.g. two `_lastUpdated` bounds), up to `max`. */
  search(
    resourceType: string,
    params: readonly (readonly [string, string])[],
    max: number,
  ): Promise<ResourceLike[]>;
}

export class CatchUpError extends Error {
  override name = 'CatchUpError';
  readonly code: 'unsupported' | 'unavailable' | 'invalid-response';
  readonly status: number | undefined;
  constructor(code: CatchUpError['code'], status?: number, options?: { cause?: unknown }) {
    super(status === undefined ? code : `${code} (status ${status})`, options);
    this.code = code;
    this.status = status;
  }
}

export interface FhirCatchUpOptions {
  /** The FHIR base URL, e.g. `https://ehr.example/fhir`. */
  readonly baseUrl: string;
  readonly bearerToken?: string;
  readonly fetch?: FetchLike;
  /** Per-request timeout. Default 10 s. */
  readonly timeoutMs?: number;
  /** Most search pages followed. Default 50. */
  readonly maxPages?: number;
}

export function createFhirCatchUp(opts: FhirCatchUpOptions): CatchUpSource {
  const base = opts.baseUrl.replace(/\/+$/, '');
  const origin = new URL(base).origin;
  const fetchFn: FetchLike = opts.fetch ?? ((url, init) => fetch(url, init));
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const maxPages = opts.maxPages ?? 50;

  const get = async (url: string): Promise<unknown> => {
    let res: Response;
    try {
      res = await fetchFn(url, {
        method: 'GET',
        redirect: 'error',
        signal: AbortSignal.timeout(timeoutMs),
        headers: {
          accept: 'application/fhir+json',
          ...(opts.bearerToken ? { authorization: `Bearer ${opts.bearerToken}` } : {}),
        },
      });
    } catch (err) {
      throw new CatchUpError('unavailable', undefined, { cause: err });
    }
    if (res.status !== 200) {
      await res.body?.cancel();
      const unsupported = [400, 404, 405, 501].includes(res.status);
      throw new CatchUpError(unsupported ? 'unsupported' : 'unavailable', res.status);
    }
    try {
      return await res.json();
    } catch (err) {
      throw new CatchUpError('invalid-response', res.status, { cause: err });
    }
  };

  return {
    events(subscriptionId, since, until) {
      const q = new URLSearchParams({
        eventsSinceNumber: String(since),
        eventsUntilNumber: String(until),
        content: 'id-only',
      });
      return get(`${base}/Subscription/${encodeURIComponent(subscriptionId)}/$events?${q.toString()}`);
    },

    async search(resourceType, params, max) {
      const q = new URLSearchParams(params.map(([k, v]): [string, string] => [k, v]));
      let url: string | undefined = `${base}/${resourceType}?${q.toString()}`;
      const out: ResourceLike[] = [];
      for (let page = 0; url && page < maxPages && out.length < max; page++) {
        const bundle = (await get(url)) as {
          entry?: { resource?: ResourceLike; search?: { mode?: string } }[];
          link?: { relation?: string; url?: string }[];
        } | null;
        for (const e of bundle?.entry ?? []) {
          if (e.resource?.resourceType === resourceType && (e.search?.mode ?? 'match') === 'match') {
            out.push(e.resource);
          }
        }
        const next = bundle?.link?.find((l) => l.relation === 'next')?.url;
        url = next && new URL(next, base).origin === origin ? new URL(next, base).toString() : undefined;
      }
      return out.slice(0, max);
    },
  };
}
