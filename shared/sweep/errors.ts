/** Errors of the population sweep: one base class, a subclass per failure the caller can act on. */
export class SweepError extends Error {
  override name = 'SweepError';
}

/** The sweep definition (or an item) does not parse. */
export class SweepInputError extends SweepError {
  override name = 'SweepInputError';
}

/** The server has no `$export` (404/405/501 on kick-off): the caller falls back to paged search. */
export class ExportUnsupportedError extends SweepError {
  override name = 'ExportUnsupportedError';
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message);
  }
}

/** The export failed: refused kick-off, failed job, bad manifest. */
export class ExportFailedError extends SweepError {
  override name = 'ExportFailedError';
  constructor(
    message: string,
    readonly status?: number,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** The export did not complete within the sweep's bound on total wait. */
export class ExportTimeoutError extends SweepError {
  override name = 'ExportTimeoutError';
}

/** The paged search did not end within the Search loop's bound on calls. */
export class SearchLimitError extends SweepError {
  override name = 'SearchLimitError';
}

/** A download URL answered 404/410: the files expired; the export must be kicked off again. */
export class ExportExpiredError extends SweepError {
  override name = 'ExportExpiredError';
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message);
  }
}
