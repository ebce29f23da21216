/**
 * How every FHIR request the functions make is authenticated: ONE interface, one provider per
 * mode (none, a static bearer token, SMART Backend Services, SigV4 for AWS HealthLake), and one
 * `fetch` wrapper that adds the provider's headers to requests on the FHIR server's origin only
 * and retries once, with fresh credentials, after a 401.
 *
 * The gateway (pipeline, partner API; fhir-kit-client, through its `requestSigner`), the sweep's
 * write-back transaction client, the Bulk `$export` client and the notify catch-up use the same
 * provider (the last two through {@link authorizedFetch}); none of them knows which mode is in use.
 * Credentials never appear in logs or error messages.
 */

/** What a provider may need to know about a request (SigV4 signs all of it). */
export interface FhirRequest {
  readonly method: string;
  readonly url: string;
  /** The headers that will be sent (lower- or mixed-case names). */
  readonly headers: Readonly<Record<string, string>>;
  /** The body as text, when there is one. */
  readonly body?: string;
}

export interface FhirAuthProvider {
  /** A short name for logs: `none`, `bearer`, `smart-backend-services`, `sigv4`. */
  readonly mode: string;
  /** Headers to add to this request (`Authorization`, and for SigV4 `x-amz-*`). */
  getAuthHeaders(request: FhirRequest): Promise<Record<string, string>>;
  /**
   * The server answered 401: drop cached credentials. Returns true when asking again may
   * succeed (a new token can be fetched), false when a retry would be pointless.
   */
  invalidate(): boolean;
}

/** A failure to obtain credentials; `step` names where it failed, the message never holds a secret. */
export class FhirAuthError extends Error {
  override name = 'FhirAuthError';
  readonly step: string;
  readonly status: number | undefined;
  constructor(step: string, message: string, opts: { status?: number; cause?: unknown } = {}) {
    super(`FHIR auth (${step}): ${message}`, { cause: opts.cause });
    this.step = step;
    this.status = opts.status;
  }
}

/** No credentials (a server that needs none, such as the embedded one by default). */
export const noAuth: FhirAuthProvider = {
  mode: 'none',
  getAuthHeaders: () => Promise.resolve({}),
  invalidate: () => false,
};

/** A fixed bearer token (a CDS client's `fhirAuthorization`, or a token given by configuration). */
export function bearerAuth(token: string): FhirAuthProvider {
  return {
    mode: 'bearer',
    getAuthHeaders: () => Promise.resolve({ authorization: `Bearer ${token}` }),
    invalidate: () => false,
  };
}

export type FetchLike = (url: string, init: RequestInit) => Promise<Response>;

export interface AuthorizedFetchOptions {
  /** Requests are authenticated only when their URL is under this base (origin and path prefix). */
  readonly baseUrl: string;
  readonly fetch?: FetchLike;
}

/** True when `url` is the base itself or below it (same origin, path prefix on a segment boundary). */
export function isUnderBase(url: string, baseUrl: string): boolean {
  let u: URL;
  let b: URL;
  try {
    u = new URL(url);
    b = new URL(baseUrl);
  } catch {
    return false;
  }
  if (u.origin !== b.origin) return false;
  const prefix = b.pathname.replace(/\/+$/, '');
  return u.pathname === prefix || u.pathname.startsWith(`${prefix}/`) || prefix === '';
}

function headerRecord(headers: RequestInit['headers']): Record<string, string> {
  const out: Record<string, string> = {};
  new Headers(headers).forEach((value, key) => {
    out[key] = value;
  });
  return out;
}

/**
 * A `fetch` that authenticates requests to the FHIR server with `auth` and, on a 401, asks the
 * provider to drop its credentials and tries exactly once more. Requests elsewhere (a bulk
 * export file on a storage service, a link to another host) go out without credentials.
 * Bodies must be strings (FHIR JSON) so that they can be signed and sent twice.
 */
export function authorizedFetch(auth: FhirAuthProvider, opts: AuthorizedFetchOptions): FetchLike {
  const doFetch: FetchLike = opts.fetch ?? ((url, init) => fetch(url, init));
  return async (url, init) => {
    if (auth.mode === 'none' || !isUnderBase(url, opts.baseUrl)) return doFetch(url, init);
    if (init.body !== undefined && init.body !== null && typeof init.body !== 'string') {
      throw new FhirAuthError('request', 'authenticated FHIR requests need a string body');
    }
    const body = init.body ?? undefined;
    const send = async (): Promise<Response> => {
      const headers = headerRecord(init.headers);
      const request: FhirRequest = {
        method: (init.method ?? 'GET').toUpperCase(),
        url,
        headers,
        ...(body === undefined ? {} : { body }),
      };
      const authHeaders = await auth.getAuthHeaders(request);
      return doFetch(url, { ...init, headers: { ...headers, ...authHeaders } });
    };
    const first = await send();
    if (first.status !== 401 || !auth.invalidate()) return first;
    await first.body?.cancel();
    return send();
  };
}
