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
  const candidates = types.map((t) => {
    const key = last.replace('[x]', capitalize(t.code));
    return { key, extension: '_' + key, type: t.code };
  });
  const step: Step = (input) => {
    const out: TypedValue[] = [];
    for (const tv of input) {
      const obj = tv.value as Record<string, unknown> | null | undefined;
      if (!obj || typeof obj !== 'object') continue; // SymbolAtom: nothing from a primitive
      if (Array.isArray(obj) || obj.resourceType === name) return undefined;
      let value: unknown;
      let type = '';
      for (const c of candidates) {
        if (obj[c.extension] !== undefined) return undefined; // primitive extension
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
  const query = ref.indexOf('?'); // `split('?')[0]`, then `split('/')[0]`, as `resolve` does
  if (query >= 0) return ref.slice(0, query);
  const slash = ref.indexOf('/');
  return slash >= 0 ? ref.slice(0, slash) : undefined;
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
    if (root !== undefined && atom.name === root) return { step: (input) => input.slice(), type: root };
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

/**
 * A compiled search expression: what `evaluate(ast, typed)` in search-index.ts returns for a
 * resource of its type, or undefined when FHIRPath must decide for this resource.
 */
export type FastEvaluator = (typed: TypedValue) => TypedValue[] | undefined;

/** Compiles a narrowed search expression for one resource type; null if it has another shape. */
export function compileSearchExpression(ast: FhirPathAtomType, resourceType: string): FastEvaluator | null {
  const compiled =
    ast instanceof FhirPathAtom && isPlainResourceType(resourceType)
      ? compileAtom(ast.child, undefined, resourceType)
      : null;
  if (!compiled) return null;
  const { step } = compiled;
  return (typed) => {
    const resource = typed.value as { resourceType?: unknown } | null | undefined;
    if (typed.type !== resourceType || !resource || resource.resourceType !== resourceType) return undefined;
    try {
      const values = step([typed]);
      return values && asEvaluated(values);
    } catch {
      return undefined; // FHIRPath decides (and reports) what the fast path did not expect
    }
  };
}

// eslint-disable-next-line @typescript-eslint/unbound-method -- compared, never called
const objectValueOf: unknown = Object.prototype.valueOf;

/**
 * The values as `evaluate` gives them, each through `valueOf()`: the same value for strings,
 * numbers, booleans and plain objects, undefined for null; undefined (FHIRPath decides) for an
 * object with a `valueOf` of its own. The array and its slots are the step's own.
 */
function asEvaluated(values: TypedValue[]): TypedValue[] | undefined {
  for (let i = 0; i < values.length; i++) {
    const tv = values[i] as TypedValue;
    const value = tv.value as unknown;
    if (value === null) values[i] = { type: tv.type, value: undefined };
    else if (typeof value === 'object' && (value as { valueOf: unknown }).valueOf !== objectValueOf)
      return undefined;
  }
  return values;
}

const START_FILL = 'T00:00:00.000';
const END_FILL = 'T23:59:59.999';
const CANONICAL = /^(\d{4})-(\d\d)-(\d\d)(?:T([01]\d|2[0-3]):([0-5]\d):([0-5]\d)(\.\d{3})?Z)?$/;
const DAYS_IN_MONTH = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

type Form = 'date' | 'seconds' | 'millis';

/**
 * The form of a date or UTC date-time string that is a real calendar date: `YYYY-MM-DD`,
 * `YYYY-MM-DDThh:mm:ssZ` or `YYYY-MM-DDThh:mm:ss.sssZ`; undefined for anything else. For these
 * forms the string `toPeriod` fills out before `new Date(...).toISOString()` is already what
 * `toISOString` returns (see {@link instant}).
 */
function canonicalForm(s: string): Form | undefined {
  const m = CANONICAL.exec(s);
  if (!m) return undefined;
  const year = Number(m[1]);
  const month = Number(m[2]);
  const day = Number(m[3]);
  if (year < 1 || month < 1 || month > 12 || day < 1) return undefined;
  const leap = year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0);
  if (day > (month === 2 && leap ? 29 : (DAYS_IN_MONTH[month - 1] ?? 0))) return undefined;
  if (m[4] === undefined) return 'date';
  return m[7] === undefined ? 'seconds' : 'millis';
}

/** `dateStringToInstantString` of @medplum/core for a string of a canonical form. */
function instant(s: string, form: Form, fill: string): string {
  if (form === 'date') return s + fill + 'Z';
  return form === 'seconds' ? s.slice(0, 19) + fill.slice(9) + 'Z' : s;
}

/** `toPeriod` from @medplum/core, without `Date` for canonical dates and UTC date-times. */
export function periodOf(input: unknown): Period | undefined {
  if (typeof input === 'string') {
    const form = canonicalForm(input);
    if (form) return { start: instant(input, form, START_FILL), end: instant(input, form, END_FILL) };
  } else if (input && typeof input === 'object' && !Array.isArray(input)) {
    const { start, end } = input as { start?: unknown; end?: unknown };
    const startForm = typeof start === 'string' ? canonicalForm(start) : undefined;
    const endForm = typeof end === 'string' ? canonicalForm(end) : undefined;
    const startOk = start === undefined || startForm !== undefined;
    const endOk = end === undefined || endForm !== undefined;
    if (startOk && endOk && (startForm || endForm)) {
      return {
        start: startForm && instant(start as string, startForm, START_FILL),
        end: endForm && instant(end as string, endForm, END_FILL),
      };
    }
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
