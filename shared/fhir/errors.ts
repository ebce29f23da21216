/** Errors of the FHIR gateway. `retryable` tells the caller whether a later try may succeed. */
export class FhirGatewayError extends Error {
  override name = 'FhirGatewayError';
  readonly status: number | undefined;
  readonly retryable: boolean;
  constructor(message: string, opts: { status?: number; retryable: boolean; cause?: unknown }) {
    super(message, { cause: opts.cause });
    this.status = opts.status;
    this.retryable = opts.retryable;
  }
}

/** The server answered 5xx, 429 or timed out, and the retries ran out. */
export class FhirUnavailableError extends FhirGatewayError {
  override name = 'FhirUnavailableError';
}

/** The server refused the request (4xx other than 404/410/429): retrying will not help. */
export class FhirRequestError extends FhirGatewayError {
  override name = 'FhirRequestError';
}

/** HTTP status of an error thrown by the gateway (or fhir-kit-client), if it carries one. */
export function statusOf(err: unknown): number | undefined {
  if (typeof err === 'object' && err !== null && 'response' in err) {
    const response = (err as { response?: { status?: unknown } }).response;
    if (typeof response?.status === 'number') return response.status;
  }
  return undefined;
}

/** Statuses worth another try: throttling and server-side failures. */
export function isRetryableStatus(status: number | undefined): boolean {
  return status === undefined || status === 429 || status === 408 || status >= 500;
}
