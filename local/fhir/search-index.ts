/**
 * Per-resource-type search indexes for the searches this system makes: `identifier`, `subject`,
 * `patient`, `code`, `date` and `_lastUpdated`.
 *
 * Values are extracted with Medplum's own machinery (the search parameter's FHIRPath expression,
 * narrowed to the resource type and parsed once, then `convertToSearchable*`; fast-extract.ts
 * compiles those expressions into direct reads that give the same values), and matched with
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
  toTypedValue,
} from '@medplum/core';
import type { Period, Resource } from '@medplum/fhirtypes';
import { compileSearchExpression, searchableDates, type FastEvaluator } from './fast-extract.js';

/** The search parameter codes that get an index when the resource type defines them. */
export const INDEXED_CODES: readonly string[] = [
  'identifier',
  'subject',
  'patient',
  'code',
  'date',
  '_lastUpdated',
];

export type Kind = 'token' | 'reference' | 'date';

interface ParamSpec {
  readonly code: string;
  readonly kind: Kind;
  readonly ast: FhirPathAtom;
  /** The compiled fast path (fast-extract.ts), null where the expression has none. */
  readonly fast: FastEvaluator | null;
}

/** What one resource holds for one indexed parameter. */
export interface ParamValues {
  /** The expression yielded at least one value (`:missing`, and empty reference filters). */
  readonly present: boolean;
  /** Token keys (see {@link tokenKeys}), reference strings, or periods, by kind. */
  readonly keys?: readonly string[];
  readonly refs?: readonly string[];
  readonly periods?: readonly Period[];
}

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
    list.push({ code, kind: type, ast, fast: compileSearchExpression(ast, resourceType) });
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
export function filterKey(filterValue: string): string | null {
  if (filterValue.includes('|')) {
    const [system, value] = filterValue.split('|').map((x) => x.toLowerCase());
    if (!system && !value) return null;
    if (!system) return 'n\u0000' + (value ?? '');
    if (!value) return 's\u0000' + system;
    return 'sv\u0000' + system + '\u0000' + value;
  }
  return 'v\u0000' + filterValue.toLowerCase();
}

/**
 * How values are extracted: `fast` (the default) takes fast-extract.ts's compiled path where it
 * has one and FHIRPath elsewhere; `fhirpath` is FHIRPath only (the reference the fast path is
 * tested and measured against).
 */
export interface ExtractOptions {
  readonly path?: 'fast' | 'fhirpath';
}

function valuesFor(spec: ParamSpec, typed: TypedValue, options?: ExtractOptions): ParamValues {
  const fast = options?.path !== 'fhirpath';
  const values = (fast ? spec.fast?.(typed) : undefined) ?? evaluate(spec.ast, typed);
  const present = values.length > 0;
  switch (spec.kind) {
    case 'token': {
      const keys = new Set<string>();
      for (const t of convertToSearchableTokens(values)) tokenKeys(t.system, t.value, keys);
      return { present, keys: [...keys] };
    }
    case 'reference':
      return { present, refs: convertToSearchableReferences(values) };
    case 'date': {
      const periods = fast ? searchableDates(values) : convertToSearchableDates(values);
      return { present, periods };
    }
  }
}

/** One indexed parameter's values for a resource, computed on demand. */
export function paramValues(
  resource: Resource,
  code: string,
  options?: ExtractOptions,
): ParamValues | undefined {
  const spec = specsFor(resource.resourceType).find((s) => s.code === code);
  return spec ? valuesFor(spec, toTypedValue(resource), options) : undefined;
}

/** A resource's posting keys (token and reference parameters), `[code, key]`. */
export type PostingKeys = readonly (readonly [string, string])[];

/** A resource's date parameter values (the entry keeps them flattened: `storedDates`); token and reference values live in postings. */
export type DateValues = Readonly<Record<string, ParamValues>>;

/** Extracts what the index keeps of a resource. Throws if the resource cannot be evaluated. */
export function extractForIndex(
  resource: Resource,
  options?: ExtractOptions,
): { dates: DateValues; postings: PostingKeys } {
  const typed = toTypedValue(resource);
  const dates: Record<string, ParamValues> = {};
  const postings: (readonly [string, string])[] = [];
  for (const spec of specsFor(resource.resourceType)) {
    const v = valuesFor(spec, typed, options);
    if (spec.kind === 'date') dates[spec.code] = v;
    for (const key of v.keys ?? v.refs ?? []) postings.push([spec.code, key]);
  }
  return { dates, postings };
}

