/**
 * The generated UCUM table (`shared/features/ucum-table.ts`) against `@lhncbc/ucum-lhc` itself:
 * the committed file is what the generator writes today, and every ordered pair of its codes
 * converts exactly as the library converts it (or fails where the library fails).
 */
import { readFileSync } from 'node:fs';
import ucum from '@lhncbc/ucum-lhc';
import { describe, expect, it } from 'vitest';
import {
  generateTableSource,
  manifestUnits,
  TABLE_FILE,
  tableCodes,
} from '../../scripts/ucum-table.generate.js';
import { UCUM_UNITS } from '../../shared/features/ucum-table.js';
import { IDENTITY_CONVERTER, UnitConverterCache, withoutAnnotations } from '../../shared/features/units.js';

const lib = ucum.UcumLhcUtils.getInstance();

/** ucum-lhc's answer: the converted value, or `undefined` when it does not convert. */
function libraryConvert(
  value: number,
  from: string,
  to: string,
  molecularWeight?: number,
): number | undefined {
  const r = lib.convertUnitTo(from, value, to, { molecularWeight: molecularWeight ?? null });
  return r.status === 'succeeded' && typeof r.toVal === 'number' && Number.isFinite(r.toVal)
    ? r.toVal
    : undefined;
}

const VALUES = [1, 37.5, -4.25, 0, 1234.5678];
const WEIGHTS = [180.156, 386.65];
const ANNOTATIONS = ['{score}', '{pixel}', '{#}', '{}', '{beats}'];
/** Annotated codes as EHR feeds send them: each reads as the table code it reduces to. */
const ANNOTATED: Readonly<Record<string, string>> = {
  'mg/dL{calc}': 'mg/dL',
  'mmol/L{glucose}': 'mmol/L',
  '10*3/uL{cells}': '10*3/uL',
  '10*3/{cells}/uL': '10*3/uL',
  '{cells}/mm3': '/mm3',
  's{PT}': 's',
  '10*9{cells}/L': '10*9/L',
  '{RBC}/uL': '/uL',
  'mg{creat}/dL': 'mg/dL',
  'mL/min/{1.73_m2}': 'mL/min',
  '{beats}/s': '/s',
  'kg.{dose}': 'kg',
  'g/{total}/L': 'g/L',
  '{a}/{b}': '1',
};

