/**
 * The SageMaker Runtime error contract of the local endpoint server (PROTOCOLS.md): codes,
 * HTTP statuses, and the error a handler throws to answer one.
 */

/** SageMaker's limit on a request (and response) body. */
export const MAX_PAYLOAD_BYTES = 6_291_456;

export type SageMakerErrorCode =
  | 'ValidationError'
  | 'ModelError'
  | 'ModelNotReadyException'
  | 'ThrottlingException'
  | 'InternalFailure'
  | 'ServiceUnavailable'
  | 'InternalDependencyException';

export const STATUS: Record<SageMakerErrorCode, number> = {
  ValidationError: 400,
  ModelError: 424,
  ModelNotReadyException: 429,
  ThrottlingException: 400,
  InternalFailure: 500,
  ServiceUnavailable: 503,
  InternalDependencyException: 530,
};

export class SageMakerError extends Error {
  constructor(
    readonly code: SageMakerErrorCode,
    message: string,
    readonly extra: Record<string, unknown> = {},
  ) {
    super(message);
  }
}
