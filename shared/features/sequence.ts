/**
 * The sequence feature extractor (RNN, attention): one patient's Observations binned in time
 * into `x [steps, features]` (row-major) and `mask [steps]`, as the PBC training
 * (`models/training/pbc_data.py`, `bin_visits`) builds them:
 *
 * 1. Observations are read exactly as the tabular extractor reads them (codes, components,
 *    units, statuses, effective[x], dataAbsentReason, each feature's lookback before `asOf`).
 * 2. `t_ref` = the newest usable observation time (alignment `newest`; the prediction time), or
 *    the oldest (alignment `oldest`).
 * 3. A value at `t` falls in bin `j = floor(|t_ref − t| / step + 0.5)`: the nearest whole
 *    number of steps from `t_ref` (`P6M` = 365.25 / 2 days; years 365.25 days, months 30.4375).
 * 4. Per bin and feature the manifest's aggregate decides (`latest`: the newest value wins,
 *    ties by reference), then its transform.
 * 5. A bin is real (mask 1) when at least one observation feature has a value in it.
 * 6. A feature without a value in a real bin takes the value of the nearest older bin that has
 *    one, at most `carryForward / step` bins older (bins older than the window count as
 *    sources, and so do values up to `carryForward` older than the feature's lookback: the
 *    training used every earlier visit; such values never make a bin real or set `t_ref`);
 *    else it is imputed per the manifest (`nan`, `constant`). Imputation `none`
 *    means the model cannot take a gap: any gap makes the result `insufficient-data`.
 * 7. Patient features are written on every real step: `patient.age` as FRACTIONAL years
 *    (365.25-day years) at `t_ref`, as the training computes it; `patient.sex` by its valueMap.
 * 8. `newest`: the newest bin is the last step, padding on the left; `oldest`: the oldest kept
 *    bin is the first step, padding on the right. Either way at most `steps` bins are kept, the
 *    newest ones. Padding steps are all 0 with mask 0.
 * 9. Fewer real steps than `minSteps`, a required observation feature with no value in any
 *    step, or a required patient feature without a value → `insufficient-data`.
 *
 * Nothing throws out of `extract`.
 */
import type { Observation, Patient } from '@medplum/fhirtypes';
import type { SequenceInput } from '../inference/manifest.js';
import type { ExtractResult, FeatureRow, SkippedInput } from '../types.js';
import { aggregate, applyTransform, MS_PER_YEAR, type Candidate } from './aggregate.js';
import { parseIsoDuration, subtractDuration, type IsoDuration } from './duration.js';
import { FeatureSpecError } from './errors.js';
import { parseFhirDateTime } from './fhir-time.js';
import {
  collectAll,
  compileFeatures,
  dedupe,
  patientResult,
  type CompiledObservationFeature,
  type CompiledPatientFeature,
  type Window,
} from './observations.js';
import { readAge, readSex, type PatientOutcome } from './patient.js';
import { UnitConverterCache } from './units.js';

export interface SequenceExtractor {
  /** Feature names in the order of the last axis. */
  readonly featureNames: readonly string[];
  /** The `system|code` keys the extractor reads. */
  readonly codes: readonly string[];
  /** The bare code values of `codes` (what an NDJSON line must contain to feed a feature). */
  readonly codeValues: readonly string[];
  readonly steps: number;
  /** One bin's width in milliseconds (calendar units averaged: 365.25-day years). */
  readonly stepMs: number;
  /** How many bins back a value may be carried (`carryForward / step`, rounded). */
  readonly carryBins: number;
  /** `values` `[steps × features]` row-major, `shape [steps, features]`, `mask [steps]`. Never throws. */
  extract(patient: Patient | undefined, observations: readonly Observation[], asOf: Date): ExtractResult;
}

export interface SequenceCompileOptions {
  readonly units?: UnitConverterCache;
}

const MS_PER_DAY = 24 * 60 * 60 * 1000;

/** A duration's length with calendar units averaged (year 365.25 days, month 30.4375 days). */
export function durationMs(d: IsoDuration): number {
  const days = d.years * 365.25 + d.months * 30.4375 + d.weeks * 7 + d.days;
  return days * MS_PER_DAY + ((d.hours * 60 + d.minutes) * 60 + d.seconds) * 1000;
}

/** Fractional years (365.25-day years) from a FHIR birthDate to `at`. */
export function readFractionalAge(patient: Patient | undefined, at: number): PatientOutcome {
  const whole = readAge(patient, new Date(at)); // validates the birthDate and its presence
  if (!whole.ok) return whole;
  const birth = parseFhirDateTime(patient?.birthDate);
  if (birth === undefined) return { ok: false, reason: 'birthDate:invalid' };
  return { ok: true, value: (at - birth.ms) / MS_PER_YEAR };
}

interface BinValue {
  readonly value: number;
  readonly used: readonly Candidate[];
  /** Only values older than the lookback: may be carried, does not make its bin real. */
  readonly carryOnly: boolean;
}