export function kindOf(resourceType: string, code: string): Kind | undefined {
  return specsFor(resourceType).find((s) => s.code === code)?.kind;
}

/**
 * A date parameter as an entry keeps it: its periods flattened (`[start, end, start, end, …]`,
 * one array of strings instead of an object, a list and an object per period), or the values
 * themselves where that would lose something (an expression that yielded values none of which
 * converted to a period). The sort key is not kept: `_sort` computes it (this system never sorts).
 */
export type StoredDate = readonly string[] | ParamValues;
export type StoredDates = Readonly<Record<string, StoredDate>>;

export function storedDates(dates: DateValues): StoredDates {
  const out: Record<string, StoredDate> = {};
  for (const [code, v] of Object.entries(dates)) {
    out[code] = v.present === (v.periods ?? []).length > 0 ? flatPeriods(v) : v;
  }
  return out;
}

/** Periods flattened: `[start, end, …]`, missing ends as '0000' and '9999' (Medplum's defaults). */
function flatPeriods(v: ParamValues | StoredDate | undefined): readonly string[] {
  if (v === undefined) return [];
  if (Array.isArray(v)) return v as readonly string[];
  const out: string[] = [];
  for (const p of (v as ParamValues).periods ?? []) {
    const start = p.start ?? '0000';
    const end = p.end ?? '9999';
    out.push(start, end === start ? start : end);
  }
  return out;
}

/** Whether a date parameter yielded any value. */
const datePresent = (v: StoredDate | undefined): boolean =>
  v === undefined ? false : Array.isArray(v) ? v.length > 0 : (v as ParamValues).present;

const negated = (op: Operator): boolean => op === Operator.NOT_EQUALS || op === Operator.NOT;

/**
 * A predicate over precomputed values for a filter on an indexed parameter, or undefined when
 * the filter needs Medplum's matcher (modifiers such as `:text`, `:in`, `:above`, `:identifier`).
 */
export function indexedPredicate(
  filter: Filter,
  kind: Kind | undefined,
): ((v: ParamValues | StoredDate | undefined) => boolean) | undefined {
  if (kind === undefined) return undefined;
  const op = filter.operator;
  if (op === Operator.MISSING || op === Operator.PRESENT) {
    const desired =
      (op === Operator.MISSING && filter.value === 'false') ||
      (op === Operator.PRESENT && filter.value === 'true');
    return (v) => desired === datePresent(v);
  }
  const values = splitSearchOnComma(filter.value);
  switch (kind) {
    case 'token': {
      if (op !== Operator.EQUALS && !negated(op)) return undefined;
      const keys = values.map(filterKey);
      const neg = negated(op);
      return (v) =>
        keys.some((k) => k !== null && (v as ParamValues | undefined)?.keys?.includes(k) === true)
          ? !neg
          : neg;
    }
    case 'reference': {
      if (op !== Operator.EQUALS && !negated(op)) return undefined;
      const neg = negated(op);
      return (v) => {
        if (filter.value === '' && !datePresent(v)) return op === Operator.EQUALS;
        const refs = (v as ParamValues | undefined)?.refs ?? [];
        return values.some((fv) => refs.includes(fv)) ? !neg : neg;
      };
    }
    case 'date': {
      const periods = values.map((fv) => toPeriod(fv));
      const neg = negated(op);
      return (v) => {
        const flat = flatPeriods(v);
        for (let i = 0; i < flat.length; i += 2) {
          const rs = flat[i] as string;
          const re = flat[i + 1] as string;
          for (const fp of periods) {
            if (fp && matchesDate(rs, re, op, fp)) return !neg;
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

/** `matchesDateValue` from @medplum/core, over a precomputed period (missing ends: '0000', '9999'). */
function matchesDate(start: string, end: string, operator: Operator, filterPeriod: Period): boolean {
  const op = DATE_OPS[operator];
  return op ? op(start, end, filterPeriod.start ?? '', filterPeriod.end ?? '') : false;
}
