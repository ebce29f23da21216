/**
 * The tabular feature extractor: compiles a manifest's `tabular` input once (code lookup by
 * `system|code`, UCUM converters per unit pair, lookbacks parsed) and then turns one patient's
 * Patient and Observations into one model row with plain property access, no FHIRPath.
 *
 * Rules (see the tests for each):
 * - an Observation matches a feature by any coding of `code`, else of a `component.code`
 *   (a BP panel's systolic/diastolic components); one value per Observation per feature;
 * - status `final`, `amended`, `corrected` count; `preliminary` only with `acceptPreliminary`;
 * - the time is `effectiveDateTime`, `effectivePeriod` (end, else start) or `effectiveInstant`,
 *   else `issued`; impossible dates are skipped; times after `asOf` or before the lookback
 *   are not used;
 * - values are converted to the feature's UCUM unit; aggregates and `ln` follow;
 * - a feature without a value is imputed as the manifest says; a required feature, or an
 *   optional one with imputation `none`, makes the result `insufficient-data`: the row has no
 *   slot we could honestly fill;
 * - nothing throws out of `extract`: a malformed resource is skipped with a reason.
 */
import type { Observation, Patient } from '@medplum/fhirtypes';
import type { TabularInput } from '../inference/manifest.js';
import type { ExtractResult, FeatureRow, SkippedInput } from '../types.js';
import type { Candidate } from './aggregate.js';
import { subtractDuration } from './duration.js';
import {
  collectAll,
  compileFeatures,
  observationResult,
  patientResult,
  type CodeIndex,
  type CompiledFeature,
  type Window,
} from './observations.js';
import { readAge, readSex } from './patient.js';
import { UnitConverterCache } from './units.js';

export interface TabularExtractor {
  /** Feature names in row order. */
  readonly featureNames: readonly string[];
  /** The `system|code` keys the extractor reads (to filter or search Observations by code). */
  readonly codes: readonly string[];
  /** The bare code values of `codes` (what an NDJSON line must contain to feed a feature). */
  readonly codeValues: readonly string[];
  /**
   * One row for one patient at `asOf`. Never throws: bad resources are skipped with a reason.
   * `observations` may hold anything the caller has for the patient; unmatched ones are ignored.
   */
  extract(patient: Patient | undefined, observations: readonly Observation[], asOf: Date): ExtractResult;
}

export interface CompileOptions {
  /** Share one cache between extractors (default: a new cache per compiled extractor). */
  readonly units?: UnitConverterCache;
}

/** Compiles the feature spec of a tabular input. Throws `FeatureSpecError` for a spec it cannot honour. */
export function compileTabular(input: TabularInput, options: CompileOptions = {}): TabularExtractor {
  const units = options.units ?? new UnitConverterCache();
  const { features, byCode, index, codeValues } = compileFeatures(input.features, units);
  return {
    featureNames: features.map((f) => f.spec.name),
    codes: [...byCode.keys()],
    codeValues,
    extract: (patient, observations, asOf) => extractRow(features, index, patient, observations, asOf),
  };
}

function extractRow(
  features: readonly CompiledFeature[],
  index: CodeIndex,
  patient: Patient | undefined,
  observations: readonly Observation[],
  asOf: Date,
): ExtractResult {
  const skipped: SkippedInput[] = [];
  const asOfMs = asOf instanceof Date ? asOf.getTime() : Number.NaN;
  if (!Number.isFinite(asOfMs)) {
    return { status: 'insufficient-data', missing: features.map((f) => f.spec.name), skipped };
  }
  const windows: Window[] = features.map((f) =>
    f.kind === 'observation'
      ? { from: subtractDuration(asOf, f.lookback).getTime(), to: asOfMs }
      : { from: 0, to: 0 },
  );
  const candidates: Candidate[][] = features.map(() => []);
  collectAll(observations, index, windows, candidates, skipped);

  const values = new Float32Array(features.length);
  const provenance: FeatureRow['provenance'][number][] = [];
  const missing: string[] = [];
  const allInputs = new Set<string>();
  let newest: Candidate | undefined;
  for (const f of features) {
    const result =
      f.kind === 'observation'
        ? observationResult(f, candidates[f.index] ?? [], skipped)
        : patientResult(
            f,
            patient,
            () => (f.kind === 'patient.age' ? readAge(patient, asOf) : readSex(patient, f.valueMap)),
            skipped,
          );
    const name = f.spec.name;
    if (result.value !== undefined) {
      values[f.index] = result.value;
      provenance.push({ feature: name, imputed: false, inputs: [...result.inputs].sort() });
      for (const ref of result.inputs) allInputs.add(ref);
      for (const c of result.used) if (newest === undefined || c.ms > newest.ms) newest = c;
      continue;
    }
    const imputation = f.spec.imputation;
    if (f.spec.required || imputation.strategy === 'none') {
      missing.push(name);
      continue;
    }
    values[f.index] = imputation.strategy === 'constant' ? imputation.value : Number.NaN;
    provenance.push({ feature: name, imputed: true, inputs: [] });
  }
  if (missing.length > 0) return { status: 'insufficient-data', missing, skipped };
  const row: FeatureRow = {
    values,
    shape: [features.length],
    inputs: [...allInputs].sort(),
    effective: newest?.text,
    provenance,
  };
  return { status: 'ok', row, skipped };
}
