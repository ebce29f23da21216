/** Reading the server's answer to a write-back transaction. */
import type { Bundle } from '@medplum/fhirtypes';

export interface WrittenReport {
  /** The server created the report (201); false when the conditional create matched one (200). */
  readonly created: boolean;
  /** The report's id on the server, when the response names it. */
  readonly id?: string;
}

/** The DiagnosticReport's entry of a transaction response, matched by position to the request. */
export function writtenReport(request: Bundle, response: Bundle): WrittenReport {
  const index = request.entry?.findIndex((e) => e.resource?.resourceType === 'DiagnosticReport') ?? -1;
  const entry = index >= 0 ? response.entry?.[index] : undefined;
  const match = /DiagnosticReport\/([A-Za-z0-9\-.]{1,64})/.exec(entry?.response?.location ?? '');
  const id = match?.[1] ?? entry?.resource?.id;
  return { created: (entry?.response?.status ?? '').startsWith('201'), ...(id ? { id } : {}) };
}
