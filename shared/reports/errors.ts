/**
 * Errors of the report builder: programming errors only (a malformed patient reference, a
 * score that is not a number, a prediction that does not fit the manifest). Nothing here is
 * about patient data, which the extractors have already vetted.
 */
export class ReportError extends Error {
  override name = 'ReportError';
}

/** The arguments to a builder contradict each other or the FHIR rules. */
export class ReportInputError extends ReportError {
  override name = 'ReportInputError';
}
