/**
 * Feature extraction throughput, every figure from the same run on the same generated data:
 *
 * - the compiled tabular extractor on already-parsed Observations (rows/s and Observations/s);
 * - the same from NDJSON bytes (split lines, `JSON.parse`, group by patient, extract), beside
 *   `JSON.parse` alone of the same bytes split the same way (the ceiling: nothing that parses
 *   every line can beat it);
 * - the same again with the text prefilter (`createNdjsonPrefilter`) in front of `JSON.parse`:
 *   Observation lines naming none of the extractor's codes are not parsed (how many is reported);
 * - both NDJSON paths are checked against the parsed-resource path, patient by patient (status,
 *   values, inputs; the whole result for every 50th), so a path that dropped a line that
 *   mattered fails instead of looking fast;
 * - a straightforward fhirpath.js extractor over the same resources, written as a careful user
 *   would (each expression compiled once with `fhirpath.compile` and the R4 model, the same
 *   UCUM converter cache), on a sample of the data (it is slow), as a rate;
 * - heap per million parsed Observations, and the machine.
 *
 * Data: a deterministic generator (seeded PRNG) of a realistic mix: LOINC and local-only
 * codings, BP panels with components, glucose and cholesterol in mg/dL and mmol/L, BMI, HDL,
 * unrelated codes, ~2% entered-in-error, 100 Observations per patient.
 *
 * Run alone: `npx tsx bench/features.ts [observations]` prints the JSON.
 */
import { cpus } from 'node:os';
import { pathToFileURL } from 'node:url';
import { setFlagsFromString } from 'node:v8';
import { isDeepStrictEqual } from 'node:util';
import { runInNewContext } from 'node:vm';
import type { Observation } from '@medplum/fhirtypes';
import fhirpath from 'fhirpath';
import r4model from 'fhirpath/fhir-context/r4';
import { createNdjsonPrefilter, type NdjsonPrefilter } from '../shared/features/ndjson.js';
import { compileTabular, type TabularExtractor } from '../shared/features/tabular.js';
import { UnitConverterCache } from '../shared/features/units.js';
import { TabularInputSchema, type TabularInput } from '../shared/inference/manifest.js';
import type { ExtractResult } from '../shared/types.js';
import { mulberry32 } from '../local/prng.js';

const LOINC = 'http://loinc.org';
const UCUM = 'http://unitsofmeasure.org';
const LOCAL = 'urn:oid:1.2.840.114350.1.13.0.1.7.2.768282';
const PER_PATIENT = 100;
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

function gcFunction(): () => void {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  return () => {
    gc();
    gc();
  };
}

