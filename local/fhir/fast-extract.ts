/**
 * A fast path for the search index's extraction (`search-index.ts`): a search parameter's
 * narrowed FHIRPath expression compiled into direct property reads, for the shapes the indexed
 * codes have (dotted paths, choice elements, `.where(resolve() is X)`, `a | b`, `as X`).
 *
 * Each step mirrors what Medplum's atoms do (`SymbolAtom` → `getTypedPropertyValueWithSchema`,
 * `UnionAtom` → `removeDuplicates`, `AsAtom` → `ofType`, `resolve()` then `is`), with the element
 * definitions looked up once at compile time instead of on every read. Whatever a step cannot be
 * sure gives the same answer (a primitive extension such as `_effectiveDateTime`, an array where
 * an element is expected, a reference with an inline `resource`, an error) gives `undefined`:
 * the caller then evaluates that parameter with FHIRPath. An expression of another shape is not
 * compiled at all. test/unit/fast-extract.test.ts checks both paths agree on every corpus
 * resource and on hand-made edge cases.
 */
import type { Atom, FhirPathAtom as FhirPathAtomType, TypedValue } from '@medplum/core';
import {
  AsAtom,
  DotAtom,
  FhirPathAtom,
  FunctionAtom,
  IsAtom,
  SymbolAtom,
  UnionAtom,
  capitalize,
  getElementDefinition,
  isEmpty,
  isResourceType,
  removeDuplicates,
  toPeriod,
} from '@medplum/core';
import type { Period } from '@medplum/fhirtypes';

/** One compiled atom: the collection it yields, or undefined when FHIRPath must decide. */
type Step = (input: readonly TypedValue[]) => TypedValue[] | undefined;

interface Compiled {
  readonly step: Step;
  /** The type of every value the step yields, when it is one type (not a choice, not mixed). */
  readonly type: string | undefined;
}

/** Types `fhirPathIs` treats specially (they are not matched on the type name). */
const SPECIAL_IS_TYPES = new Set([
  'Boolean',
  'Decimal',
  'Integer',
  'Date',
  'DateTime',
  'Time',
  'Period',
  'Quantity',
]);
/** Element types whose `TypedValue.type` is not the element's own type code. */
const DYNAMIC_TYPES = new Set(['Resource', 'Element', 'BackboneElement']);

/** A resource type `is` matches by name (`fhirPathIs` compares the name for these). */
const isPlainResourceType = (name: string): boolean => isResourceType(name) && !SPECIAL_IS_TYPES.has(name);

/**
 * A property read (`SymbolAtom` on a typed value): the candidates of the element in the order
 * of its types, as `getTypedPropertyValueWithSchema` tries them.
 */
function compileProperty(inType: string, name: string): Compiled | null {
  if (name.startsWith('%') || name.startsWith('$') || name in Object.prototype) return null;
  const element = getElementDefinition(inType, name);
  const types = element?.type ?? [];
  if (!element || types.length === 0 || types.some((t) => DYNAMIC_TYPES.has(t.code))) return null;
  const last = element.path.substring(element.path.lastIndexOf('.') + 1);
  const candidates = types.map((t) => ({ key: last.replace('[x]', capitalize(t.code)), type: t.code }));
  const step: Step = (input) => {
    const out: TypedValue[] = [];
    for (const tv of input) {
      const obj = tv.value as Record<string, unknown> | null | undefined;
      if (!obj || typeof obj !== 'object') continue; // SymbolAtom: nothing from a primitive
      if (Array.isArray(obj) || obj.resourceType === name) return undefined;
      let value: unknown;
      let type = '';
      for (const c of candidates) {
        if (obj['_' + c.key] !== undefined) return undefined; // primitive extension
        value = obj[c.key];
        if (value !== undefined) {
          type = c.type;
          break;
        }
      }
      if (isEmpty(value)) continue;
      if (Array.isArray(value)) {
        for (const v of value as unknown[]) if (v !== undefined) out.push({ type, value: v });
      } else out.push({ type, value });
    }
    return out;
  };
  return { step, type: candidates.length === 1 ? candidates[0]?.type : undefined };
}

