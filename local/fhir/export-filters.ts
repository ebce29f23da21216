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
import { globalSchema, parseSearchRequest } from '@medplum/core';
import { isKnownResourceType } from './validate.js';

/** Type → its alternative filter lists. */
export type TypeFilters = ReadonlyMap<string, readonly (readonly Filter[])[]>;

const SPECIAL = new Set(['_id', '_lastUpdated', '_tag', '_profile', '_security', '_source']);

/** Splits the parameter's values into `Type?query` strings. */
export function splitTypeFilters(values: readonly string[]): string[] {
  return values
    .flatMap((v) => v.split(/,(?=[A-Z][A-Za-z]*\?)/))
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
    const params = globalSchema.types[type]?.searchParams ?? {};
    const unknown = list.find((f) => !SPECIAL.has(f.code) && !(f.code in params));
    if (unknown)
      return { error: `_typeFilter ${query}: unknown search parameter ${unknown.code} for ${type}` };
    filters.set(type, [...(filters.get(type) ?? []), list]);
  }
  return { filters };
}
