/**
 * The sequence extractor against the training: each PBC model's golden cases (x and mask as
 * the training's binning made them) from the held-out patients written as FHIR.
 */
import { readFileSync } from 'node:fs';
import type { Observation, Patient } from '@medplum/fhirtypes';
import { describe, expect, it } from 'vitest';
import { compileExtractor } from '../../shared/features/index.js';
import { parseManifest, type SequenceInput } from '../../shared/inference/manifest.js';
import { DAY, ok, UCUM } from './features-sequence-fixtures.js';

const PROJECT = 'urn:fhir-analytics:code';

interface Golden {
  cases: { rowId: string; x: (number | null)[][]; mask: number[] }[];
}
interface Heldout {
  patients: {
    patientId: number;
    sex: string;
    ageAtFirstVisit: number;
    visits: ({ day: number } & Record<string, number | null>)[];
  }[];
}

const REPO = new URL('../../', import.meta.url);
// eslint-disable-next-line @typescript-eslint/no-unnecessary-type-parameters -- the caller names the shape
const readJson = <T>(rel: string): T => JSON.parse(readFileSync(new URL(rel, REPO), 'utf8')) as T;

const EDEMA: Record<string, string> = {
  '0': 'edema-none',
  '0.5': 'edema-untreated-or-resolved',
  '1': 'edema-despite-diuretics',
};

/** The held-out patient's visits up to `visit`, as FHIR (visit 0 on 1990-01-01 noon UTC). */
function pbcAsFhir(
  p: Heldout['patients'][number],
  visit: number,
  manifestFeatures: SequenceInput['features'],
): { patient: Patient; observations: Observation[]; asOf: Date } {
  const day0 = Date.UTC(1990, 0, 1, 12);
  const birthMs = day0 - p.ageAtFirstVisit * 365.25 * DAY;
  const birth = new Date(Math.round(birthMs / DAY) * DAY).toISOString().slice(0, 10);
  const patientResource: Patient = {
    resourceType: 'Patient',
    id: `pbc${String(p.patientId)}`,
    birthDate: birth,
    gender: p.sex === 'female' ? 'female' : 'male',
  };
  const observations: Observation[] = [];
  const visits = p.visits.slice(0, visit + 1);
  for (const [vi, v] of visits.entries()) {
    const when = new Date(day0 + v.day * DAY).toISOString();
    for (const f of manifestFeatures) {
      if (f.source !== 'observation') continue;
      const value = v[f.name];
      if (value === null || value === undefined) continue;
      const coding = f.codes[0] as { system: string; code: string };
      const base = {
        resourceType: 'Observation' as const,
        id: `pbc${String(p.patientId)}-${String(vi)}-${f.name}`,
        status: 'final' as const,
        code: { coding: [coding] },
        effectiveDateTime: when,
      };
      if (f.name === 'edema') {
        observations.push({
          ...base,
          valueCodeableConcept: { coding: [{ system: PROJECT, code: EDEMA[String(value)] ?? '?' }] },
        });
      } else if (f.valueMap) {
        observations.push({ ...base, valueBoolean: value === 1 });
      } else {
        observations.push({ ...base, valueQuantity: { value, unit: f.unit, system: UCUM, code: f.unit } });
      }
    }
  }
  const last = visits[visits.length - 1] as { day: number };
  return { patient: patientResource, observations, asOf: new Date(day0 + last.day * DAY + DAY) };
}

describe.each(['pbc-gru', 'pbc-attention'])('parity with the training binning: %s golden cases', (id) => {
  const manifest = parseManifest(readJson(`models/${id}/manifest.json`), id);
  const golden = readJson<Golden>(`models/${id}/golden.json`);
  const heldout = readJson<Heldout>('local/demo/data/pbc-heldout.json');
  const extractor = compileExtractor(manifest);
  if (manifest.input.kind !== 'sequence') throw new Error('not a sequence model');
  const input = manifest.input;

  it.each(golden.cases.map((c) => [c.rowId, c] as const))(
    '%s: x and mask as the training made them',
    (_id, c) => {
      const [pid, visit] = c.rowId.split('@').map(Number) as [number, number];
      const p = heldout.patients.find((x) => x.patientId === pid);
      if (p === undefined) throw new Error(`patient ${String(pid)} not in the held-out file`);
      const { patient: pat, observations, asOf } = pbcAsFhir(p, visit, input.features);
      const row = ok(extractor.extract(pat, observations, asOf));
      expect(row.shape).toEqual([input.steps, input.features.length]);
      expect([...(row.mask ?? [])]).toEqual(c.mask);
      const width = input.features.length;
      c.x.forEach((want, s) => {
        want.forEach((w, k) => {
          const got = row.values[s * width + k] as number;
          if (w === null) expect(got).toBeNaN();
          else if (k === 0)
            expect(Math.abs(got - w)).toBeLessThan(0.003); // birthDate has day precision
          else expect(got).toBeCloseTo(w, 3);
        });
      });
    },
  );
});
