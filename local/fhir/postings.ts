/**
 * Posting lists of one resource type: for each indexed token and reference parameter, the entries
 * (by number) under each key, and the candidates an equality filter starts a search from.
 */
import type { Filter } from '@medplum/core';
import { Operator, splitSearchOnComma } from '@medplum/core';
import type { Kind, PostingKeys } from './search-index.js';
import { filterKey } from './search-index.js';

/**
 * Resources under one key, by their entry's number (`Entry.seq`, unique in the repository and kept
 * across updates), not their id: a set of small integers is hashed and compared without reading
 * strings, and the collector does not trace its members. A lone number is kept inline, which
 * most identifier keys are.
 */
type Posting = number | Set<number>;

/**
 * The entries one filter matches, by number. `size` may over-count a union (it orders the
 * intersection, smallest first); `has` and iteration are exact.
 */
export interface Candidates extends Iterable<number> {
  readonly size: number;
  has(seq: number): boolean;
}

const postingHas = (p: Posting, seq: number): boolean => (typeof p === 'number' ? p === seq : p.has(seq));

/**
 * The union of several postings (`code=a,b,c`) as a view, not a copy: a filter on common codes
 * covers most of the store, and copying it on every search made `subject` + `code` searches
 * grow with the store, although the subject's few ids are all the intersection needs to test.
 */
function postingUnion(postings: readonly Posting[]): Candidates {
  let size = 0;
  for (const p of postings) size += typeof p === 'number' ? 1 : p.size;
  return {
    size,
    has: (seq) => postings.some((p) => postingHas(p, seq)),
    // Each id once. A set of those seen, not a look back at the earlier postings: an export
    // step's `subject=<500 patients>` made that look-back quadratic in the patients per step.
    *[Symbol.iterator]() {
      const seen = new Set<number>();
      for (const p of postings) {
        for (const seq of typeof p === 'number' ? [p] : p) {
          if (seen.has(seq)) continue;
          seen.add(seq);
          yield seq;
        }
      }
    },
  };
}

/** Posting lists of one resource type: parameter code → key → ids. */
export class TypeIndex {
  private readonly postings = new Map<string, Map<string, Posting>>();

  add(seq: number, postings: PostingKeys): void {
    for (const [code, key] of postings) {
      let byKey = this.postings.get(code);
      if (!byKey) this.postings.set(code, (byKey = new Map<string, Posting>()));
      const found = byKey.get(key);
      if (found === undefined) byKey.set(key, seq);
      else if (typeof found === 'number') {
        if (found !== seq) byKey.set(key, new Set([found, seq]));
      } else found.add(seq);
    }
  }

  remove(seq: number, postings: PostingKeys): void {
    for (const [code, key] of postings) {
      const byKey = this.postings.get(code);
      const found = byKey?.get(key);
      if (found === undefined) continue;
      if (typeof found === 'number') {
        if (found === seq) byKey?.delete(key);
        continue;
      }
      found.delete(seq);
      if (found.size === 0) byKey?.delete(key);
      else if (found.size === 1) byKey?.set(key, found.values().next().value as number);
    }
  }

  private lookup(code: string, keys: (string | null)[]): Candidates {
    const byKey = this.postings.get(code);
    const found: Posting[] = [];
    for (const k of keys) {
      const posting = k === null ? undefined : byKey?.get(k);
      if (posting !== undefined) found.push(posting);
    }
    if (found.length === 1 && found[0] instanceof Set) return found[0];
    return postingUnion(found);
  }

  /**
   * The entries matching an equality filter, or undefined when the filter is not answered from the
   * posting lists (other parameters, modifiers, prefixes, an empty reference value). The set
   * may be the index's own: read it before the next write.
   */
  candidates(filter: Filter, kindOf: (code: string) => Kind | undefined): Candidates | undefined {
    if (filter.operator !== Operator.EQUALS) return undefined;
    const kind = kindOf(filter.code);
    if (kind === 'token') return this.lookup(filter.code, splitSearchOnComma(filter.value).map(filterKey));
    if (kind === 'reference' && filter.value !== '') {
      return this.lookup(filter.code, splitSearchOnComma(filter.value));
    }
    return undefined;
  }
}
