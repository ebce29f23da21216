/**
 * The FHIR gateway: the only way `shared/` talks to a FHIR server's REST API. A layer over
 * fhir-kit-client that adds what the pipeline needs: "gone" as a value rather than an exception,
 * paging with a bound (and only on the server's own base), retries with backoff on
 * 429/5xx/timeouts, per-request timeouts, typed errors, and every request authenticated by one
 * {@link FhirAuthProvider} (SMART Backend Services, SigV4 for HealthLake, a bearer token, or
 * none), with one refresh after a 401.
 *
 * Credentials are added by fhir-kit-client's `requestSigner`, which it awaits with the final
 * URL and `RequestInit` (method, headers, string body) just before `fetch(new Request(...))`:
 * what SigV4 signs is what is sent.
 */
import type { Bundle, Resource } from '@medplum/fhirtypes';
import { Client, RESPONSE_KEY, type FhirResource, type RequestOptions } from 'fhir-kit-client';
import { withRetry } from '../retry.js';
import { bearerAuth, FhirAuthError, isUnderBase, noAuth, type FhirAuthProvider } from './auth.js';
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

/** One page of a search: its matches, and the absolute URL of the next page (absent: the last). */
export interface SearchPage<T extends Resource> {
  readonly resources: T[];
  readonly next?: string;
}

/**
 * Searches a page at a time, for callers that must not hold every match (a population) and
 * may resume later from a stored `next` URL. The same rules as `searchAll`: retries, timeouts,
 * typed errors, and credentials to the configured base only (a `next` URL elsewhere is refused,
 * whether the server sent it or a caller stored it).
 */
export interface FhirPager {
  searchPage<T extends Resource>(
    resourceType: T['resourceType'],
    params: Readonly<Record<string, string>>,
  ): Promise<SearchPage<T>>;
  nextPage<T extends Resource>(url: string): Promise<SearchPage<T>>;
}

