/**
 * UCUM unit conversion from a table generated from `@lhncbc/ucum-lhc` (`ucum-table.ts`), cached
 * per (from, to, molecular weight).
 *
 * The table holds, for every code a model manifest asks for and the clinical units a FHIR
 * server commonly sends, what ucum-lhc's own conversion reads from its parse of the code; the
 * converters below apply ucum-lhc's formulas to it (`Unit.convertFrom`, `Unit.convertMolMass`),
 * so each converts exactly as the library does (`test/unit/units.test.ts` checks every pair).
 * Annotations are read as UCUM reads them (`withoutAnnotations`): one attached to a unit
 * (`mg/dL{calc}`) is dropped, one standing alone (`{score}`, `{cells}/mm3`) is the unit `1`.
 * Codes outside the table, and pairs
 * ucum-lhc refuses (incommensurable, arbitrary `[IU]` units, mass↔mol without a molecular
 * weight), resolve to `undefined`, the answer an unknown unit always had; that answer is cached
 * too. The library itself stays out of the Lambda bundles.
 */
import { MASS_DIMENSION_INDEX, MOLE_MAGNITUDE, UCUM_UNITS, type UcumRow } from './ucum-table.js';

/** The UCUM code system URI, as FHIR Quantities carry it. */
export const UCUM_SYSTEM = 'http://unitsofmeasure.org';

/** Converts a value from one unit to another. */
export type UnitConverter = (value: number) => number;

/** The identity converter, for a value already in the wanted unit. */
export const IDENTITY_CONVERTER: UnitConverter = (value) => value;

/** UCUM expressions are printable ASCII without spaces; anything else is not a unit code. */
const UCUM_SHAPE = /^[!-~]{1,64}$/;

/** An annotation (`{score}`, `{#}`): any printable ASCII but braces, between braces. */
const ANNOTATION = /\{[!-z|~]*\}/g;

/** Stands in for the `1` a standalone annotation becomes (never in a code: not ASCII). */
const ONE = '\u00a7';

/**
 * `unit` with its annotations removed as UCUM reads them, or `undefined` when an annotation
 * is out of place. UCUM gives every annotation the value 1: one attached to a unit symbol
 * (`mg{calc}`, `10*3{cells}`, `m2{x}`) is dropped; one standing alone as a component (at the
 * start, or after `/`, `.` or `(`) is the unit `1`, which then drops out of a product or
 * quotient as UCUM's left-to-right reading allows: `{cells}/mm3` → `/mm3`, `10*3/{cells}/uL` →
 * `10*3/uL`, `{score}` → `1`. An annotation must end its component (`{a}mg`, `mg{a}{b}`) and
 * braces must pair; anything else is `undefined`, left to fail as an unknown code does.
 */
export function withoutAnnotations(unit: string): string | undefined {
  if (!UCUM_SHAPE.test(unit)) return undefined;
  if (!unit.includes('{') && !unit.includes('}')) return unit;
  const misplaced: string[] = [];
  const stripped = unit.replace(ANNOTATION, (annotation: string, offset: number) => {
    const next = unit.charAt(offset + annotation.length);
    if (next !== '' && !'./)'.includes(next)) misplaced.push(annotation);
    return offset === 0 || './('.includes(unit.charAt(offset - 1)) ? ONE : '';
  });
  if (misplaced.length > 0 || /[{}]/.test(stripped)) return undefined;
  return stripped
    .replace(/[./]\u00a7(?=[./)]|$)/g, '') // a/1/b → a/b, a.1 → a
    .replace(/^\u00a7\./, '') // 1.b → b
    .replace(/^\u00a7(?=\/)/, '') // 1/b → /b
    .replaceAll(ONE, '1');
}

/** ucum-lhc's special-unit functions the table carries (`ucumFunctions.js`: `cel`, `degf`). */
const FUNCTIONS: Readonly<Record<string, { cnvTo(x: number): number; cnvFrom(x: number): number }>> = {
  Cel: { cnvTo: (x) => x - 273.15, cnvFrom: (x) => x + 273.15 },
  degF: { cnvTo: (x) => x - 459.67, cnvFrom: (x) => x + 459.67 },
};