/** The fhirpath.js peer: the same features, each expression compiled once. */
function fhirpathExtractor(units: UnitConverterCache): (observations: readonly Observation[]) => number {
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

function seconds(start: bigint): number {
  return Number(process.hrtime.bigint() - start) / 1e9;
}

const round = (x: number, digits = 0): number => Math.round(x * 10 ** digits) / 10 ** digits;

export async function benchFeatures(opts: { observations?: number } = {}): Promise<Record<string, unknown>> {
  const n = Math.max(PER_PATIENT, Math.floor((opts.observations ?? 1_000_000) / PER_PATIENT) * PER_PATIENT);
  const patients = n / PER_PATIENT;
  const gc = gcFunction();
  await new Promise((resolve) => setImmediate(resolve)); // let a caller's output flush before the heavy work

  // Generate as NDJSON bytes (one line per Observation), then parse once for the in-memory figures.
  const rnd = mulberry32(20240615);
  // In chunks: a million lines are more than one string may hold.
  const chunks: Buffer[] = [];
  let lines: string[] = [];
  for (let i = 0; i < n; i++) {
    lines.push(JSON.stringify(generateObservation(i, rnd)));
    if (lines.length === 10_000 || i === n - 1) {
      chunks.push(Buffer.from(lines.join('\n') + '\n', 'utf8'));
      lines = [];
    }
  }
  const ndjson = Buffer.concat(chunks);
  chunks.length = 0;

  gc();
  const heapBefore = process.memoryUsage().heapUsed;
  const groups: Observation[][] = [];
  forEachLine(ndjson, (text) => {
    const obs = JSON.parse(text) as Observation;
    const p = Number(obs.subject?.reference?.slice(9));
    (groups[p] ??= []).push(obs);
  });
  gc();
  const heapAfter = process.memoryUsage().heapUsed;

  const units = new UnitConverterCache();
  const extractor = compileTabular(INPUT, { units });
  // Warm-up (JIT tiers and the unit cache) with one whole pass, then the best of three timed passes.
  let okRows = 0;
  for (let p = 0; p < patients; p++) extractor.extract(undefined, groups[p] ?? [], AS_OF);
  const parsedRuns: number[] = [];
  let t0 = process.hrtime.bigint();
  for (let run = 0; run < 3; run++) {
    okRows = 0;
    t0 = process.hrtime.bigint();
    for (let p = 0; p < patients; p++)
      if (extractor.extract(undefined, groups[p] ?? [], AS_OF).status === 'ok') okRows++;
    parsedRuns.push(seconds(t0));
  }
  const parsedSeconds = Math.min(...parsedRuns);
  const parsedResults: ExtractResult[] = [];
  for (let p = 0; p < patients; p++) parsedResults.push(extractor.extract(undefined, groups[p] ?? [], AS_OF));

  // fhirpath.js on a sample of patients (it is far slower), as a rate.
  const fp = fhirpathExtractor(units);
  const samplePatients = Math.min(patients, Math.max(20, Math.floor(patients / 20)));
  for (let p = 0; p < samplePatients; p++) fp(groups[p] ?? []);
  let sink = 0;
  t0 = process.hrtime.bigint();
  for (let p = 0; p < samplePatients; p++) sink += fp(groups[p] ?? []);
  const fhirpathSeconds = seconds(t0);
  groups.length = 0;
  gc();

  // JSON.parse alone over the NDJSON bytes (the ceiling), parse + group + extract, and the same
  // with the text prefilter in front of JSON.parse; interleaved three times, best of each. Every
  // path splits the bytes the same way (`forEachLine`: one string per line).
  const prefilter = createNdjsonPrefilter([extractor]);
  const ceilingRuns: number[] = [];
  const ndjsonRuns: number[] = [];
  const prefilteredRuns: number[] = [];
  const plainResults: ExtractResult[] = [];
  const prefilteredResults: ExtractResult[] = [];
  let skippedLines = 0;
  for (let round2 = 0; round2 < 3; round2++) {
    t0 = process.hrtime.bigint();
    let count = 0;
    forEachLine(ndjson, (text) => {
      const obs = JSON.parse(text) as Observation;
      if (obs.id !== undefined) count++;
    });
    ceilingRuns.push(seconds(t0));
    if (count !== n) throw new Error('line count mismatch');
    gc();

    plainResults.length = 0;
    t0 = process.hrtime.bigint();
    ndjsonExtract(ndjson, extractor, undefined, plainResults);
    ndjsonRuns.push(seconds(t0));
    gc();

    prefilteredResults.length = 0;
    const skippedBefore = prefilter.skipped;
    t0 = process.hrtime.bigint();
    ndjsonExtract(ndjson, extractor, prefilter, prefilteredResults);
    prefilteredRuns.push(seconds(t0));
    skippedLines = prefilter.skipped - skippedBefore;
    gc();
  }
  const ceilingSeconds = Math.min(...ceilingRuns);
  const ndjsonSeconds = Math.min(...ndjsonRuns);
  const prefilteredSeconds = Math.min(...prefilteredRuns);
  // Both NDJSON paths must give exactly the rows of the parsed-resource path (so a prefilter that
  // dropped a line that mattered cannot look fast): every patient's status, values and inputs, and
  // the whole result, skipped inputs included, for a sample.
  for (const [label, results] of [
    ['ndjson', plainResults],
    ['ndjson+prefilter', prefilteredResults],
  ] as const) {
    if (results.length !== patients)
      throw new Error(`${label}: ${String(results.length)} results for ${String(patients)} patients`);
    for (let p = 0; p < patients; p++) {
      const a = parsedResults[p];
      const b = results[p];
      const same =
        a !== undefined &&
        b !== undefined &&
        (p % 50 === 0
          ? isDeepStrictEqual(a, b)
          : a.status === b.status &&
            (a.status !== 'ok' ||
              (b.status === 'ok' &&
                isDeepStrictEqual(a.row.values, b.row.values) &&
                isDeepStrictEqual(a.row.inputs, b.row.inputs))));
      if (!same) throw new Error(`${label}: patient ${String(p)} differs from the parsed-resource path`);
    }
  }
  plainResults.length = 0;
  prefilteredResults.length = 0;

  const compiledObsPerSec = n / parsedSeconds;
  const fhirpathObsPerSec = (samplePatients * PER_PATIENT) / fhirpathSeconds;
  const ndjsonObsPerSec = n / ndjsonSeconds;
  const ceilingObsPerSec = n / ceilingSeconds;
  const ratioFhirpath = compiledObsPerSec / fhirpathObsPerSec;
  const ratioNdjson = ndjsonObsPerSec / ceilingObsPerSec;
  const prefilteredObsPerSec = n / prefilteredSeconds;
  const ratioPrefiltered = prefilteredObsPerSec / ceilingObsPerSec;
  return {
    observations: n,
    patients,
    observationsPerPatient: PER_PATIENT,
    ndjsonMiB: round(ndjson.length / 2 ** 20, 1),
    compiledParsed: {
      rowsPerSec: round(patients / parsedSeconds),
      observationsPerSec: round(compiledObsPerSec),
      seconds: round(parsedSeconds, 3),
    },
    fhirpath: {
      rowsPerSec: round(samplePatients / fhirpathSeconds),
      observationsPerSec: round(fhirpathObsPerSec),
      sampledObservations: samplePatients * PER_PATIENT,
      seconds: round(fhirpathSeconds, 3),
      checksum: round(sink, 3),
    },
    compiledNdjson: {
      rowsPerSec: round(patients / ndjsonSeconds),
      observationsPerSec: round(ndjsonObsPerSec),
      MiBPerSec: round(ndjson.length / 2 ** 20 / ndjsonSeconds, 1),
      seconds: round(ndjsonSeconds, 3),
    },
    compiledNdjsonPrefiltered: {
      rowsPerSec: round(patients / prefilteredSeconds),
      observationsPerSec: round(prefilteredObsPerSec),
      MiBPerSec: round(ndjson.length / 2 ** 20 / prefilteredSeconds, 1),
      seconds: round(prefilteredSeconds, 3),
      linesSkippedUnparsed: skippedLines,
      skippedFraction: round(skippedLines / n, 3),
    },
    jsonParseCeiling: {
      observationsPerSec: round(ceilingObsPerSec),
      MiBPerSec: round(ndjson.length / 2 ** 20 / ceilingSeconds, 1),
      seconds: round(ceilingSeconds, 3),
    },
    ratios: {
      compiledVsFhirpath: round(ratioFhirpath, 1),
      ndjsonVsJsonParseCeiling: round(ratioNdjson, 3),
      ndjsonPrefilteredVsJsonParseCeiling: round(ratioPrefiltered, 3),
    },
    targets: {
      'compiled >= 20x fhirpath': ratioFhirpath >= 20,
      'ndjson >= 80% of JSON.parse ceiling': ratioNdjson >= 0.8,
      'ndjson+prefilter >= 80% of JSON.parse ceiling': ratioPrefiltered >= 0.8,
    },
    heapMiBPerMillionObservations: round(((heapAfter - heapBefore) / 2 ** 20) * (1_000_000 / n), 1),
    rowsOk: okRows,
    unitPairsCached: units.size,
    machine: { cpu: cpus()[0]?.model ?? 'unknown', cores: cpus().length, node: process.version },
  };
}

/**
 * The sweep path over NDJSON bytes: split lines, (prefilter,) `JSON.parse`, group consecutive
 * lines by subject, extract one row per patient into `results[patient index]`.
 */
function ndjsonExtract(
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
function forEachLine(buf: Buffer, fn: (line: string) => void): void {
  let start = 0;
  for (;;) {
    const end = buf.indexOf(10, start);
    const stop = end === -1 ? buf.length : end;
    if (stop > start) fn(buf.toString('utf8', start, stop));
    if (end === -1) return;
    start = end + 1;
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const arg = Number(process.argv[2]);
  const result = await benchFeatures(Number.isFinite(arg) && arg > 0 ? { observations: arg } : {});
  console.log(JSON.stringify(result, null, 2));
}
