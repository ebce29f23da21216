/**
 * One error hierarchy for the inference path. Each SageMaker Runtime InvokeEndpoint error
 * class (PROTOCOLS.md) has a subclass with `code` = the SageMaker code and `retryable` as
 * the SDK's standard retry strategy treats it, plus timeouts, an open circuit, a response
 * that does not decode, and network failures. `toInferenceError` maps anything thrown by
 * the SDK (by `name`, then by `$metadata.httpStatusCode`) into this hierarchy.
 */
import { CodecError } from './codec.js';
import { TensorError } from './tensor.js';

export interface InferenceErrorOptions {
  cause?: unknown;
  /** HTTP status of the response, when there was one. */
  httpStatusCode?: number;
  /** `x-amzn-RequestId`, when there was one. */
  requestId?: string;
}

export class InferenceError extends Error {
  override name = 'InferenceError';
  /** The SageMaker error code (`ThrottlingException`, …) or one of ours (`Timeout`, `CircuitOpen`, …). */
  readonly code: string;
  /** Whether trying again later may succeed. */
  readonly retryable: boolean;
  readonly httpStatusCode: number | undefined;
  readonly requestId: string | undefined;

  constructor(code: string, retryable: boolean, message: string, opts: InferenceErrorOptions = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.code = code;
    this.retryable = retryable;
    this.httpStatusCode = opts.httpStatusCode;
    this.requestId = opts.requestId;
  }
}

/** 400: the request is wrong (unknown endpoint, payload too large, bad headers). */
export class InferenceValidationError extends InferenceError {
  override name = 'InferenceValidationError';
  constructor(message: string, opts?: InferenceErrorOptions) {
    super('ValidationError', false, message, opts);
  }
}

export interface ModelErrorDetails {
  /** The status the model container answered (Triton: 400 for a bad tensor). */
  originalStatusCode?: number;
  /** The container's own message (Triton: `{"error": "..."}`). */
  originalMessage?: string;
  logStreamArn?: string;
}

/** 424: the model container answered an error. */
export class InferenceModelError extends InferenceError {
  override name = 'InferenceModelError';
  readonly originalStatusCode: number | undefined;
  readonly originalMessage: string | undefined;
  readonly logStreamArn: string | undefined;
  constructor(message: string, details: ModelErrorDetails = {}, opts?: InferenceErrorOptions) {
    super('ModelError', false, message, opts);
    this.originalStatusCode = details.originalStatusCode;
    this.originalMessage = details.originalMessage;
    this.logStreamArn = details.logStreamArn;
  }
}

/** 429: the model is not loaded yet (multi-model endpoints). */
export class InferenceModelNotReadyError extends InferenceError {
  override name = 'InferenceModelNotReadyError';
  constructor(message: string, opts?: InferenceErrorOptions) {
    super('ModelNotReadyException', true, message, opts);
  }
}

/** 400 with `ThrottlingException`: too many requests. */
export class InferenceThrottlingError extends InferenceError {
  override name = 'InferenceThrottlingError';
  constructor(message: string, opts?: InferenceErrorOptions) {
    super('ThrottlingException', true, message, opts);
  }
}

/** 500. */
export class InferenceInternalFailureError extends InferenceError {
  override name = 'InferenceInternalFailureError';
  constructor(message: string, opts?: InferenceErrorOptions) {
    super('InternalFailure', true, message, opts);
  }
}

/** 503 (also 502/504 from a proxy). */
export class InferenceServiceUnavailableError extends InferenceError {
  override name = 'InferenceServiceUnavailableError';
  constructor(message: string, opts?: InferenceErrorOptions) {
    super('ServiceUnavailable', true, message, opts);
  }
}

/** 530: a dependency of SageMaker failed (KMS, …). */
export class InferenceInternalDependencyError extends InferenceError {
  override name = 'InferenceInternalDependencyError';
  constructor(message: string, opts?: InferenceErrorOptions) {
    super('InternalDependencyException', false, message, opts);
  }
}

/** The call, retries included, ran past its time limit and was aborted. */
export class InferenceTimeoutError extends InferenceError {
  override name = 'InferenceTimeoutError';
  readonly timeoutMs: number | undefined;
  constructor(message: string, timeoutMs?: number, opts?: InferenceErrorOptions) {
    super('Timeout', true, message, opts);
    this.timeoutMs = timeoutMs;
  }
}

/** A circuit breaker refused the call without sending it; retry after `retryAfterMs`. */
export class CircuitOpenError extends InferenceError {
  override name = 'CircuitOpenError';
  readonly retryAfterMs: number;
  constructor(message: string, retryAfterMs: number, opts?: InferenceErrorOptions) {
    super('CircuitOpen', true, message, opts);
    this.retryAfterMs = retryAfterMs;
  }
}

