/**
 * The FHIR gateway: the only way `shared/` talks to a FHIR server's REST API. What the pipeline
 * needs over `fetch`: "gone" as a value rather than an exception, paging with a bound (and only
 * on the server's own base), retries with backoff on 429/5xx/timeouts, per-call timeouts, typed
 * errors, and every request authenticated by one {@link FhirAuthProvider} (SMART Backend
 * Services, SigV4 for HealthLake, a bearer token, or none), with one refresh after a 401.
 */
import type { Bundle, Resource } from '@medplum/fhirtypes';
import { withRetry } from '../retry.js';
import {
  authorizedFetch,
  bearerAuth,
  FhirAuthError,
  isUnderBase,
  noAuth,
  type FetchLike,
  type FhirAuthProvider,
} from './auth.js';
import { FhirRequestError, FhirUnavailableError, isRetryableStatus, statusOf } from './errors.js';

export interface FhirGateway {
  /** The resource, or `undefined` when the server says it does not exist (404) or was deleted (410). */
  read<T extends Resource>(resourceType: T['resourceType'], id: string): Promise<T | undefined>;
  /** Every match, following `next` links, up to `maxResources`. */
  searchAll<T extends Resource>(
    resourceType: T['resourceType'],
    params: Readonly<Record<string, string>>,
    opts?: { maxResources?: number },
  ): Promise<T[]>;
  /** Posts a transaction bundle; the server's response bundle. */
  transaction(bundle: Bundle): Promise<Bundle>;
}

export interface FhirGatewayOptions {
  readonly baseUrl: string;
  /** How requests are authenticated. Default: `bearerToken` if given, else none. */
  readonly auth?: FhirAuthProvider;
  /** Shorthand for `auth: bearerAuth(token)` (a CDS client's `fhirAuthorization`). */
  readonly bearerToken?: string;
  readonly fetch?: FetchLike;
  /** Per-request timeout in ms. Default 15,000. */
  readonly timeoutMs?: number;
  /** Attempts per call, the first included. Default 4. */
  readonly attempts?: number;
  /** First backoff in ms. Default 200. */
  readonly backoffMs?: number;
  /** Hard bound on `searchAll`. Default 10,000. */
  readonly maxResources?: number;
  /** For tests: replaces the pause between retries. */
  readonly sleep?: (ms: number) => Promise<void>;
  readonly onRetry?: (operation: string, status: number | undefined, attempt: number) => void;
}

/** A non-2xx answer; `response.status` is what `statusOf` reads. */
class FhirHttpStatusError extends Error {
  override name = 'FhirHttpStatusError';
  readonly response: { readonly status: number };
  constructor(operation: string, status: number) {
    super(`FHIR ${operation} answered ${status}`);
    this.response = { status };
  }
}

/** Token endpoint or discovery trouble may pass; bad credentials or configuration will not. */
function isRetryableAuth(err: FhirAuthError): boolean {
  return (err.step === 'token' || err.step === 'discovery') && isRetryableStatus(err.status);
}

const isRetryable = (err: unknown): boolean =>
  err instanceof FhirAuthError ? isRetryableAuth(err) : isRetryableStatus(statusOf(err));

export function createFhirGateway(opts: FhirGatewayOptions): FhirGateway {
  const base = opts.baseUrl.replace(/\/+$/, '');
  const auth = opts.auth ?? (opts.bearerToken ? bearerAuth(opts.bearerToken) : noAuth);
  const send = authorizedFetch(auth, { baseUrl: base, ...(opts.fetch ? { fetch: opts.fetch } : {}) });
  const timeoutMs = opts.timeoutMs ?? 15_000;
  const maxResources = opts.maxResources ?? 10_000;

  const request = async <T>(
    operation: string,
    method: 'GET' | 'POST',
    url: string,
    body?: unknown,
  ): Promise<T> => {
    const res = await send(url, {
      method,
      redirect: 'error',
      signal: AbortSignal.timeout(timeoutMs),
      headers: {
        accept: 'application/fhir+json',
        ...(body === undefined ? {} : { 'content-type': 'application/fhir+json' }),
      },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    if (!res.ok) {
      await res.body?.cancel();
      throw new FhirHttpStatusError(operation, res.status);
    }
    return (await res.json()) as T;
  };

  const call = async <T>(operation: string, fn: () => Promise<T>): Promise<T> => {
    try {
      return await withRetry(fn, {
        attempts: opts.attempts ?? 4,
        baseMs: opts.backoffMs ?? 200,
        retryable: isRetryable,
        ...(opts.sleep ? { sleep: opts.sleep } : {}),
        onRetry: (err, attempt) => opts.onRetry?.(operation, statusOf(err), attempt),
      });
    } catch (err) {
      const status = statusOf(err) ?? (err instanceof FhirAuthError ? err.status : undefined);
      const why = err instanceof FhirAuthError ? `: ${err.message}` : '';
      if (isRetryable(err)) {
        throw new FhirUnavailableError(
          `FHIR ${operation} failed after retries (status ${status ?? 'none'})${why}`,
          {
            ...(status === undefined ? {} : { status }),
            retryable: true,
            cause: err,
          },
        );
      }
      throw new FhirRequestError(`FHIR ${operation} refused with status ${status ?? 'none'}${why}`, {
        ...(status === undefined ? {} : { status }),
        retryable: false,
        cause: err,
      });
    }
  };

  return {
    async read<T extends Resource>(resourceType: T['resourceType'], id: string): Promise<T | undefined> {
      const url = `${base}/${resourceType}/${encodeURIComponent(id)}`;
      try {
        return await call<T>('read', () => request<T>('read', 'GET', url));
      } catch (err) {
        if (err instanceof FhirRequestError && (err.status === 404 || err.status === 410)) return undefined;
        throw err;
      }
    },

    async searchAll<T extends Resource>(
      resourceType: T['resourceType'],
      params: Readonly<Record<string, string>>,
      searchOpts?: { maxResources?: number },
    ): Promise<T[]> {
      const limit = searchOpts?.maxResources ?? maxResources;
      const out: T[] = [];
      const first = `${base}/${resourceType}?${new URLSearchParams({ ...params }).toString()}`;
      let page = await call<Bundle<T>>('search', () => request<Bundle<T>>('search', 'GET', first));
      for (;;) {
        for (const entry of page.entry ?? []) {
          if (entry.resource && (entry.search?.mode ?? 'match') === 'match') out.push(entry.resource);
          if (out.length >= limit) return out;
        }
        const next = page.link?.find((l) => l.relation === 'next' && l.url)?.url;
        if (!next) return out;
        const url = new URL(next, `${base}/`).toString();
        // Credentials go to the configured server only: a next link elsewhere is refused.
        if (!isUnderBase(url, base)) {
          throw new FhirRequestError('FHIR search-next link points outside the FHIR base', {
            retryable: false,
          });
        }
        page = await call<Bundle<T>>('search-next', () => request<Bundle<T>>('search-next', 'GET', url));
      }
    },

    async transaction(bundle: Bundle): Promise<Bundle> {
      return call<Bundle>('transaction', () => request<Bundle>('transaction', 'POST', base, bundle));
    },
  };
}
