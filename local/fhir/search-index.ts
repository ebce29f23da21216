/**
 * Per-resource-type search indexes for the searches this system makes: `identifier`, `subject`,
 * `patient`, `code`, `date`, `_lastUpdated` and `_id`.
 *
 * Values are extracted with Medplum's own machinery (the search parameter's FHIRPath expression,
 * narrowed to the resource type and parsed once, then `convertToSearchable*`), and matched with
 * the same rules as Medplum's `matchesSearchRequest`, so an indexed search returns exactly what
 * the stock scan returns. Token and reference equality filters are answered from posting lists;
 * date filters, negations and `:missing` are checked against the precomputed values.
 */
import type { Filter, FhirPathAtom, TypedValue } from '@medplum/core';
import {
  Operator,
  convertToSearchableDates,
  convertToSearchableReferences,
  convertToSearchableTokens,
  globalSchema,
  parseFhirPath,
  splitSearchOnComma,
  toPeriod,
} from '@medplum/core';
import type { Period } from '@medplum/fhirtypes';

/** The search parameter codes that get an index when the resource type defines them. */
export const INDEXED_CODES: readonly string[] = [
  'identifier',
  'subject',
  'patient',
  'code',
  'date',
  '_lastUpdated',
  '_id',
];

type Kind = 'token' | 'reference' | 'date';

interface ParamSpec {
  readonly code: string;
  readonly kind: Kind;
  readonly ast: FhirPathAtom;
}

/** What one resource holds for one indexed parameter. */
export interface ParamValues {
  /** The expression yielded at least one value (`:missing`, and empty reference filters). */
  readonly present: boolean;
  /** Token keys (see {@link tokenKeys}), reference strings, or periods, by kind. */
  readonly keys?: ReadonlySet<string>;
  readonly refs?: readonly string[];
  readonly periods?: readonly Period[];
  /** `JSON.stringify` of the values, what Medplum's `_sort` compares. */
  readonly sortKey: string;
}

export type IndexedValues = ReadonlyMap<string, ParamValues>;

const astCache = new Map<string, FhirPathAtom | null>();

/**
 * A search parameter's expression narrowed to one resource type: the union branches for other
 * types evaluate to nothing on this type, so dropping them changes no result and saves most of
 * the evaluation time (the shared `date` expression has 17 branches).
 */
