/**
 * Downstream failures → HTTP answers that name the failing dependency, never its message
 * (which may echo data): the model endpoint, the FHIR server, or a report builder refusal.
 */
import { FhirRequestError, FhirUnavailableError } from '../fhir/errors.js';
import { HttpError } from '../http.js';
import {
  InferenceError,
  InferenceModelNotReadyError,
  InferenceServiceUnavailableError,
  InferenceThrottlingError,
  InferenceTimeoutError,
} from '../inference/errors.js';
import { ReportInputError } from '../reports/index.js';

export function toHttpError(err: unknown): HttpError {
  if (err instanceof HttpError) return err;
  if (
    err instanceof InferenceThrottlingError ||
    err instanceof InferenceModelNotReadyError ||
    err instanceof InferenceServiceUnavailableError ||
    err instanceof InferenceTimeoutError
  ) {
    return new HttpError(503, 'transient', 'the model endpoint is busy or unavailable; try again', {
      headers: { 'retry-after': '1' },
      cause: err,
    });
  }
  if (err instanceof InferenceError) {
    return new HttpError(502, 'exception', 'the model endpoint failed', { cause: err });
  }
  if (err instanceof FhirUnavailableError) {
    return new HttpError(503, 'transient', 'the FHIR server is unavailable; try again', {
      headers: { 'retry-after': '1' },
      cause: err,
    });
  }
  if (err instanceof FhirRequestError) {
    return new HttpError(
      502,
      'exception',
      `the FHIR server refused the request (status ${err.status ?? 'none'})`,
      {
        cause: err,
      },
    );
  }
  if (err instanceof ReportInputError) {
    return new HttpError(422, 'processing', 'the prediction could not be turned into a report', {
      cause: err,
    });
  }
  return new HttpError(500, 'exception', 'internal error', { cause: err });
}