describe('generated UCUM table', () => {
  it('is what the generator writes from ucum-lhc and the manifests today', async () => {
    expect(readFileSync(TABLE_FILE, 'utf8')).toBe(await generateTableSource());
  });

  it('holds every unit a model manifest names (bare annotations read as 1)', () => {
    const units = new UnitConverterCache();
    const named = manifestUnits();
    expect(named).toEqual(expect.arrayContaining(['mg/dL', 'mm[Hg]', 'u[IU]/mL', '{pixel}']));
    for (const u of named) expect({ u, valid: units.isValid(u) }).toEqual({ u, valid: true });
    expect(Object.keys(UCUM_UNITS)).toEqual(tableCodes());
  });

  it('converts every ordered pair of codes exactly as ucum-lhc does, or not at all where it does not', () => {
    const codes = [
      ...tableCodes(),
      ...ANNOTATIONS,
      ...Object.keys(ANNOTATED).filter((u) => u !== 'mL/min/{1.73_m2}'),
    ];
    const units = new UnitConverterCache();
    let converted = 0;
    let refused = 0;
    const mismatches: string[] = [];
    for (const from of codes) {
      for (const to of codes) {
        if (from === to) continue;
        // ucum-lhc reads the molecular weight only between units of different mole powers.
        const molar =
          UCUM_UNITS[withoutAnnotations(from) ?? '']?.mol !== UCUM_UNITS[withoutAnnotations(to) ?? '']?.mol;
        for (const mw of molar ? [undefined, ...WEIGHTS] : [undefined]) {
          for (const v of VALUES) {
            const want = libraryConvert(v, from, to, mw);
            const got = units.convert(v, from, to, mw);
            if (!Object.is(got, want))
              mismatches.push(
                `${String(v)} ${from} -> ${to} (mw ${String(mw)}): ${String(got)} vs ${String(want)}`,
              );
            if (want === undefined) refused++;
            else converted++;
          }
        }
      }
    }
    expect(mismatches.slice(0, 10)).toEqual([]);
    // Both outcomes are exercised: conversions within a kind, refusals across kinds.
    expect(converted).toBeGreaterThan(10_000);
    expect(refused).toBeGreaterThan(10_000);
  });

  it('converts the models’ own cases: glucose and cholesterol mass↔molar, pressure, temperature', () => {
    const units = new UnitConverterCache();
    expect(units.convert(5, 'mmol/L', 'mg/dL', 180.156)).toBe(libraryConvert(5, 'mmol/L', 'mg/dL', 180.156));
    expect(units.convert(5, 'mmol/L', 'mg/dL', 180.156)).toBeCloseTo(90.078, 9);
    expect(units.convert(5.2, 'mmol/L', 'mg/dL', 386.65)).toBeCloseTo(201.058, 9);
    expect(units.convert(16, 'kPa', 'mm[Hg]')).toBeCloseTo(120.0101, 3);
    expect(units.convert(37, 'Cel', '[degF]')).toBeCloseTo(98.6, 9);
    expect(units.convert(100, 'mg/100mL', 'mg/dL')).toBeCloseTo(100, 9);
    expect(units.convert(48, 'mmol/mol', '%')).toBeCloseTo(4.8, 9);
    expect(units.convert(200, '[lb_av]/[in_i]2', 'kg/m2')).toBe(
      libraryConvert(200, '[lb_av]/[in_i]2', 'kg/m2'),
    );
    // mass↔molar needs the molecular weight; arbitrary units convert only to themselves.
    expect(units.convert(90, 'mg/dL', 'mmol/L')).toBeUndefined();
    expect(units.convert(3, 'm[IU]/L', 'u[IU]/mL')).toBeUndefined();
    expect(units.converter('u[IU]/mL', 'u[IU]/mL')).toBe(IDENTITY_CONVERTER);
  });

  it('reads annotations as UCUM does: attached ones dropped, standalone ones the unit 1', () => {
    const units = new UnitConverterCache();
    for (const [annotated, plain] of Object.entries(ANNOTATED)) {
      expect({ annotated, plain: withoutAnnotations(annotated) }).toEqual({ annotated, plain });
      expect({ annotated, valid: units.isValid(annotated) }).toEqual({ annotated, valid: true });
      // The annotated code converts to its plain form as ucum-lhc converts it (by 1).
      for (const v of VALUES) {
        const want = libraryConvert(v, annotated, plain);
        expect({ annotated, v, got: units.convert(v, annotated, plain) }).toEqual({
          annotated,
          v,
          got: want,
        });
      }
    }
    expect(units.convert(180, 'mg/dL{calc}', 'mmol/L{glucose}', 180.156)).toBe(
      libraryConvert(180, 'mg/dL{calc}', 'mmol/L{glucose}', 180.156),
    );
    expect(units.convert(5, '10*3/{cells}/uL', '10*9/L')).toBeCloseTo(5, 12);
    expect(units.convert(250, '{cells}/mm3', '10*9/L')).toBeCloseTo(0.25, 12);
  });

  it('refuses a misplaced or unpaired annotation, as an unknown unit', () => {
    const units = new UnitConverterCache();
    for (const code of ['{a}mg', 'mg{a}{b}', 'mg{', 'mg}', '{a{b}}', 'mg/dL{}x', '{a}2']) {
      expect({ code, plain: withoutAnnotations(code) }).toEqual({ code, plain: undefined });
      expect({ code, valid: units.isValid(code) }).toEqual({ code, valid: false });
      expect({ code, value: units.convert(2, code, 'mg/dL') }).toEqual({ code, value: undefined });
    }
    // An annotation on a unit outside the table leaves it outside.
    expect(units.isValid('furlong{x}')).toBe(false);
    expect(units.isValid('[lb_av]/[ft_i]2{x}')).toBe(false);
  });

  it('gives a unit outside the table the outcome of an unknown unit: not valid, not converted', () => {
    const units = new UnitConverterCache();
    // Valid UCUM that ucum-lhc would convert, but not tabulated; then plainly unknown strings.
    expect(libraryConvert(2, '[lb_av]/[ft_i]2', 'kg/m2')).toBeDefined();
    // Equivalents (`meq/L`) are not tabulated: the table has no charge to convert them with.
    for (const code of ['[lb_av]/[ft_i]2', 'meq/L', '[pH]', 'furlong', 'mmHg', 'mg / dL', '']) {
      expect({ code, valid: units.isValid(code) }).toEqual({ code, valid: false });
      expect({ code, value: units.convert(2, code, 'kg/m2') }).toEqual({ code, value: undefined });
      expect({ code, value: units.convert(2, 'mg/dL', code) }).toEqual({ code, value: undefined });
    }
    // The refusal is cached like any answer.
    const before = units.size;
    expect(units.converter('furlong', 'kg/m2')).toBeUndefined();
    expect(units.size).toBe(before);
  });

  it('takes a custom table (a code outside it is unknown)', () => {
    const only = { 'mg/dL': UCUM_UNITS['mg/dL'], 'g/L': UCUM_UNITS['g/L'] } as const;
    const units = new UnitConverterCache(only as unknown as typeof UCUM_UNITS);
    expect(units.convert(100, 'mg/dL', 'g/L')).toBe(libraryConvert(100, 'mg/dL', 'g/L'));
    expect(units.convert(100, 'mg/dL', 'mg/L')).toBeUndefined();
  });
});