/**
 * The resource type `resolve()` gives a reference value, as Medplum's `resolve` computes it
 * (`Patient/1`, `Patient/1/_history/2` and `Patient?identifier=…` are Patient; absolute URLs,
 * `urn:uuid:` and `#contained` resolve to nothing); null when unsure (inline `resource`, odd
 * shapes): FHIRPath decides.
 */
function resolvedType(value: unknown): string | undefined | null {
  let ref: string | undefined;
  if (typeof value === 'string') ref = value;
  else if (typeof value === 'object') {
    if (value === null || Array.isArray(value)) return null;
    const r = value as Record<string, unknown>;
    if (r.resource !== undefined) return null;
    if (r.reference) {
      if (typeof r.reference !== 'string') return null;
      ref = r.reference;
    } else if (r.type && r.identifier) {
      const id = r.identifier as Record<string, unknown>;
      if (typeof r.type !== 'string' || typeof id !== 'object' || Array.isArray(id)) return null;
      if (!['string', 'undefined'].includes(typeof id.system)) return null;
      if (!['string', 'undefined'].includes(typeof id.value)) return null;
      ref = `${r.type}?identifier=`;
    }
  }
  if (ref === undefined) return undefined;
  if (ref.includes('?')) return ref.split('?')[0];
  if (ref.includes('/')) return ref.split('/')[0];
  return undefined;
}

/** `where(resolve() is X)` for a resource type X, or null for any other `where`. */
function compileWhereResolveIs(fn: FunctionAtom, inType: string | undefined): Compiled | null {
  const criteria = fn.args[0];
  if (fn.name !== 'where' || fn.args.length !== 1 || !(criteria instanceof IsAtom)) return null;
  const { left, right } = criteria;
  if (!(left instanceof FunctionAtom) || left.name !== 'resolve' || left.args.length !== 0) return null;
  if (!(right instanceof SymbolAtom) || !isPlainResourceType(right.name)) return null;
  const wanted = right.name;
  const step: Step = (input) => {
    const out: TypedValue[] = [];
    for (const tv of input) {
      const type = resolvedType(tv.value);
      if (type === null) return undefined;
      if (type === wanted) out.push(tv);
    }
    return out;
  };
  return { step, type: inType };
}

function compileAtom(atom: Atom, inType: string | undefined, root: string | undefined): Compiled | null {
  if (atom instanceof SymbolAtom) {
    // The first name of the path is the resource itself (`isResource(input, name)`).
    if (root !== undefined && atom.name === root) return { step: (input) => [...input], type: root };
    return inType === undefined ? null : compileProperty(inType, atom.name);
  }
  if (atom instanceof DotAtom) {
    const left = compileAtom(atom.left, inType, root);
    const right = left && compileAtom(atom.right, left.type, undefined);
    if (!left || !right) return null;
    return { step: (input) => then(left.step(input), right.step), type: right.type };
  }
  if (atom instanceof UnionAtom) {
    const left = compileAtom(atom.left, inType, root);
    const right = compileAtom(atom.right, inType, root);
    if (!left || !right) return null;
    const step: Step = (input) => {
      const a = left.step(input);
      const b = a && right.step(input);
      return b && removeDuplicates([...a, ...b]);
    };
    return { step, type: left.type === right.type ? left.type : undefined };
  }
  if (atom instanceof AsAtom) {
    const left = compileAtom(atom.left, inType, root);
    if (!left || !(atom.right instanceof SymbolAtom)) return null;
    const wanted = atom.right.name;
    return { step: (input) => left.step(input)?.filter((e) => e.type === wanted), type: wanted };
  }
  if (atom instanceof FunctionAtom) return compileWhereResolveIs(atom, inType);
  return null;
}

const then = (values: TypedValue[] | undefined, step: Step): TypedValue[] | undefined =>
  values && step(values);

/** A compiled expression: the resource type its path starts from, and its step. */
interface Evaluator {
  readonly resourceType: string;
  readonly step: Step;
}

/** Compiled expressions by parsed expression (one per resource type and code, see `expressionFor`). */
const compiledCache = new WeakMap<FhirPathAtomType, Map<string, Evaluator | null>>();

