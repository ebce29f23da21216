/**
 * The search itself, over one resource type's entries: candidates from the posting lists
 * (intersected, smallest first), the remaining filters checked per resource (precomputed or
 * on-demand values for indexed parameters, Medplum's `matchesSearchRequest` for the rest),
 * insertion order, then `_sort` exactly as `MemoryRepository` applies it.
 */
import type { SearchRequest, WithId } from '@medplum/core';
import { matchesSearchRequest, toTypedValue } from '@medplum/core';
import type { Resource } from '@medplum/fhirtypes';
import type { Candidates, TypeIndex } from './postings.js';
import type { StoredDates } from './search-index.js';
import { evaluate, expressionFor, indexedPredicate, kindOf, paramValues } from './search-index.js';

/** One stored resource. */
export interface Entry {
  readonly resource: WithId<Resource>;
  /** Insertion order, kept across updates (the order MemoryRepository's Map keeps). */
  readonly seq: number;
  /** Date parameter values; token and reference values are in the posting lists. */
  readonly dates: StoredDates;
}

const collator = new Intl.Collator();

export function findEntries(
  entries: ReadonlyMap<string, Entry> | undefined,
  /** An entry by its number (`seq`), for the posting lists' candidates. */
  entryAt: (seq: number) => Entry | undefined,
  index: TypeIndex | undefined,
  searchRequest: SearchRequest,
): { matched: Entry[]; indexed: boolean } {
  const { resourceType } = searchRequest;
  const filters = searchRequest.filters ?? [];
  const kind = (code: string): ReturnType<typeof kindOf> => kindOf(resourceType, code);

  const sets: Candidates[] = [];
  const checks: ((e: Entry) => boolean)[] = [];
  for (const filter of filters) {
    const ids = index?.candidates(filter, kind);
    if (ids) {
      sets.push(ids);
      continue;
    }
    const predicate = indexedPredicate(filter, kind(filter.code));
    if (predicate) {
      const code = filter.code;
      checks.push((e) => predicate(e.dates[code] ?? paramValues(e.resource, code)));
    } else {
      const single: SearchRequest = { resourceType, filters: [filter] };
      checks.push((e) => matchesSearchRequest(e.resource, single));
    }
  }
  const matched: Entry[] = [];
  if (entries && sets.length > 0) {
    sets.sort((a, b) => a.size - b.size);
    const [smallest, ...others] = sets as [Candidates, ...Candidates[]];
    for (const seq of smallest) {
      if (!others.every((s) => s.has(seq))) continue;
      const e = entryAt(seq);
      if (e && checks.every((c) => c(e))) matched.push(e);
    }
  } else if (entries) {
    for (const e of entries.values()) if (checks.every((c) => c(e))) matched.push(e);
  }
  matched.sort((a, b) => a.seq - b.seq);
  sortEntries(resourceType, matched, searchRequest.sortRules ?? []);
  return { matched, indexed: sets.length > 0 || filters.some((f) => kind(f.code) !== undefined) };
}

/** `_sort` as MemoryRepository does it: one stable sort per rule, in order, on the JSON of the values. */
function sortEntries(
  resourceType: string,
  list: Entry[],
  rules: NonNullable<SearchRequest['sortRules']>,
): void {
  for (const rule of rules) {
    const ast = expressionFor(resourceType, rule.code);
    if (!ast) continue;
    const keys = new Map<Entry, string>();
    for (const e of list) {
      keys.set(e, JSON.stringify(evaluate(ast, toTypedValue(e.resource)).map((v) => v.value as unknown)));
    }
    const sign = rule.descending ? -1 : 1;
    list.sort((a, b) => collator.compare(keys.get(a) ?? '', keys.get(b) ?? '') * sign);
  }
}
