/**
 * The `$export` kick-off's `_typeFilter` for a sweep: Observations of the codes its models
 * search for (search-codes.ts: the features' codes and the LOINC panels that carry one of them
 * as a component, such as a blood-pressure panel's diastolic value), and nothing else of that
 * type. The sweep's reader drops every other Observation anyway (the features' prefilter, own
 * writes), so the filter changes no score; it saves the server's export work, the download and
 * the staging of Observations no model reads, among them the system's own score Observations
 * (another code) that an incremental export would otherwise hold for every patient the last
 * sweep scored. A server that refuses `_typeFilter` gets the kick-off again without it
 * (bulk-client.ts).
 */

/** FHIR search escaping of a token's parts (`\`, `,`, `$`, `|` inside a value). */
const escape = (s: string): string => s.replace(/[\\,$|]/g, (c) => `\\${c}`);

/** `system|code` strings → the `_typeFilter` queries (none when no model reads Observations). */
export function exportTypeFilters(codes: readonly string[]): string[] {
  if (codes.length === 0) return [];
  const tokens = codes.map((c) => {
    const bar = c.indexOf('|');
    return bar < 0 ? escape(c) : `${escape(c.slice(0, bar))}|${escape(c.slice(bar + 1))}`;
  });
  return [`Observation?code=${tokens.join(',')}`];
}