/** The endpoint answered 200 but the body does not decode, or lacks what the manifest names. */
export class InferenceProtocolError extends InferenceError {
  override name = 'InferenceProtocolError';
  constructor(message: string, opts?: InferenceErrorOptions) {
    super('ProtocolError', false, message, opts);
  }
}

/** The request never got an answer (connection refused or reset, DNS). */
export class InferenceNetworkError extends InferenceError {
  override name = 'InferenceNetworkError';
  constructor(message: string, opts?: InferenceErrorOptions) {
    super('NetworkError', true, message, opts);
  }
}

/** Anything else. */
export class InferenceUnknownError extends InferenceError {
  override name = 'InferenceUnknownError';
  constructor(code: string, message: string, opts?: InferenceErrorOptions) {
    super(code, false, message, opts);
  }
}

const NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
]);

const THROTTLING_NAMES = new Set(['ThrottlingException', 'Throttling', 'TooManyRequestsException']);

interface SdkErrorLike {
  name?: unknown;
  message?: unknown;
  code?: unknown;
  Message?: unknown;
  OriginalStatusCode?: unknown;
  OriginalMessage?: unknown;
  LogStreamArn?: unknown;
  $metadata?: { httpStatusCode?: unknown; requestId?: unknown };
}

const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined);
const num = (v: unknown): number | undefined => (typeof v === 'number' ? v : undefined);

/**
 * Maps anything thrown while invoking an endpoint into the hierarchy. An InferenceError is
 * returned as is; SDK service exceptions map by `name`, then by HTTP status; `AbortError` and
 * `TimeoutError` become timeouts; codec errors become protocol errors.
 */
export function toInferenceError(err: unknown, context: { timeoutMs?: number } = {}): InferenceError {
  if (err instanceof InferenceError) return err;
  if (err instanceof CodecError || err instanceof TensorError) {
    return new InferenceProtocolError(err.message, { cause: err });
  }
  if (typeof err !== 'object' || err === null) {
    return new InferenceUnknownError('Unknown', `non-error thrown: ${typeof err}`, { cause: err });
  }
  const e = err as SdkErrorLike;
  const name = str(e.name) ?? 'Error';
  const message = str(e.message) ?? str(e.Message) ?? name;
  const status = num(e.$metadata?.httpStatusCode);
  const requestId = str(e.$metadata?.requestId);
  const opts: InferenceErrorOptions = {
    cause: err,
    ...(status !== undefined ? { httpStatusCode: status } : {}),
    ...(requestId !== undefined ? { requestId } : {}),
  };
  const modelError = (): InferenceModelError => {
    const details: ModelErrorDetails = {};
    const osc = num(e.OriginalStatusCode);
    const om = str(e.OriginalMessage);
    const arn = str(e.LogStreamArn);
    if (osc !== undefined) details.originalStatusCode = osc;
    if (om !== undefined) details.originalMessage = om;
    if (arn !== undefined) details.logStreamArn = arn;
    return new InferenceModelError(message, details, opts);
  };

  switch (name) {
    case 'ValidationError':
      return new InferenceValidationError(message, opts);
    case 'ModelError':
      return modelError();
    case 'ModelNotReadyException':
      return new InferenceModelNotReadyError(message, opts);
    case 'InternalFailure':
      return new InferenceInternalFailureError(message, opts);
    case 'ServiceUnavailable':
      return new InferenceServiceUnavailableError(message, opts);
    case 'InternalDependencyException':
      return new InferenceInternalDependencyError(message, opts);
    case 'AbortError':
    case 'TimeoutError':
      return new InferenceTimeoutError(
        context.timeoutMs !== undefined ? `invocation timed out after ${context.timeoutMs} ms` : message,
        context.timeoutMs,
        opts,
      );
  }
  if (THROTTLING_NAMES.has(name)) return new InferenceThrottlingError(message, opts);
  const code = str(e.code);
  if (code !== undefined && NETWORK_CODES.has(code)) return new InferenceNetworkError(message, opts);

  switch (status) {
    case 400:
      return new InferenceValidationError(message, opts);
    case 424:
      return modelError();
    case 429:
      return new InferenceModelNotReadyError(message, opts);
    case 500:
      return new InferenceInternalFailureError(message, opts);
    case 502:
    case 503:
    case 504:
      return new InferenceServiceUnavailableError(message, opts);
    case 530:
      return new InferenceInternalDependencyError(message, opts);
    case undefined:
    default:
      return new InferenceUnknownError(name, message, opts);
  }
}