export interface FhirGatewayOptions {
  readonly baseUrl: string;
  /** How requests are authenticated. Default: `bearerToken` if given, else none. */
  readonly auth?: FhirAuthProvider;
  /** Shorthand for `auth: bearerAuth(token)` (a CDS client's `fhirAuthorization`). */
  readonly bearerToken?: string;
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

/**
 * A non-2xx answer; `response.status` is what `statusOf` reads. It replaces fhir-kit-client's
 * error, whose message holds the URL (patient ids, search parameters) and whose `response.data`
 * holds the server's OperationOutcome: neither may reach a log through `cause`.
 */
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

type RequestSigner = (url: string, init: RequestInit) => Promise<void>;

/**
 * fhir-kit-client's `requestSigner`: adds the provider's headers to a request under the base
 * (origin and path prefix), signing the headers fhir-kit-client set (`accept`, `content-type`)
 * and the string body it will send. A request elsewhere goes out without credentials.
 */
function signerFor(auth: FhirAuthProvider, base: string): RequestSigner {
  return async (url, init) => {
    if (auth.mode === 'none' || !isUnderBase(url, base)) return;
    const body = init.body ?? undefined;
    if (body !== undefined && typeof body !== 'string') {
      throw new FhirAuthError('request', 'authenticated FHIR requests need a string body');
    }
    const headers = new Headers(init.headers);
    const record: Record<string, string> = {};
    headers.forEach((value, key) => {
      record[key] = value;
    });
    const authHeaders = await auth.getAuthHeaders({
      method: (init.method ?? 'GET').toUpperCase(),
      url,
      headers: record,
      ...(body === undefined ? {} : { body }),
    });
    for (const [key, value] of Object.entries(authHeaders)) headers.set(key, value);
    init.headers = headers;
  };
}

/**
 * One request through fhir-kit-client. Its errors become {@link FhirHttpStatusError} (a 2xx whose
 * body is not JSON, or an empty 2xx, becomes an error without a status: worth another try). The
 * result keeps fhir-kit-client's `RESPONSE_KEY` but not the `Request`, whose headers hold the
 * credentials.
 */
async function viaClient<T>(operation: string, send: () => Promise<FhirResource>): Promise<T> {
  let result: FhirResource;
  try {
    result = await send();
  } catch (err) {
    const status = statusOf(err);
    if (status === undefined) throw err; // network, timeout, redirect, credentials
    if (status >= 200 && status < 300) throw new Error(`FHIR ${operation} answered ${status} without JSON`);
    throw new FhirHttpStatusError(operation, status);
  }
  if (Object.keys(result).length === 0) throw new Error(`FHIR ${operation} answered with an empty body`);
  const out: FhirResource = { ...result };
  Object.defineProperty(out, RESPONSE_KEY, { value: Client.httpFor(result).response, enumerable: false });
  return out as unknown as T;
}

export function createFhirGateway(opts: FhirGatewayOptions): FhirGateway & FhirPager {
  const base = opts.baseUrl.replace(/\/+$/, '');
  const auth = opts.auth ?? (opts.bearerToken ? bearerAuth(opts.bearerToken) : noAuth);
  // ClientConfig types the signer as returning void; HttpClient (its implementation and its own
  // constructor type) awaits it before building the Request, which is what signing needs.
  // eslint-disable-next-line @typescript-eslint/no-misused-promises
  const requestSigner: (url: string, init: RequestInit) => void = signerFor(auth, base);
  const client = new Client({ baseUrl: base, requestSigner });
  const timeoutMs = opts.timeoutMs ?? 15_000;
  const maxResources = opts.maxResources ?? 10_000;

  /** One attempt: a request with its own timeout, and once more with fresh credentials after a 401. */
  const attempt = async <T>(
    operation: string,
    send: (options: RequestOptions) => Promise<FhirResource>,
  ): Promise<T> => {
    const once = () =>
      viaClient<T>(operation, () => send({ signal: AbortSignal.timeout(timeoutMs), redirect: 'error' }));
    try {
      return await once();
    } catch (err) {
      if (statusOf(err) !== 401 || auth.mode === 'none' || !auth.invalidate()) throw err;
      return once();
    }
  };

  const call = async <T>(
    operation: string,
    send: (options: RequestOptions) => Promise<FhirResource>,
  ): Promise<T> => {
    try {
      return await withRetry(() => attempt<T>(operation, send), {
        attempts: opts.attempts ?? 4,
        baseMs: opts.backoffMs ?? 200,
        retryable: isRetryable,
        ...(opts.sleep ? { sleep: opts.sleep } : {}),
        onRetry: (err, n) => opts.onRetry?.(operation, statusOf(err), n),
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

  /** A searchset's matches, and its next link resolved against the base (checked when followed). */
  const pageOf = <T extends Resource>(bundle: Bundle<T>): SearchPage<T> => {
    const resources: T[] = [];
    for (const entry of bundle.entry ?? []) {
      if (entry.resource && (entry.search?.mode ?? 'match') === 'match') resources.push(entry.resource);
    }
    const link = bundle.link?.find((l) => l.relation === 'next' && l.url)?.url;
    return link ? { resources, next: new URL(link, `${base}/`).toString() } : { resources };
  };

  const searchPage = async <T extends Resource>(
    resourceType: T['resourceType'],
    params: Readonly<Record<string, string>>,
  ): Promise<SearchPage<T>> =>
    pageOf(
      await call<Bundle<T>>('search', (options) =>
        client.search({ resourceType, searchParams: { ...params }, options }),
      ),
    );

  const nextPage = async <T extends Resource>(next: string): Promise<SearchPage<T>> => {
    const url = new URL(next, `${base}/`).toString();
    // Credentials go to the configured server only: a next link elsewhere is refused.
    if (!isUnderBase(url, base)) {
      throw new FhirRequestError('FHIR search-next link points outside the FHIR base', {
        retryable: false,
      });
    }
    // The link resolved against the base, so that fhir-kit-client fetches exactly the URL checked.
    const bundle = { resourceType: 'Bundle', link: [{ relation: 'next', url }] };
    return pageOf(
      await call<Bundle<T>>(
        'search-next',
        (options) =>
          client.nextPage({ bundle, options }) ?? Promise.reject(new Error('FHIR search-next lost its link')),
      ),
    );
  };

  return {
    async read<T extends Resource>(resourceType: T['resourceType'], id: string): Promise<T | undefined> {
      try {
        return await call<T>('read', (options) =>
          client.read({ resourceType, id: encodeURIComponent(id), options }),
        );
      } catch (err) {
        if (err instanceof FhirRequestError && (err.status === 404 || err.status === 410)) return undefined;
        throw err;
      }
    },

    searchPage,
    nextPage,

    async searchAll<T extends Resource>(
      resourceType: T['resourceType'],
      params: Readonly<Record<string, string>>,
      searchOpts?: { maxResources?: number },
    ): Promise<T[]> {
      const limit = searchOpts?.maxResources ?? maxResources;
      const out: T[] = [];
      let page = await searchPage<T>(resourceType, params);
      for (;;) {
        for (const resource of page.resources) {
          out.push(resource);
          if (out.length >= limit) return out;
        }
        if (!page.next) return out;
        page = await nextPage<T>(page.next);
      }
    },

    async transaction(bundle: Bundle): Promise<Bundle> {
      return call<Bundle>('transaction', (options) =>
        client.transaction({ body: bundle as unknown as FhirResource, options }),
      );
    },
  };
}
