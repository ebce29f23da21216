/**
 * What the feature-extraction benchmark (features.ts) runs on: the deterministic data set (the
 * manifest input and the Observation generator), the fhirpath.js peer extractor, the NDJSON
 * path (`ndjsonExtract`, `forEachLine`) and the small timing helpers.
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import type { Observation } from '@medplum/fhirtypes';
import fhirpath from 'fhirpath';
import r4model from 'fhirpath/fhir-context/r4';
import type { NdjsonPrefilter } from '../shared/features/ndjson.js';
import type { TabularExtractor } from '../shared/features/tabular.js';
import type { UnitConverterCache } from '../shared/features/units.js';
import { TabularInputSchema, type TabularInput } from '../shared/inference/manifest.js';
import type { ExtractResult } from '../shared/types.js';

const LOINC = 'http://loinc.org';
const UCUM = 'http://unitsofmeasure.org';
const LOCAL = 'urn:oid:1.2.840.114350.1.13.0.1.7.2.768282';
export const PER_PATIENT = 100;
export const AS_OF = new Date('2024-06-15T00:00:00Z');

export const INPUT: TabularInput = TabularInputSchema.parse({
  kind: 'tabular',
  tensor: 'x',
  features: [
    {
      name: 'glucose',
      source: 'observation',
      codes: [{ system: LOINC, code: '2345-7' }],
      unit: 'mg/dL',
      molecularWeight: 180.156,
      aggregate: 'latest',
      lookback: 'P2Y',
      required: false,
      imputation: { strategy: 'nan' },
    },
    {
      name: 'chol',
      source: 'observation',
      codes: [{ system: LOINC, code: '2093-3' }],
      unit: 'mg/dL',
      molecularWeight: 386.65,
      aggregate: 'mean',
      lookback: 'P2Y',
      required: false,
      imputation: { strategy: 'nan' },
    },
    {
      name: 'hdl',
      source: 'observation',
      codes: [{ system: LOINC, code: '2085-9' }],
      unit: 'mg/dL',
      molecularWeight: 386.65,
      aggregate: 'latest',
      lookback: 'P2Y',
      required: false,
      imputation: { strategy: 'nan' },
    },
    {
      name: 'sbp',
      source: 'observation',
      codes: [{ system: LOINC, code: '8480-6' }],
      unit: 'mm[Hg]',
      aggregate: 'mean',
      lookback: 'P1Y',
      required: false,
      imputation: { strategy: 'nan' },
    },
    {
      name: 'dbp',
      source: 'observation',
      codes: [{ system: LOINC, code: '8462-4' }],
      unit: 'mm[Hg]',
      aggregate: 'mean',
      lookback: 'P1Y',
      required: false,
      imputation: { strategy: 'nan' },
    },
    {
      name: 'bmi',
      source: 'observation',
      codes: [{ system: LOINC, code: '39156-5' }],
      unit: 'kg/m2',
      aggregate: 'latest',
      lookback: 'P2Y',
      required: false,
      imputation: { strategy: 'nan' },
    },
  ],
});

const q = (value: number, unit: string): Observation['valueQuantity'] => ({
  value,
  unit,
  system: UCUM,
  code: unit,
});
const coded = (system: string, code: string, display: string): Observation['code'] => ({
  coding: [{ system, code, display }],
  text: display,
});

/** The `i`-th Observation of the data set (patient `floor(i / 100)`). */
export function generateObservation(i: number, rnd: () => number): Observation {
  const patient = Math.floor(i / PER_PATIENT);
  const when = new Date(
    AS_OF.getTime() - Math.floor(rnd() * 900) * 86_400_000 - Math.floor(rnd() * 86_400) * 1000,
  );
  const base = {
    resourceType: 'Observation' as const,
    id: `o${String(i)}`,
    meta: { versionId: '1', lastUpdated: '2024-06-01T00:00:00Z' },
    status: (rnd() < 0.02 ? 'entered-in-error' : rnd() < 0.05 ? 'amended' : 'final') as Observation['status'],
    category: [
      {
        coding: [
          { system: 'http://terminology.hl7.org/CodeSystem/observation-category', code: 'laboratory' },
        ],
      },
    ],
    subject: { reference: `Patient/p${String(patient)}` },
    effectiveDateTime: when.toISOString(),
    issued: when.toISOString(),
  };
  const r = rnd();
  if (r < 0.22) {
    const mmol = rnd() < 0.5;
    const coding =
      rnd() < 0.2
        ? [
            { system: LOCAL, code: 'GLU', display: 'Glucose' },
            { system: LOINC, code: '2345-7', display: 'Glucose' },
          ]
        : [{ system: LOINC, code: '2345-7', display: 'Glucose [Mass/volume] in Serum or Plasma' }];
    return {
      ...base,
      code: { coding, text: 'Glucose' },
      valueQuantity: mmol
        ? q(Math.round((4 + rnd() * 6) * 10) / 10, 'mmol/L')
        : q(Math.round(70 + rnd() * 110), 'mg/dL'),
    };
  }
  if (r < 0.44) {
    return {
      ...base,
      category: [
        {
          coding: [
            { system: 'http://terminology.hl7.org/CodeSystem/observation-category', code: 'vital-signs' },
          ],
        },
      ],
      code: coded(LOINC, '85354-9', 'Blood pressure panel with all children optional'),
      component: [
        {
          code: coded(LOINC, '8480-6', 'Systolic blood pressure'),
          valueQuantity: q(Math.round(100 + rnd() * 60), 'mm[Hg]'),
        },
        {
          code: coded(LOINC, '8462-4', 'Diastolic blood pressure'),
          valueQuantity: q(Math.round(60 + rnd() * 40), 'mm[Hg]'),
        },
      ],
    };
  }
  if (r < 0.56) {
    const mmol = rnd() < 0.4;
    return {
      ...base,
      code: coded(LOINC, '2093-3', 'Cholesterol [Mass/volume] in Serum or Plasma'),
      valueQuantity: mmol
        ? q(Math.round((3 + rnd() * 5) * 100) / 100, 'mmol/L')
        : q(Math.round(120 + rnd() * 180), 'mg/dL'),
    };
  }
  if (r < 0.64)
    return {
      ...base,
      code: coded(LOINC, '2085-9', 'HDL'),
      valueQuantity: q(Math.round(30 + rnd() * 60), 'mg/dL'),
    };
  if (r < 0.74)
    return {
      ...base,
      code: coded(LOINC, '39156-5', 'Body mass index (BMI) [Ratio]'),
      valueQuantity: q(Math.round((18 + rnd() * 20) * 10) / 10, 'kg/m2'),
    };
  if (r < 0.84)
    return {
      ...base,
      code: coded(LOCAL, `LAB${String(Math.floor(rnd() * 50))}`, 'Local lab test'),
      valueQuantity: q(Math.round(rnd() * 1000) / 10, 'U/L'),
    };
  return {
    ...base,
    code: coded(LOINC, '8867-4', 'Heart rate'),
    valueQuantity: q(Math.round(50 + rnd() * 60), '/min'),
  };
}

