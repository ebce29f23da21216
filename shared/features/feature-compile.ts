/**
 * A manifest's feature list compiled once for the tabular and sequence extractors: value
 * specs with their UCUM converters, lookbacks parsed, and the code index (`system|code`, and
 * code then system for the hot path) that matches an Observation's codings to the features
 * they feed. Throws `FeatureSpecError` for a spec it cannot honour.
 */
import type { ObservationFeature, TabularFeature } from '../inference/manifest.js';
import { parseIsoDuration, type IsoDuration } from './duration.js';
import { FeatureSpecError } from './errors.js';
import type { UnitConverterCache } from './units.js';
import { isDimensionlessUnit, type ValueSpec } from './values.js';

export interface CompiledObservationFeature {
  readonly kind: 'observation';
  readonly index: number;
  readonly spec: ObservationFeature;
  readonly lookback: IsoDuration;
  readonly value: ValueSpec;
}

export interface CompiledPatientFeature {
  readonly kind: 'patient.age' | 'patient.sex';
  readonly index: number;
  readonly spec: TabularFeature;
  readonly valueMap: ReadonlyMap<string, number>;
}

export type CompiledFeature = CompiledObservationFeature | CompiledPatientFeature;

/** One `(system, code)` a manifest names, and the observation features it feeds. */
export interface CodeEntry {
  readonly system: string;
  readonly features: readonly CompiledObservationFeature[];
}

/**
 * Code value → the systems (with their features) that code is named with. Looked up with the
 * coding's own `code` string, so matching allocates nothing per coding.
 */
export type CodeIndex = ReadonlyMap<string, readonly CodeEntry[]>;

export interface CompiledFeatures {
  readonly features: readonly CompiledFeature[];
  /** `system|code` → the observation features it feeds. */
  readonly byCode: ReadonlyMap<string, CompiledObservationFeature[]>;
  /** The same, keyed by code then system: what the hot path reads. */
  readonly index: CodeIndex;
  /** Every code value the features name (for a text prefilter on NDJSON lines). */
  readonly codeValues: readonly string[];
}

export const codeKey = (system: unknown, code: unknown): string => `${String(system)}|${String(code)}`;

function compileObservationFeature(
  spec: ObservationFeature,
  index: number,
  units: UnitConverterCache,
): CompiledObservationFeature {
  if (spec.unit !== undefined && !units.isValid(spec.unit)) {
    throw new FeatureSpecError(`feature "${spec.name}": unit "${spec.unit}" is not a valid UCUM unit`);
  }
  return {
    kind: 'observation',
    index,
    spec,
    lookback: parseIsoDuration(spec.lookback),
    value: {
      unit: spec.unit,
      acceptsBareNumber: spec.unit === undefined || isDimensionlessUnit(spec.unit),
      molecularWeight: spec.molecularWeight,
      valueMap: spec.valueMap ? new Map(Object.entries(spec.valueMap)) : undefined,
      units,
      converters: new Map(),
    },
  };
}

/** Compiles a feature list (tabular or sequence). Throws `FeatureSpecError` for a spec it cannot honour. */
export function compileFeatures(
  specs: readonly TabularFeature[],
  units: UnitConverterCache,
): CompiledFeatures {
  const names = new Set<string>();
  const features: CompiledFeature[] = specs.map((spec, index) => {
    if (names.has(spec.name)) throw new FeatureSpecError(`feature "${spec.name}" is listed twice`);
    names.add(spec.name);
    if (spec.source === 'observation') return compileObservationFeature(spec, index, units);
    if (spec.source === 'patient.sex' && !spec.valueMap) {
      throw new FeatureSpecError(`feature "${spec.name}": patient.sex needs a valueMap`);
    }
    return { kind: spec.source, index, spec, valueMap: new Map(Object.entries(spec.valueMap ?? {})) };
  });
  const byCode = new Map<string, CompiledObservationFeature[]>();
  const index = new Map<string, { system: string; features: CompiledObservationFeature[] }[]>();
  for (const f of features) {
    if (f.kind !== 'observation') continue;
    for (const c of f.spec.codes) {
      const key = codeKey(c.system, c.code);
      const list = byCode.get(key) ?? [];
      if (!list.includes(f)) list.push(f);
      byCode.set(key, list);
      const entries = index.get(c.code) ?? [];
      let entry = entries.find((e) => e.system === c.system);
      if (entry === undefined) {
        entry = { system: c.system, features: [] };
        entries.push(entry);
      }
      if (!entry.features.includes(f)) entry.features.push(f);
      index.set(c.code, entries);
    }
  }
  return { features, byCode, index, codeValues: [...index.keys()] };
}
