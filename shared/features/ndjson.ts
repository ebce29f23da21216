/**
 * A text prefilter for NDJSON lines (Bulk export, the sweep path): decides from the line's text
 * alone, before `JSON.parse`, that a line cannot feed any compiled extractor, so it need not be
 * parsed at all.
 *
 * A line is skipped only when all of these hold, which together prove the extractors would
 * take nothing from it:
 * - it starts with `{"resourceType":"Observation"` and names `"resourceType"` nowhere else (so
 *   it is one Observation: no contained resources, no duplicate key that could change its type);
 *   Patient, ImagingStudy and every other line are always kept;
 * - it holds no backslash: without escapes the JSON text of every string is the string itself,
 *   so a coding whose `code` is `2345-7` puts `"2345-7"` literally in the line;
 * - none of the extractors' code values appears as a JSON string (`"2345-7"`), and no `"code"`
 *   key has a number, boolean, null or array value (the matcher reads such a code through
 *   `String()`, so `12345` would match a manifest code `"12345"`).
 *
 * A code appearing only in a `display` or `text` is kept (the test is textual, a false keep
 * costs one parse, never a wrong row). An Observation line that is skipped would have fed no
 * feature; the one thing lost is the `code:missing` entry an extractor lists in `skipped` for an
 * Observation without any coding. A malformed line that starts like an Observation and names
 * none of the codes is skipped rather than reported as malformed.
 */
import type { Observation, Patient } from '@medplum/fhirtypes';

/** What an extractor tells the prefilter: the bare code values its features match. */
export interface CodeValues {
  readonly codeValues: readonly string[];
}

export interface NdjsonPrefilter {
  /** Whether `line` certainly feeds no feature of the extractors: skip it without parsing. */
  canSkip(line: string): boolean;
  /** Lines `canSkip` has answered `true` for so far. */
  readonly skipped: number;
}

const OBSERVATION_PREFIX = '{"resourceType":"Observation"';

const escapeRegExp = (s: string): string => s.replace(/[.*+?^${}()|[\]\\/-]/g, '\\$&');

/**
 * The prefilter for lines read by any of `extractors` (every tabular or sequence extractor the
 * lines will be given to). With no code at all, every plain Observation line is skippable.
 */
export function createNdjsonPrefilter(extractors: readonly CodeValues[]): NdjsonPrefilter {
  const codes = new Set<string>();
  for (const e of extractors) for (const c of e.codeValues) codes.add(c);
  // After a quote: what makes a line worth parsing. (One leading `"` for all of them lets the
  // regular expression engine scan for two characters only.)
  const afterQuote = [
    'resourceType"', // a second resource in the line (contained) or a duplicate key
    // a `code` that is not a string: `String()` of a number, boolean, null or array could match
    'code"[ \\t\\r]*:[ \\t\\r]*[-0-9tfn[]',
  ];
  for (const code of codes) {
    const json = JSON.stringify(code);
    // A code whose JSON form needs an escape can only appear in a line with a backslash.
    if (!json.includes('\\')) afterQuote.push(escapeRegExp(json.slice(1)));
    // `String({})`: an object-valued `code` would match; keep every line with one.
    if (code === '[object Object]') afterQuote.push('code"[ \\t\\r]*:[ \\t\\r]*\\{');
  }
  // Any backslash: an escape could hide a code or a key.
  const keep = new RegExp(`\\\\|"(?:${afterQuote.join('|')})`, 'g');
  let skipped = 0;
  return {
    canSkip(line: string): boolean {
      if (!line.startsWith(OBSERVATION_PREFIX)) return false;
      keep.lastIndex = OBSERVATION_PREFIX.length;
      if (keep.test(line)) return false;
      skipped++;
      return true;
    },
    get skipped() {
      return skipped;
    },
  };
}

/** What `parseNdjsonLines` found in one patient's lines. */
export interface ParsedLines {
  readonly patient: Patient | undefined;
  readonly observations: Observation[];
  /** Lines that did not parse as a JSON object with a `resourceType`. */
  readonly malformed: number;
}

/**
 * Parses the lines `prefilter` keeps and sorts them into the (last) Patient and the
 * Observations; other resource types are left out, as the extractors would ignore them.
 */
export function parseNdjsonLines(lines: Iterable<string>, prefilter?: NdjsonPrefilter): ParsedLines {
  let patient: Patient | undefined;
  const observations: Observation[] = [];
  let malformed = 0;
  for (const line of lines) {
    if (prefilter?.canSkip(line) === true) continue;
    let parsed: unknown;
    try {
      parsed = JSON.parse(line);
    } catch {
      malformed++;
      continue;
    }
    const type =
      typeof parsed === 'object' && parsed !== null
        ? (parsed as { resourceType?: unknown }).resourceType
        : undefined;
    if (type === 'Observation') observations.push(parsed as Observation);
    else if (type === 'Patient') patient = parsed as Patient;
    else if (typeof type !== 'string') malformed++;
  }
  return { patient, observations, malformed };
}