export function gcFunction(): () => void {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  return () => {
    gc();
    gc();
  };
}

/** The fhirpath.js peer: the same features, each expression compiled once. */
export function fhirpathExtractor(
  units: UnitConverterCache,
): (observations: readonly Observation[]) => number {
  const model = r4model;
  const c = (expr: string): ((r: unknown) => unknown[]) => {
    const f = fhirpath.compile(expr, model);
    return (r) => f(r) as unknown[];
  };
  const usable = c("status = 'final' or status = 'amended' or status = 'corrected'");
  const when = c('effective');
  const asOf = AS_OF.getTime();
  const features = INPUT.features.flatMap((f) => {
    if (f.source !== 'observation') return [];
    const code = f.codes[0] as { system: string; code: string };
    const sel = `coding.where(system = '${code.system}' and code = '${code.code}').exists()`;
    return [
      {
        spec: f,
        top: c(`code.${sel}`),
        topValue: c('value.ofType(Quantity)'),
        compValue: c(`component.where(code.${sel}).value.ofType(Quantity)`),
        from: asOf - (f.lookback === 'P1Y' ? 365 : 730) * 86_400_000,
      },
    ];
  });
  return (observations) => {
    let produced = 0;
    const values: { v: number; t: number }[][] = features.map(() => []);
    for (const obs of observations) {
      if (usable(obs)[0] !== true) continue;
      const t = Date.parse(String(when(obs)[0]));
      features.forEach((f, k) => {
        if (!(t <= asOf && t >= f.from)) return;
        const quantity = (f.top(obs)[0] === true ? f.topValue(obs)[0] : f.compValue(obs)[0]) as
          { value?: number; code?: string } | undefined;
        if (quantity?.value === undefined || quantity.code === undefined) return;
        const v = units.convert(quantity.value, quantity.code, f.spec.unit ?? '1', f.spec.molecularWeight);
        if (v !== undefined) values[k]?.push({ v, t });
      });
    }
    features.forEach((f, k) => {
      const list = values[k] ?? [];
      if (list.length === 0) return;
      if (f.spec.aggregate === 'mean') produced += list.reduce((s, x) => s + x.v, 0) / list.length;
      else produced += list.reduce((a, b) => (b.t > a.t ? b : a)).v;
    });
    return produced;
  };
}

export function seconds(start: bigint): number {
  return Number(process.hrtime.bigint() - start) / 1e9;
}

export const round = (x: number, digits = 0): number => Math.round(x * 10 ** digits) / 10 ** digits;

/**
 * The sweep path over NDJSON bytes: split lines, (prefilter,) `JSON.parse`, group consecutive
 * lines by subject, extract one row per patient into `results[patient index]`.
 */
export function ndjsonExtract(
  buf: Buffer,
  extractor: TabularExtractor,
  prefilter: NdjsonPrefilter | undefined,
  results: ExtractResult[],
): void {
  let current = '';
  let batch: Observation[] = [];
  const flush = (): void => {
    if (batch.length > 0) results[Number(current.slice(9))] = extractor.extract(undefined, batch, AS_OF);
    batch = [];
  };
  forEachLine(buf, (text) => {
    if (prefilter?.canSkip(text) === true) return;
    const obs = JSON.parse(text) as Observation;
    const subject = obs.subject?.reference ?? '';
    if (subject !== current) flush();
    current = subject;
    batch.push(obs);
  });
  flush();
}

/** Calls `fn` with each non-empty line of an NDJSON buffer. */
export function forEachLine(buf: Buffer, fn: (line: string) => void): void {
  let start = 0;
  for (;;) {
    const end = buf.indexOf(10, start);
    const stop = end === -1 ? buf.length : end;
    if (stop > start) fn(buf.toString('utf8', start, stop));
    if (end === -1) return;
    start = end + 1;
  }
}