export function expressionFor(resourceType: string, code: string): FhirPathAtom | null {
  const cacheKey = resourceType + '\u0000' + code;
  const cached = astCache.get(cacheKey);
  if (cached !== undefined) return cached;
  const expression = globalSchema.types[resourceType]?.searchParams?.[code]?.expression;
  let ast: FhirPathAtom | null = null;
  if (expression) {
    const parts = expression.split(' | ');
    const balanced = parts.every((p) => p.split('(').length === p.split(')').length);
    const kept = balanced
      ? parts.filter((p) => {
          const head = /^\(?([A-Z][A-Za-z]+)\./.exec(p)?.[1];
          return head === undefined || head === resourceType || !(head in globalSchema.types);
        })
      : parts;
    ast = parseFhirPath(kept.length > 0 ? kept.join(' | ') : expression);
  }
  astCache.set(cacheKey, ast);
  return ast;
}

const specCache = new Map<string, readonly ParamSpec[]>();

function specsFor(resourceType: string): readonly ParamSpec[] {
  let specs = specCache.get(resourceType);
  if (specs) return specs;
  const list: ParamSpec[] = [];
  for (const code of INDEXED_CODES) {
    const type = globalSchema.types[resourceType]?.searchParams?.[code]?.type;
    const ast = expressionFor(resourceType, code);
    if (!ast || (type !== 'token' && type !== 'reference' && type !== 'date')) continue;
    list.push({ code, kind: type, ast });
  }
  specs = list;
  specCache.set(resourceType, specs);
  return specs;
}

/** Evaluates a (narrowed) search expression the way `evalFhirPathTyped` does. */
export function evaluate(ast: FhirPathAtom, input: TypedValue): TypedValue[] {
  return ast
    .eval({ variables: {} }, [input])
    .map((v) => ({ type: v.type, value: (v.value as { valueOf(): unknown } | undefined)?.valueOf() }));
}

const low = (s: string | undefined): string | undefined => s?.toLowerCase();

/** Keys under which a token is found; mirrors `matchesTokenValue` in @medplum/core. */
function tokenKeys(system: string | undefined, value: string | undefined, out: Set<string>): void {
  const s = low(system);
  const v = low(value);
  if (v !== undefined) {
    out.add('v\u0000' + v);
    if (!system) out.add('n\u0000' + v);
  }
  if (system && s !== undefined) {
    out.add('s\u0000' + s);
    if (v !== undefined) out.add('sv\u0000' + s + '\u0000' + v);
  }
}

/** The one key a token filter value looks up, or null when it can match nothing. */
function filterKey(filterValue: string): string | null {
  if (filterValue.includes('|')) {
    const [system, value] = filterValue.split('|').map((x) => x.toLowerCase());
    if (!system && !value) return null;
    if (!system) return 'n\u0000' + (value ?? '');
    if (!value) return 's\u0000' + system;
    return 'sv\u0000' + system + '\u0000' + value;
  }
  return 'v\u0000' + filterValue.toLowerCase();
}

/** Extracts the indexed values of a resource. Throws if the resource cannot be evaluated. */
export function extractValues(
  resource: { resourceType: string },
  typed: TypedValue,
): Map<string, ParamValues> {
  const result = new Map<string, ParamValues>();
  for (const spec of specsFor(resource.resourceType)) {
    const values = evaluate(spec.ast, typed);
    const present = values.length > 0;
    const sortKey = JSON.stringify(values.map((v) => v.value as unknown));
    switch (spec.kind) {
      case 'token': {
        const keys = new Set<string>();
        for (const t of convertToSearchableTokens(values)) tokenKeys(t.system, t.value, keys);
        result.set(spec.code, { present, keys, sortKey });
        break;
      }
      case 'reference':
        result.set(spec.code, { present, refs: convertToSearchableReferences(values), sortKey });
        break;
      case 'date':
        result.set(spec.code, { present, periods: convertToSearchableDates(values), sortKey });
        break;
    }
  }
  return result;
}

/** Posting lists of one resource type: parameter code → key → ids. */
export class TypeIndex {
  private readonly postings = new Map<string, Map<string, Set<string>>>();

  add(id: string, values: IndexedValues): void {
    this.each(values, (code, key) => {
      let byKey = this.postings.get(code);
      if (!byKey) this.postings.set(code, (byKey = new Map<string, Set<string>>()));
      let ids = byKey.get(key);
      if (!ids) byKey.set(key, (ids = new Set()));
      ids.add(id);
    });
  }

  remove(id: string, values: IndexedValues): void {
    this.each(values, (code, key) => {
      const byKey = this.postings.get(code);
      const ids = byKey?.get(key);
      if (!ids) return;
      ids.delete(id);
      if (ids.size === 0) byKey?.delete(key);
    });
  }

  private each(values: IndexedValues, fn: (code: string, key: string) => void): void {
    for (const [code, v] of values) {
      if (v.keys) for (const key of v.keys) fn(code, key);
      if (v.refs) for (const ref of v.refs) fn(code, ref);
    }
  }

  /**
   * The ids matching an equality filter, or undefined when the filter is not answered from the
   * posting lists (other parameters, modifiers, prefixes, an empty reference value).
   */
  candidates(filter: Filter, kindOf: (code: string) => Kind | undefined): Set<string> | undefined {
    if (filter.operator !== Operator.EQUALS) return undefined;
    const kind = kindOf(filter.code);
    if (kind === 'token') {
      const out = new Set<string>();
      for (const fv of splitSearchOnComma(filter.value)) {
        const key = filterKey(fv);
        const ids = key === null ? undefined : this.postings.get(filter.code)?.get(key);
        if (ids) for (const id of ids) out.add(id);
      }
      return out;
    }
    if (kind === 'reference' && filter.value !== '') {
      const out = new Set<string>();
      for (const fv of splitSearchOnComma(filter.value)) {
        const ids = this.postings.get(filter.code)?.get(fv);
        if (ids) for (const id of ids) out.add(id);
      }
      return out;
    }
    return undefined;
  }
}

export function kindOf(resourceType: string, code: string): Kind | undefined {
  return specsFor(resourceType).find((s) => s.code === code)?.kind;
}

const negated = (op: Operator): boolean => op === Operator.NOT_EQUALS || op === Operator.NOT;

/**
 * A predicate over precomputed values for a filter on an indexed parameter, or undefined when
 * the filter needs Medplum's matcher (modifiers such as `:text`, `:in`, `:above`, `:identifier`).
 */
export function indexedPredicate(
  filter: Filter,
  kind: Kind | undefined,
): ((v: ParamValues | undefined) => boolean) | undefined {
  if (kind === undefined) return undefined;
  const op = filter.operator;
  if (op === Operator.MISSING || op === Operator.PRESENT) {
    const desired =
      (op === Operator.MISSING && filter.value === 'false') ||
      (op === Operator.PRESENT && filter.value === 'true');
    return (v) => desired === (v?.present ?? false);
  }
  const values = splitSearchOnComma(filter.value);
  switch (kind) {
    case 'token': {
      if (op !== Operator.EQUALS && !negated(op)) return undefined;
      const keys = values.map(filterKey);
      const neg = negated(op);
      return (v) => (keys.some((k) => k !== null && v?.keys?.has(k) === true) ? !neg : neg);
    }
    case 'reference': {
      if (op !== Operator.EQUALS && !negated(op)) return undefined;
      const neg = negated(op);
      return (v) => {
        if (filter.value === '' && !(v?.present ?? false)) return op === Operator.EQUALS;
        const refs = v?.refs ?? [];
        return values.some((fv) => refs.includes(fv)) ? !neg : neg;
      };
    }
    case 'date': {
      const periods = values.map((fv) => toPeriod(fv));
      const neg = negated(op);
      return (v) => {
        for (const rv of v?.periods ?? []) {
          for (const fp of periods) {
            if (fp && matchesDate(rv, op, fp)) return !neg;
          }
        }
        return neg;
      };
    }
  }
}

type DateOp = (resourceStart: string, resourceEnd: string, filterStart: string, filterEnd: string) => boolean;
const overlaps: DateOp = (rs, re, fs, fe) => rs < fe && re > fs;
const DATE_OPS: Partial<Record<Operator, DateOp>> = {
  [Operator.APPROXIMATELY]: overlaps,
  [Operator.EQUALS]: overlaps,
  [Operator.NOT_EQUALS]: overlaps, // negated by the caller
  [Operator.LESS_THAN]: (rs, _re, fs) => rs < fs,
  [Operator.GREATER_THAN]: (_rs, re, _fs, fe) => re > fe,
  [Operator.LESS_THAN_OR_EQUALS]: (rs, _re, _fs, fe) => rs <= fe,
  [Operator.GREATER_THAN_OR_EQUALS]: (_rs, re, fs) => re >= fs,
  [Operator.STARTS_AFTER]: (rs, _re, _fs, fe) => rs > fe,
  [Operator.ENDS_BEFORE]: (_rs, re, fs) => re < fs,
};

/** `matchesDateValue` from @medplum/core, over a precomputed period. */
function matchesDate(resourceValue: Period, operator: Operator, filterPeriod: Period): boolean {
  const op = DATE_OPS[operator];
  return op
    ? op(
        resourceValue.start ?? '0000',
        resourceValue.end ?? '9999',
        filterPeriod.start ?? '',
        filterPeriod.end ?? '',
      )
    : false;
}