/** The mass↔mol comparison of `isMolMassCommensurable`: mol counted as mass, dimensions equal. */
function molMassCommensurable(a: UcumRow, b: UcumRow): boolean {
  const shift = (r: UcumRow) =>
    r.d
      .split(',')
      .map((e, i) => (i === MASS_DIMENSION_INDEX ? Number(e) + r.mol : Number(e)))
      .join(',');
  return shift(a) === shift(b);
}

/** ucum-lhc's `Unit.convertFrom` for two table rows (same mole power); `undefined` where it throws. */
function normalConverter(from: UcumRow, to: UcumRow): UnitConverter | undefined {
  if (from.arb || to.arb || from.d !== to.d) return undefined;
  const fromFn = from.cnv === undefined ? undefined : FUNCTIONS[from.cnv];
  const toFn = to.cnv === undefined ? undefined : FUNCTIONS[to.cnv];
  if ((from.cnv !== undefined && !fromFn) || (to.cnv !== undefined && !toFn)) return undefined;
  const fromPfx = from.pfx ?? 1;
  const toPfx = to.pfx ?? 1;
  return (num) => {
    const x = fromFn ? fromFn.cnvFrom(num * fromPfx) * from.m : num * from.m;
    return toFn ? toFn.cnvTo(x / to.m) / toPfx : x / to.m;
  };
}

/** ucum-lhc's `Unit.convertMolMass` (mass↔mol with a molecular weight in g/mol). */
function molMassConverter(from: UcumRow, to: UcumRow, molecularWeight?: number): UnitConverter | undefined {
  if (!molMassCommensurable(from, to) || !molecularWeight) return undefined;
  const factor = Math.pow(molecularWeight / MOLE_MAGNITUDE, from.mol - to.mol);
  return (amt) => (from.m / to.m) * factor * amt;
}

export class UnitConverterCache {
  private readonly converters = new Map<string, UnitConverter | undefined>();

  /** `table` defaults to the generated one (tests pass their own). */
  constructor(private readonly table: Readonly<Record<string, UcumRow>> = UCUM_UNITS) {}

  /** Whether `unit` is a UCUM code the table knows, with or without annotations. */
  isValid(unit: string): boolean {
    return this.row(unit) !== undefined;
  }

  /**
   * The converter from `from` to `to`, or `undefined` when the units are unknown or cannot be
   * converted (mass↔molar needs `molecularWeight` in g/mol).
   */
  converter(from: string, to: string, molecularWeight?: number): UnitConverter | undefined {
    const key = `${from}\u0000${to}\u0000${molecularWeight ?? ''}`;
    if (this.converters.has(key)) return this.converters.get(key);
    const converter = this.resolve(from, to, molecularWeight);
    this.converters.set(key, converter);
    return converter;
  }

  /** Converts one value; `undefined` when the units cannot be converted or the result is not finite. */
  convert(value: number, from: string, to: string, molecularWeight?: number): number | undefined {
    const converter = this.converter(from, to, molecularWeight);
    if (!converter) return undefined;
    const result = converter(value);
    return Number.isFinite(result) ? result : undefined;
  }

  /** How many unit pairs have been resolved so far (for tests and diagnostics). */
  get size(): number {
    return this.converters.size;
  }

  private row(unit: string): UcumRow | undefined {
    if (!UCUM_SHAPE.test(unit)) return undefined;
    if (Object.hasOwn(this.table, unit)) return this.table[unit];
    const plain = withoutAnnotations(unit);
    return plain !== undefined && Object.hasOwn(this.table, plain) ? this.table[plain] : undefined;
  }

  private resolve(from: string, to: string, molecularWeight?: number): UnitConverter | undefined {
    const source = this.row(from);
    const target = this.row(to);
    if (!source || !target) return undefined;
    if (from === to) return IDENTITY_CONVERTER;
    return source.mol === target.mol
      ? normalConverter(source, target)
      : molMassConverter(source, target, molecularWeight);
  }
}
