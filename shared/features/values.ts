/**
 * Reads one number from an Observation's (or a component's) `value[x]`, in the unit a feature
 * wants. Bad data is answered with a short machine reason, never thrown.
 */
import type { Observation, ObservationComponent } from '@medplum/fhirtypes';
import { UCUM_SYSTEM, type UnitConverter, type UnitConverterCache } from './units.js';

/** The `value[x]` and `dataAbsentReason` an Observation and its components share. */
export type ValueCarrier = Pick<
  Observation | ObservationComponent,
  | 'valueQuantity'
  | 'valueCodeableConcept'
  | 'valueString'
  | 'valueBoolean'
  | 'valueInteger'
  | 'valueRange'
  | 'valueRatio'
  | 'valueSampledData'
  | 'valueTime'
  | 'valueDateTime'
  | 'valuePeriod'
  | 'dataAbsentReason'
>;

export type ValueOutcome =
  { readonly ok: true; readonly value: number } | { readonly ok: false; readonly reason: string };

/** What a feature wants from a value, compiled once from the manifest. */
export interface ValueSpec {
  /** UCUM unit the model expects; `undefined`: the number is taken as sent. */
  readonly unit: string | undefined;
  /** Whether a bare number (no unit) is acceptable: no unit wanted, or a dimensionless one (`1`, `{score}`). */
  readonly acceptsBareNumber: boolean;
  readonly molecularWeight: number | undefined;
  /** `system|code` (CodeableConcept) or `true` / `false` (boolean) → number. */
  readonly valueMap: ReadonlyMap<string, number> | undefined;
  readonly units: UnitConverterCache;
  /** This spec's converters by source unit (`null`: not convertible), filled on first use. */
  readonly converters: Map<string, UnitConverter | null>;
}

/** A FHIR decimal written as a string (`"5.5"`, `"-0.25"`, `"1e3"`). */
const DECIMAL = /^-?(?:\d+(?:\.\d+)?|\.\d+)(?:[eE][+-]?\d+)?$/;

const fail = (reason: string): ValueOutcome => ({ ok: false, reason });

/** Whether a UCUM unit is dimensionless: `1`, or an annotation alone such as `{score}`. */
export function isDimensionlessUnit(unit: string): boolean {
  return unit === '1' || /^\{[^{}]*\}$/.test(unit);
}

function bareNumber(value: number, spec: ValueSpec): ValueOutcome {
  if (!Number.isFinite(value)) return fail('value:not-finite');
  return spec.acceptsBareNumber ? { ok: true, value } : fail('unit:missing');
}

function nonEmpty(s: unknown): string | undefined {
  if (typeof s !== 'string') return undefined;
  const t = s.trim();
  return t === '' ? undefined : t;
}

/** `raw` from `from` into the spec's unit; `undefined` when not convertible or not finite. */
function convertFrom(raw: number, from: string, wanted: string, spec: ValueSpec): number | undefined {
  let converter = spec.converters.get(from);
  if (converter === undefined) {
    converter = spec.units.converter(from, wanted, spec.molecularWeight) ?? null;
    spec.converters.set(from, converter);
  }
  if (converter === null) return undefined;
  const result = converter(raw);
  return Number.isFinite(result) ? result : undefined;
}

function fromQuantity(q: NonNullable<ValueCarrier['valueQuantity']>, spec: ValueSpec): ValueOutcome {
  const raw: unknown = q.value;
  if (raw === undefined || raw === null) return fail('value:missing');
  if (typeof raw !== 'number') return fail('value:not-numeric');
  if (!Number.isFinite(raw)) return fail('value:not-finite');
  // `<5` or `>=300` is a bound, not a measurement: using the bound would make a value up.
  if (q.comparator !== undefined) return fail('value:comparator');
  const wanted = spec.unit;
  if (wanted === undefined) return { ok: true, value: raw };
  const system = nonEmpty(q.system);
  const code = system === undefined || system === UCUM_SYSTEM ? nonEmpty(q.code) : undefined;
  const unit = nonEmpty(q.unit);
  if (code === undefined && unit === undefined) {
    return spec.acceptsBareNumber ? { ok: true, value: raw } : fail('unit:missing');
  }
  // The UCUM code first; the human-readable `unit` only when it happens to parse as UCUM.
  if (code !== undefined) {
    const converted = convertFrom(raw, code, wanted, spec);
    if (converted !== undefined) return { ok: true, value: converted };
  }
  if (unit !== undefined) {
    const converted = convertFrom(raw, unit, wanted, spec);
    if (converted !== undefined) return { ok: true, value: converted };
  }
  return fail('unit:unconvertible');
}

function fromMapped(keys: readonly string[], spec: ValueSpec): ValueOutcome {
  if (!spec.valueMap) return fail('value:unsupported-type');
  for (const key of keys) {
    const mapped = spec.valueMap.get(key);
    if (mapped !== undefined) return { ok: true, value: mapped };
  }
  return fail('value:unmapped');
}

/** Reads the value of `carrier` for a feature; a `dataAbsentReason` gives `value:absent`. */
export function readValue(carrier: ValueCarrier, spec: ValueSpec): ValueOutcome {
  if (carrier.dataAbsentReason !== undefined) return fail('value:absent');
  if (carrier.valueQuantity !== undefined) {
    const quantity: unknown = carrier.valueQuantity;
    if (typeof quantity !== 'object' || quantity === null) return fail('value:not-numeric');
    return fromQuantity(carrier.valueQuantity, spec);
  }
  const integer: unknown = carrier.valueInteger;
  if (integer !== undefined) {
    return typeof integer === 'number' ? bareNumber(integer, spec) : fail('value:not-numeric');
  }
  const text: unknown = carrier.valueString;
  if (text !== undefined) {
    const trimmed = typeof text === 'string' ? text.trim() : '';
    return DECIMAL.test(trimmed) ? bareNumber(Number(trimmed), spec) : fail('value:not-numeric');
  }
  const concept = carrier.valueCodeableConcept;
  if (concept !== undefined) {
    const codings = Array.isArray(concept.coding) ? concept.coding : [];
    return fromMapped(
      codings.map((c) => `${c.system ?? ''}|${c.code ?? ''}`),
      spec,
    );
  }
  const flag: unknown = carrier.valueBoolean;
  if (flag !== undefined) {
    return typeof flag === 'boolean' ? fromMapped([String(flag)], spec) : fail('value:not-boolean');
  }
  if (
    carrier.valueRange !== undefined ||
    carrier.valueRatio !== undefined ||
    carrier.valueSampledData !== undefined ||
    carrier.valueTime !== undefined ||
    carrier.valueDateTime !== undefined ||
    carrier.valuePeriod !== undefined
  ) {
    return fail('value:unsupported-type');
  }
  return fail('value:missing');
}
