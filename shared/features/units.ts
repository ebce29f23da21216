/**
 * UCUM unit conversion through `@lhncbc/ucum-lhc`, cached per (from, to, molecular weight).
 *
 * Each pair is resolved once: the library converts 0, 1 and 1000; when the result is linear
 * and offset-free (every clinical concentration, mass, pressure, …) the cached converter is a
 * single multiply. Special units with an offset or a function (`Cel`, `[degF]`, `[pH]`) keep
 * calling the library per value. Unknown or incommensurable units resolve to `undefined`, and
 * that answer is cached too. The library is loaded on first use, never at import time.
 */
import ucum from '@lhncbc/ucum-lhc';
import type { UcumLhcUtilsInstance } from '@lhncbc/ucum-lhc';

/** The UCUM code system URI, as FHIR Quantities carry it. */
export const UCUM_SYSTEM = 'http://unitsofmeasure.org';

/** Converts a value from one unit to another; returns NaN when the library cannot. */
export type UnitConverter = (value: number) => number;

/** The identity converter, for a value already in the wanted unit. */
export const IDENTITY_CONVERTER: UnitConverter = (value) => value;

const LINEARITY_PROBE = 1000;
const RELATIVE_TOLERANCE = 1e-9;

/** UCUM expressions are printable ASCII without spaces; anything else is not a unit code. */
const UCUM_SHAPE = /^[!-~]{1,64}$/;

export class UnitConverterCache {
  private readonly converters = new Map<string, UnitConverter | undefined>();
  private readonly validity = new Map<string, boolean>();
  private utils: UcumLhcUtilsInstance | undefined;

  /** `utils` defaults to the library's shared instance, created on first use. */
  constructor(utils?: UcumLhcUtilsInstance) {
    this.utils = utils;
  }

  /** Whether `unit` is a valid UCUM expression (cached). */
  isValid(unit: string): boolean {
    let valid = this.validity.get(unit);
    if (valid === undefined) {
      valid = UCUM_SHAPE.test(unit) && this.library().validateUnitString(unit).status === 'valid';
      this.validity.set(unit, valid);
    }
    return valid;
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

  private library(): UcumLhcUtilsInstance {
    this.utils ??= ucum.UcumLhcUtils.getInstance();
    return this.utils;
  }

  private callLibrary(value: number, from: string, to: string, molecularWeight?: number): number {
    try {
      const result = this.library().convertUnitTo(from, value, to, {
        molecularWeight: molecularWeight ?? null,
      });
      return result.status === 'succeeded' && typeof result.toVal === 'number' ? result.toVal : Number.NaN;
    } catch {
      return Number.NaN;
    }
  }

  private resolve(from: string, to: string, molecularWeight?: number): UnitConverter | undefined {
    // Strings that cannot be UCUM never reach the library: it prints the unit string it fails
    // to parse to stdout, and a unit string from a resource is free text.
    if (!UCUM_SHAPE.test(from) || !UCUM_SHAPE.test(to)) return undefined;
    if (from === to && this.isValid(from)) return IDENTITY_CONVERTER;
    const one = this.callLibrary(1, from, to, molecularWeight);
    if (!Number.isFinite(one)) return undefined;
    const zero = this.callLibrary(0, from, to, molecularWeight);
    const probe = this.callLibrary(LINEARITY_PROBE, from, to, molecularWeight);
    const offsetFree = zero === 0 || Math.abs(zero) <= RELATIVE_TOLERANCE * Math.abs(one);
    const linear =
      Number.isFinite(probe) &&
      Math.abs(probe - LINEARITY_PROBE * one) <= RELATIVE_TOLERANCE * Math.abs(LINEARITY_PROBE * one);
    if (offsetFree && linear && one !== 0) {
      if (one === 1) return IDENTITY_CONVERTER;
      return (value) => value * one;
    }
    return (value) => this.callLibrary(value, from, to, molecularWeight);
  }
}
