/**
 * HTTP functions (API Gateway HTTP API, payload v2): every error that leaves a function is a
 * FHIR OperationOutcome with the right status, naming the failing path where there is one,
 * and never echoing patient data.
 */
import type { APIGatewayProxyEventV2, APIGatewayProxyStructuredResultV2 } from 'aws-lambda';
import type { OperationOutcome } from '@medplum/fhirtypes';

export type IssueCode =
  | 'invalid'
  | 'structure'
  | 'required'
  | 'value'
  | 'security'
  | 'login'
  | 'forbidden'
  | 'not-found'
  | 'too-costly'
  | 'throttled'
  | 'processing'
  | 'not-supported'
  | 'exception'
  | 'transient';

/** An error an HTTP function answers with: status, FHIR issue code and an optional FHIRPath-like location. */
export class HttpError extends Error {
  override name = 'HttpError';
  readonly status: number;
  readonly code: IssueCode;
  readonly location: string | undefined;
  readonly headers: Record<string, string>;
  constructor(
    status: number,
    code: IssueCode,
    message: string,
    opts: { location?: string; headers?: Record<string, string>; cause?: unknown } = {},
  ) {
    super(message, { cause: opts.cause });
    this.status = status;
    this.code = code;
    this.location = opts.location;
    this.headers = opts.headers ?? {};
  }
}

export const badRequest = (message: string, location?: string): HttpError =>
  new HttpError(400, 'invalid', message, location ? { location } : {});
export const unauthorized = (): HttpError =>
  new HttpError(401, 'login', 'authentication required', { headers: { 'www-authenticate': 'Bearer' } });
export const forbidden = (): HttpError => new HttpError(403, 'forbidden', 'insufficient scope');
export const notFound = (what = 'resource'): HttpError =>
  new HttpError(404, 'not-found', `${what} not found`);
export const payloadTooLarge = (limitBytes: number): HttpError =>
  new HttpError(413, 'too-costly', `request body larger than ${limitBytes} bytes`);
export const tooManyRequests = (retryAfterSeconds: number): HttpError =>
  new HttpError(429, 'throttled', 'too many requests', {
    headers: { 'retry-after': String(retryAfterSeconds) },
  });

export function operationOutcome(err: HttpError): OperationOutcome {
  return {
    resourceType: 'OperationOutcome',
    issue: [
      {
        severity: 'error',
        code: err.code,
        diagnostics: err.message,
        ...(err.location ? { expression: [err.location] } : {}),
      },
    ],
  };
}

/** Any thrown value → an HttpError: ours as they are, anything else a generic 500 that leaks nothing. */
export function normalizeHttpError(err: unknown): HttpError {
  if (err instanceof HttpError) return err;
  return new HttpError(500, 'exception', 'internal error', { cause: err });
}

export function jsonResponse(
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
  contentType = 'application/json',
): APIGatewayProxyStructuredResultV2 {
  return {
    statusCode: status,
    headers: { 'content-type': contentType, ...headers },
    body: JSON.stringify(body),
  };
}

export function errorResponse(err: unknown): APIGatewayProxyStructuredResultV2 {
  const e = normalizeHttpError(err);
  return jsonResponse(e.status, operationOutcome(e), e.headers, 'application/fhir+json');
}

/** The request body as text (API Gateway may base64-encode it), refusing bodies over `limitBytes`. */
export function bodyText(event: APIGatewayProxyEventV2, limitBytes: number): string {
  const raw = event.body ?? '';
  const bytes = event.isBase64Encoded ? Buffer.from(raw, 'base64') : Buffer.from(raw, 'utf8');
  if (bytes.length > limitBytes) throw payloadTooLarge(limitBytes);
  return bytes.toString('utf8');
}

/** Parses JSON, refusing malformed text and documents nested deeper than `maxDepth`. */
export function parseJsonBody(text: string, maxDepth = 64): unknown {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw badRequest('body is not valid JSON');
  }
  if (depthExceeds(value, maxDepth)) throw badRequest(`JSON nested deeper than ${maxDepth} levels`);
  return value;
}

function depthExceeds(value: unknown, maxDepth: number): boolean {
  const stack: [unknown, number][] = [[value, 1]];
  while (stack.length) {
    const [v, depth] = stack.pop() as [unknown, number];
    if (typeof v !== 'object' || v === null) continue;
    if (depth > maxDepth) return true;
    for (const child of Object.values(v)) stack.push([child, depth + 1]);
  }
  return false;
}

/** Case-insensitive header lookup (API Gateway lower-cases them, local callers may not). */
export function header(event: APIGatewayProxyEventV2, name: string): string | undefined {
  const wanted = name.toLowerCase();
  for (const [k, v] of Object.entries(event.headers)) if (k.toLowerCase() === wanted) return v;
  return undefined;
}