/** Compiles a sequence input. Throws `FeatureSpecError` for a spec it cannot honour. */
export function compileSequence(
  input: SequenceInput,
  options: SequenceCompileOptions = {},
): SequenceExtractor {
  const units = options.units ?? new UnitConverterCache();
  const { features, byCode, index, codeValues } = compileFeatures(input.features, units);
  const obsFeatures = features.filter((f): f is CompiledObservationFeature => f.kind === 'observation');
  const patientFeatures = features.filter((f): f is CompiledPatientFeature => f.kind !== 'observation');
  if (obsFeatures.length === 0) {
    throw new FeatureSpecError('a sequence input needs at least one observation feature');
  }
  const stepMs = durationMs(parseIsoDuration(input.step));
  if (!(stepMs > 0)) throw new FeatureSpecError(`step "${input.step}" has no length`);
  const carry = input.carryForward === undefined ? undefined : parseIsoDuration(input.carryForward);
  const carryBins = carry === undefined ? 0 : Math.round(durationMs(carry) / stepMs);
  const steps = input.steps;
  const width = features.length;
  const newest = input.alignment === 'newest';
  /** Bins that can reach the tensor: the `steps` kept ones and `carryBins` sources beyond them. */
  const reach = steps + carryBins;

  function extract(
    patient: Patient | undefined,
    observations: readonly Observation[],
    asOf: Date,
  ): ExtractResult {
    const skipped: SkippedInput[] = [];
    const asOfMs = asOf instanceof Date ? asOf.getTime() : Number.NaN;
    if (!Number.isFinite(asOfMs)) {
      return { status: 'insufficient-data', missing: features.map((f) => f.spec.name), skipped };
    }
    // Values up to `carryForward` older than the lookback are read too, as carry sources only.
    const lookbackStart = features.map((f) =>
      f.kind === 'observation' ? subtractDuration(asOf, f.lookback) : asOf,
    );
    const windows: Window[] = features.map((f, i) => {
      const start = lookbackStart[i] as Date;
      return f.kind === 'observation'
        ? { from: (carry === undefined ? start : subtractDuration(start, carry)).getTime(), to: asOfMs }
        : { from: 0, to: 0 };
    });
    const candidates: Candidate[][] = features.map(() => []);
    collectAll(observations, index, windows, candidates, skipped);
    for (const f of obsFeatures) candidates[f.index] = dedupe(candidates[f.index] ?? []);

    // t_ref: the newest (or oldest) usable time over all observation features.
    let newestCandidate: Candidate | undefined;
    let oldestMs = Number.POSITIVE_INFINITY;
    for (const f of obsFeatures) {
      const start = (lookbackStart[f.index] as Date).getTime();
      for (const c of candidates[f.index] ?? []) {
        if (c.ms < start) continue; // a carry source cannot set t_ref
        if (newestCandidate === undefined || c.ms > newestCandidate.ms) newestCandidate = c;
        if (c.ms < oldestMs) oldestMs = c.ms;
      }
    }
    if (newestCandidate === undefined) {
      const missing = obsFeatures.filter((f) => f.spec.required).map((f) => f.spec.name);
      return {
        status: 'insufficient-data',
        missing: missing.length > 0 ? missing : obsFeatures.map((f) => f.spec.name),
        skipped,
      };
    }
    const ref = newestCandidate;
    const refMs = newest ? ref.ms : oldestMs;

    // Bin index of each candidate; for `oldest`, bins count forward and only the newest `steps` are kept.
    const binOf = (ms: number): number => Math.floor(Math.abs(refMs - ms) / stepMs + 0.5);
    const lastBin = binOf(newest ? oldestMs : ref.ms);
    const totalBins = lastBin + 1;
    // `oldest`: bins offset … offset+steps-1 are kept (the newest ones); carry sources lie below.
    const offset = newest ? 0 : Math.max(0, totalBins - steps);
    const binValues: (BinValue | undefined)[][] = obsFeatures.map(() => []);
    obsFeatures.forEach((f, fi) => {
      const start = (lookbackStart[f.index] as Date).getTime();
      const perBin = new Map<number, { inside: Candidate[]; older: Candidate[] }>();
      for (const c of candidates[f.index] ?? []) {
        if (!newest && c.ms < start) continue; // oldest alignment counts from the oldest real value
        const j = binOf(c.ms);
        const beyond = newest ? j >= reach : j < offset - carryBins;
        if (beyond) continue;
        let entry = perBin.get(j);
        if (entry === undefined) {
          entry = { inside: [], older: [] };
          perBin.set(j, entry);
        }
        (c.ms < start ? entry.older : entry.inside).push(c);
      }
      const row = binValues[fi] as (BinValue | undefined)[];
      for (const [j, entry] of perBin) {
        const carryOnly = entry.inside.length === 0;
        const list = carryOnly ? entry.older : entry.inside;
        const agg = aggregate(f.spec.aggregate, list);
        if (!agg.ok) {
          for (const c of agg.used)
            skipped.push({ feature: f.spec.name, reference: c.reference, reason: agg.reason });
          continue;
        }
        const t = applyTransform(f.spec.transform, agg.value);
        if (!t.ok || !Number.isFinite(t.value)) {
          const reason = t.ok ? 'value:not-finite' : t.reason;
          for (const c of agg.used) skipped.push({ feature: f.spec.name, reference: c.reference, reason });
          continue;
        }
        row[j] = { value: t.value, used: agg.used, carryOnly };
      }
    });

    // Patient features, read once at t_ref.
    const patientValues = new Map<CompiledPatientFeature, number>();
    const missing: string[] = [];
    const provenanceInputs = new Map<string, Set<string>>();
    const imputedFeatures = new Set<string>();
    for (const f of features) provenanceInputs.set(f.spec.name, new Set());
    for (const f of patientFeatures) {
      const result = patientResult(
        f,
        patient,
        () => (f.kind === 'patient.age' ? readFractionalAge(patient, ref.ms) : readSex(patient, f.valueMap)),
        skipped,
      );
      if (result.value !== undefined) {
        patientValues.set(f, result.value);
        for (const r of result.inputs) provenanceInputs.get(f.spec.name)?.add(r);
        continue;
      }
      const imputation = f.spec.imputation;
      if (f.spec.required || imputation.strategy === 'none') {
        missing.push(f.spec.name);
        continue;
      }
      patientValues.set(f, imputation.strategy === 'constant' ? imputation.value : Number.NaN);
      imputedFeatures.add(f.spec.name);
    }

    const values = new Float32Array(steps * width);
    const mask = new Float32Array(steps);
    const observed = new Set<string>();
    const gaps = new Set<string>();
    const allInputs = new Set<string>();
    let realSteps = 0;
    let effective: Candidate | undefined;
    const keptBins = Math.min(totalBins, steps);
    for (let k = 0; k < keptBins; k++) {
      // k counts kept bins from the aligned end: newest → bin k at step steps-1-k; oldest → bin offset+k at step k.
      const j = newest ? k : offset + k;
      const hasData = obsFeatures.some((_, fi) => binValues[fi]?.[j]?.carryOnly === false);
      if (!hasData) continue;
      const step = newest ? steps - 1 - k : k;
      mask[step] = 1;
      realSteps += 1;
      const base = step * width;
      obsFeatures.forEach((f, fi) => {
        const row = binValues[fi] as (BinValue | undefined)[];
        let found = row[j];
        if (found?.carryOnly === true && carryBins === 0) found = undefined;
        for (let back = 1; found === undefined && back <= carryBins; back++) {
          const source = newest ? j + back : j - back;
          if (source < 0) break;
          found = row[source];
        }
        if (found !== undefined) {
          values[base + f.index] = found.value;
          observed.add(f.spec.name);
          for (const c of found.used) {
            provenanceInputs.get(f.spec.name)?.add(c.reference);
            allInputs.add(c.reference);
            if (effective === undefined || c.ms > effective.ms) effective = c;
          }
          return;
        }
        const imputation = f.spec.imputation;
        if (imputation.strategy === 'none') {
          gaps.add(f.spec.name);
          return;
        }
        values[base + f.index] = imputation.strategy === 'constant' ? imputation.value : Number.NaN;
        imputedFeatures.add(f.spec.name);
      });
      for (const [f, v] of patientValues) values[base + f.index] = v;
    }
    for (const f of obsFeatures) {
      const name = f.spec.name;
      if ((f.spec.required && !observed.has(name)) || gaps.has(name)) missing.push(name);
    }
    if (realSteps < input.minSteps)
      missing.push(`steps:${String(realSteps)}<minSteps:${String(input.minSteps)}`);
    if (missing.length > 0) return { status: 'insufficient-data', missing, skipped };
    for (const f of patientFeatures) {
      for (const r of provenanceInputs.get(f.spec.name) ?? []) allInputs.add(r);
    }
    const row: FeatureRow = {
      values,
      shape: [steps, width],
      mask,
      inputs: [...allInputs].sort(),
      effective: effective?.text,
      provenance: features.map((f) => ({
        feature: f.spec.name,
        imputed: imputedFeatures.has(f.spec.name),
        inputs: [...(provenanceInputs.get(f.spec.name) ?? [])].sort(),
      })),
    };
    return { status: 'ok', row, skipped };
  }

  return {
    featureNames: features.map((f) => f.spec.name),
    codes: [...byCode.keys()],
    codeValues,
    steps,
    stepMs,
    carryBins,
    extract: (patient, observations, asOf) => {
      try {
        return extract(patient, observations, asOf);
      } catch {
        return {
          status: 'insufficient-data',
          missing: features.map((f) => f.spec.name),
          skipped: [{ feature: '*', reference: 'Observation', reason: 'resource:malformed' }],
        };
      }
    },
  };
}
