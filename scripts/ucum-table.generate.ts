/**
 * Generates `ucum-table.ts`, the UCUM units the Lambdas convert between, from `@lhncbc/ucum-lhc`
 * (which stays out of every bundle: ~265 KB, and its unit tables are built when it loads).
 *
 * For each code the table keeps what ucum-lhc's own conversion reads from its parsed unit:
 * magnitude, dimension vector, mole exponent, arbitrariness and the special-unit function (`Cel`,
 * `[degF]`), so `units.ts` can apply ucum-lhc's formulas to them. The codes are every unit a
 * model manifest asks for plus the clinical units in `SOURCE_UNITS`; a code outside the table is
 * not converted, as an unknown code never was. `test/unit/units.test.ts` proves that every pair
 * of codes converts exactly as ucum-lhc converts it, and that this file is current.
 *
 * Run: `npx tsx scripts/ucum-table.generate.ts` (rewrites `ucum-table.ts`).
 */
import { readdirSync, readFileSync, existsSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import ucum, { type UcumUnit } from '@lhncbc/ucum-lhc';
import * as prettier from 'prettier';
import type { UcumRow } from '../shared/features/ucum-table.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(HERE, '..');
export const TABLE_FILE = path.join(ROOT, 'shared', 'features', 'ucum-table.ts');

/** Units a FHIR server commonly sends, by kind (space-separated); each must be valid UCUM. */
const SOURCE_GROUPS: Readonly<Record<string, string>> = {
  dimensionless: '1 % [ppm] [ppth] 10*-3 mmol/mol',
  'mass concentration':
    'g/L g/dL g/mL mg/L mg/dL mg/mL ug/L ug/dL ug/mL ng/L ng/dL ng/mL pg/mL kg/L g/l g/dl mg/l mg/dl ug/dl ug/ml ng/ml pg/ml mg/g g/g mg/100mL g/100mL',
  'substance concentration':
    'mol/L mmol/L umol/L nmol/L pmol/L mol/l mmol/l umol/l nmol/l pmol/l mmol/dL mol/m3',
  'catalytic activity concentration; [IU] is arbitrary, converted to nothing else':
    'U/L U/dL U/mL kU/L mU/L mU/mL U/l ukat/L nkat/L ukat/l [IU]/L [IU]/mL m[IU]/L m[IU]/mL u[IU]/mL u[IU]/L [iU]/L [iU]/mL m[iU]/L',
  'number concentration':
    '10*3/uL 10*3/mm3 10*3/mL 10*9/L 10*6/uL 10*6/mm3 10*12/L 10*9/l 10*12/l 10^3/uL 10^9/L /uL /mm3 /nL /L /mL {cells}/uL',
  pressure: 'mm[Hg] cm[H2O] Pa kPa hPa bar mbar [psi] atm',
  length: 'm dm cm mm um nm km [in_i] [ft_i] [in_us]',
  mass: 'kg g mg ug ng [lb_av] [oz_av]',
  'area density (BMI)': 'kg/m2 g/m2 g/cm2 kg/cm2 [lb_av]/[in_i]2',
  volume: 'L dL mL uL l dl ml ul fL m3 cm3 mm3',
  time: 's ms us min h d wk mo a',
  rates: '/min /s /h /d Hz {beats}/min mL/min mL/s L/min mL/min/{1.73_m2} mL/min/1.73.m2',
  temperature: 'K Cel [degF]',
};

export const SOURCE_UNITS: readonly string[] = Object.values(SOURCE_GROUPS).flatMap((g) => g.split(' '));

/** Special-unit functions the table (and `units.ts`) support: ucum-lhc's `cel` and `degf`. */
export const SUPPORTED_FUNCTIONS: readonly string[] = ['Cel', 'degF'];

function parse(code: string): UcumUnit {
  const unit = ucum.UcumLhcUtils.getInstance().getSpecifiedUnit(code, 'convert', false).unit;
  if (!unit) throw new Error(`"${code}" is not a UCUM unit ucum-lhc can parse`);
  return unit;
}

/** The row of one code; throws for units the table cannot express (equivalents, `[pH]`, …). */
export function rowOf(code: string): UcumRow {
  const u = parse(code);
  const dims = u.dim_?.dimVec_;
  if (!dims) throw new Error(`"${code}" has no dimension vector`);
  if (u.equivalentExp_ !== 0) throw new Error(`"${code}": equivalent units are not tabulated`);
  if (u.cnv_ !== null && !SUPPORTED_FUNCTIONS.includes(u.cnv_)) {
    throw new Error(`"${code}": special unit function ${u.cnv_} is not supported`);
  }
  return {
    m: u.magnitude_,
    d: dims.join(','),
    mol: u.moleExp_,
    ...(u.isArbitrary_ ? { arb: true as const } : {}),
    ...(u.cnv_ !== null ? { cnv: u.cnv_, pfx: u.cnvPfx_ } : {}),
  };
}

/** Every `unit` a model manifest's features or output name. */
export function manifestUnits(root = ROOT): string[] {
  const units = new Set<string>();
  const walk = (node: unknown): void => {
    if (Array.isArray(node)) node.forEach(walk);
    else if (node !== null && typeof node === 'object') {
      for (const [k, v] of Object.entries(node)) {
        if (k === 'unit' && typeof v === 'string') units.add(v);
        else walk(v);
      }
    }
  };
  const models = path.join(root, 'models');
  for (const id of readdirSync(models).sort()) {
    const file = path.join(models, id, 'manifest.json');
    if (existsSync(file)) walk((JSON.parse(readFileSync(file, 'utf8')) as { input?: unknown }).input);
  }
  return [...units].sort();
}

/** The codes tabulated: the source units, then manifest units not among them (annotations aside). */
export function tableCodes(): string[] {
  const codes = [...SOURCE_UNITS];
  for (const u of manifestUnits()) {
    // A bare annotation (`{score}`) reads as `1`; units.ts handles every one of them.
    if (!codes.includes(u) && !/^\{[^{}]*\}$/.test(u)) codes.push(u);
  }
  return codes;
}

const ROW_TYPE = `/** One unit as ucum-lhc parses it. */
export interface UcumRow {
  /** Magnitude on the ratio scale of the base units. */
  readonly m: number;
  /** Exponents of the base dimensions, comma-joined (ucum-lhc's dimension vector). */
  readonly d: string;
  /** Power of mol in the unit (mass↔mol conversions turn on it). */
  readonly mol: number;
  /** An arbitrary unit (\`[IU]\`): ucum-lhc converts it to nothing else. */
  readonly arb?: true;
  /** Special-unit function and its prefix factor (\`Cel\`, \`[degF]\`). */
  readonly cnv?: string;
  readonly pfx?: number;
}`;

/** Source text of `ucum-table.ts`, formatted by the repository's prettier settings. */
export async function generateTableSource(): Promise<string> {
  const version = (
    JSON.parse(
      readFileSync(path.join(ROOT, 'node_modules', '@lhncbc', 'ucum-lhc', 'package.json'), 'utf8'),
    ) as { version: string }
  ).version;
  const rows = tableCodes().map((c) => `  ${JSON.stringify(c)}: ${JSON.stringify(rowOf(c))},`);
  const mol = parse('mol');
  const massIndex = parse('g').dim_?.dimVec_?.indexOf(1) ?? -1;
  const text = [
    `// Generated by scripts/ucum-table.generate.ts from @lhncbc/ucum-lhc ${version}: do not edit.`,
    '// Regenerate: npx tsx scripts/ucum-table.generate.ts',
    '',
    ...ROW_TYPE.split('\n'),
    '',
    `export const UCUM_LHC_VERSION = ${JSON.stringify(version)};`,
    "/** Magnitude of `mol` (Avogadro's number as ucum-lhc has it). */",
    `export const MOLE_MAGNITUDE = ${String(mol.magnitude_)};`,
    '/** Index of mass (gram) in a dimension vector. */',
    `export const MASS_DIMENSION_INDEX = ${String(massIndex)};`,
    '',
    "/** UCUM code → ucum-lhc's parse of it. */",
    'export const UCUM_UNITS: Readonly<Record<string, UcumRow>> = {',
    ...rows,
    '};',
    '',
  ].join('\n');
  const options = await prettier.resolveConfig(TABLE_FILE);
  return prettier.format(text, { ...options, filepath: TABLE_FILE });
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  writeFileSync(TABLE_FILE, await generateTableSource());
  console.log(`wrote ${path.relative(ROOT, TABLE_FILE)} (${String(tableCodes().length)} units)`);
}
