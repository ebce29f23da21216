/**
 * `_typeFilter` for the embedded server's `$export` (Bulk Data 2.0): FHIR search queries, one
 * per `Type?query`, that narrow what is exported of their type. The parameter may repeat and
 * each value may list several queries separated by commas (a comma followed by `Type?`; commas
 * inside a query, as in `code=a,b`, stay with it). Queries of one type are alternatives (OR);
 * the parameters of one query all apply (AND); types without a query are exported whole.
 *
 * Only search filters are accepted: result parameters (`_count`, `_sort`, `_include`,
 * `_elements`, …) and unknown parameters are refused, so a client never gets an export that
 * silently ignored part of its filter (the spec lets a server refuse what it cannot apply).
 */
import type { Filter } from '@medplum/core';
import { Operator, globalSchema, parseSearchRequest } from '@medplum/core';
import { isKnownResourceType } from './validate.js';

/** Type → its alternative filter lists. */
export type TypeFilters = ReadonlyMap<string, readonly (readonly Filter[])[]>;

const SPECIAL = new Set(['_id', '_lastUpdated', '_tag', '_profile', '_security', '_source']);

const OPERATORS = new Set<string>(Object.values(Operator));
/**
 * The modifiers the server applies as FHIR means them (the indexes, or Medplum's matcher);
 * others (`:in`, `:text`, `:of-type`, `:identifier`, `:above`, …) would be applied wrongly.
 */
const MODIFIERS: Readonly<Record<string, (type: string | undefined) => boolean>> = {
  missing: () => true,
  not: (type) => type === 'token',
  exact: (type) => type === 'string',
  contains: (type) => type === 'string',
};
const FHIR_DATE = /^\d{4}(-\d{2}(-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$/;

/** A FHIR date, dateTime or instant whose calendar date exists (2020-02-30 does not). */
function isFhirDate(v: string): boolean {
  if (!FHIR_DATE.test(v)) return false;
  const [y = 0, m = 1, d = 1] = v.slice(0, 10).split('-').map(Number);
  const day = new Date(Date.UTC(y, m - 1, d));
  return day.getUTCFullYear() === y && day.getUTCMonth() === m - 1 && day.getUTCDate() === d;
}

/** What is wrong with one filter of a `_typeFilter` query, if anything (unknown, or a value that cannot match as meant). */
function filterProblem(type: string, f: Filter): string | undefined {
  const param = globalSchema.types[type]?.searchParams?.[f.code];
  if (!param && !SPECIAL.has(f.code)) return `unknown search parameter ${f.code} for ${type}`;
  if (!OPERATORS.has(f.operator)) return `modifier or prefix ${f.operator} of ${f.code} is not supported`;
  if (f.value === '') return `${f.code} has no value`;
  try {
    decodeURIComponent(f.value);
  } catch {
    return `${f.code} is not validly percent-encoded`;
  }
  if (f.operator === Operator.MISSING || f.operator === Operator.PRESENT) {
    return f.value === 'true' || f.value === 'false'
      ? undefined
      : `${f.code}:${f.operator} takes true or false`;
  }
  const kind = f.code === '_lastUpdated' ? 'date' : param?.type;
  const values = f.value.split(',');
  if (kind === 'date' && !values.every(isFhirDate)) {
    return `${f.code} is not a FHIR date`;
  }
  if (
    (kind === 'number' || kind === 'quantity') &&
    !values.every((v) => Number.isFinite(Number(v.split('|')[0])))
  ) {
    return `${f.code} is not a number`;
  }
  return undefined;
}

/** Splits the parameter's values into `Type?query` strings. */
export function splitTypeFilters(values: readonly string[]): string[] {
  return values
    .flatMap((v) => v.split(/(?<!\\),(?=[A-Z][A-Za-z]*\?)/))
    .map((q) => q.trim())
    .filter((q) => q !== '');
}

/** Parses `_typeFilter` values against the export's `_type` list; an error text names the failing query. */
export function parseTypeFilters(
  values: readonly string[],
  types: readonly string[],
): { filters: TypeFilters } | { error: string } {
  const filters = new Map<string, Filter[][]>();
  for (const query of splitTypeFilters(values)) {
    const q = query.indexOf('?');
    const type = q > 0 ? query.slice(0, q) : '';
    if (!type || !isKnownResourceType(type)) return { error: `_typeFilter ${query}: not Type?query` };
    if (!types.includes(type)) return { error: `_typeFilter ${query}: ${type} is not in _type` };
    // Medplum's parser reads an unknown modifier (`code:foo`, `subject:Patient`) as plain
    // equality: refuse it here, before it would silently match something else.
    for (const key of new URLSearchParams(query.slice(q + 1)).keys()) {
      const [name = '', modifier] = key.split(':');
      const paramType = globalSchema.types[type]?.searchParams?.[name]?.type;
      if (modifier !== undefined && !(MODIFIERS[modifier]?.(paramType) ?? false)) {
        return { error: `_typeFilter ${query}: modifier :${modifier} of ${name} is not supported` };
      }
    }
    let parsed: ReturnType<typeof parseSearchRequest>;
    try {
      parsed = parseSearchRequest(query);
    } catch (err) {
      return { error: `_typeFilter ${query}: ${(err as Error).message}` };
    }
    const { filters: list = [], ...rest } = parsed;
    const result = Object.entries(rest).find(
      ([k, v]) => k !== 'resourceType' && (v as unknown) !== undefined,
    );
    if (result) return { error: `_typeFilter ${query}: result parameters are not supported (${result[0]})` };
    if (list.length === 0) return { error: `_typeFilter ${query}: no search parameter` };
    for (const f of list) {
      const problem = filterProblem(type, f);
      if (problem) return { error: `_typeFilter ${query}: ${problem}` };
    }
    filters.set(type, [...(filters.get(type) ?? []), list]);
  }
  return { filters };
}