/** Compiles a narrowed search expression for one resource type; null if it has another shape. */
export function compileSearchExpression(ast: FhirPathAtomType, resourceType: string): Evaluator | null {
  let byType = compiledCache.get(ast);
  if (!byType) compiledCache.set(ast, (byType = new Map<string, Evaluator | null>()));
  const cached = byType.get(resourceType);
  if (cached !== undefined) return cached;
  const compiled =
    ast instanceof FhirPathAtom && isPlainResourceType(resourceType)
      ? compileAtom(ast.child, undefined, resourceType)
      : null;
  const evaluator = compiled ? { resourceType, step: compiled.step } : null;
  byType.set(resourceType, evaluator);
  return evaluator;
}

/**
 * What `evaluate(ast, typed)` in search-index.ts returns, without FHIRPath; undefined when the
 * expression has no fast path or this resource needs FHIRPath for it.
 */
export function fastEvaluate(ast: FhirPathAtomType, typed: TypedValue): TypedValue[] | undefined {
  const resource = typed.value as { resourceType?: unknown } | null | undefined;
  if (!resource || typeof resource !== 'object' || resource.resourceType !== typed.type) return undefined;
  const evaluator = compileSearchExpression(ast, typed.type);
  if (!evaluator) return undefined;
  try {
    return evaluator
      .step([typed])
      ?.map((v) => ({ type: v.type, value: (v.value as { valueOf(): unknown } | undefined)?.valueOf() }));
  } catch {
    return undefined; // FHIRPath decides (and reports) what the fast path did not expect
  }
}

const START_FILL = 'T00:00:00.000';
const END_FILL = 'T23:59:59.999';
const CANONICAL = /^(\d{4})-(\d\d)-(\d\d)(?:T([01]\d|2[0-3]):([0-5]\d):([0-5]\d)(\.\d{3})?Z)?$/;
const DAYS_IN_MONTH = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

/**
 * The instant `toPeriod` makes of a date or UTC date-time string (`new Date(...).toISOString()`
 * of the string filled out), when the string is a real calendar date in one of the forms
 * `YYYY-MM-DD`, `YYYY-MM-DDThh:mm:ssZ`, `YYYY-MM-DDThh:mm:ss.sssZ`: then the filled-out string
 * is already what `toISOString` returns. Undefined for anything else.
 */
function canonicalInstant(s: string, fill: string): string | undefined {
  const m = CANONICAL.exec(s);
  if (!m) return undefined;
  const year = Number(m[1]);
  const month = Number(m[2]);
  const day = Number(m[3]);
  if (year < 1 || month < 1 || month > 12 || day < 1) return undefined;
  const leap = year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0);
  if (day > (month === 2 && leap ? 29 : (DAYS_IN_MONTH[month - 1] ?? 0))) return undefined;
  if (m[4] === undefined) return s + fill + 'Z';
  return m[7] === undefined ? s.slice(0, 19) + fill.slice(9) + 'Z' : s;
}

/** `toPeriod` from @medplum/core, without `Date` for canonical dates and UTC date-times. */
export function periodOf(input: unknown): Period | undefined {
  if (typeof input === 'string') {
    const start = canonicalInstant(input, START_FILL);
    const end = start && canonicalInstant(input, END_FILL);
    if (start && end) return { start, end };
  } else if (input && typeof input === 'object' && !Array.isArray(input)) {
    const { start, end } = input as { start?: unknown; end?: unknown };
    const s = typeof start === 'string' ? canonicalInstant(start, START_FILL) : undefined;
    const e = typeof end === 'string' ? canonicalInstant(end, END_FILL) : undefined;
    const startOk = start === undefined || s !== undefined;
    const endOk = end === undefined || e !== undefined;
    if (startOk && endOk && (s !== undefined || e !== undefined)) return { start: s, end: e };
  }
  return toPeriod(input);
}

/** `convertToSearchableDates`, with {@link periodOf}. */
export function searchableDates(values: readonly TypedValue[]): Period[] {
  const result: Period[] = [];
  for (const v of values) {
    const period = periodOf(v.value);
    if (period) result.push(period);
  }
  return result;
}
