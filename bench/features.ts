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
 * unrelated codes, ~2% entered-in-error, 100 Observations per patient. The data set, the fhirpath.js
 * peer and the NDJSON path live in features-support.ts.
 *
 * Run alone: `npx tsx bench/features.ts [observations]` prints the JSON.
 */
import { cpus } from 'node:os';
import { pathToFileURL } from 'node:url';
import { isDeepStrictEqual } from 'node:util';
import type { Observation } from '@medplum/fhirtypes';
import { createNdjsonPrefilter } from '../shared/features/ndjson.js';
import { compileTabular } from '../shared/features/tabular.js';
import { UnitConverterCache } from '../shared/features/units.js';
import type { ExtractResult } from '../shared/types.js';
import { mulberry32 } from '../local/prng.js';
import {
  AS_OF,
  INPUT,
  PER_PATIENT,
  fhirpathExtractor,
  forEachLine,
  gcFunction,
  generateObservation,
  ndjsonExtract,
  round,
  seconds,
} from './features-support.js';

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

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const arg = Number(process.argv[2]);
  const result = await benchFeatures(Number.isFinite(arg) && arg > 0 ? { observations: arg } : {});
  console.log(JSON.stringify(result, null, 2));
}
