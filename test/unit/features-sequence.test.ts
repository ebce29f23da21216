/**
 * The sequence extractor: time binning (table-driven), patient features, provenance and
 * outcomes. Parity with the training's binning on the golden cases:
 * features-sequence-parity.test.ts.
 */
import type { Observation, Patient } from '@medplum/fhirtypes';
import { describe, expect, it } from 'vitest';
import { compileSequence } from '../../shared/features/index.js';
import { FeatureSpecError } from '../../shared/features/errors.js';
import {
  AS_OF,
  bili,
  chol,
  DAY,
  lab,
  ok,
  patient,
  seqInput,
  step,
  STEP_MS,
} from './features-sequence-fixtures.js';
import { loadCorpus } from './helpers/corpus.js';

describe('sequence binning (table-driven)', () => {
  const ext = compileSequence(seqInput());
  // Each case: observations → expected [bili, chol] per step (steps 0..3, newest last), mask.
  const cases: [string, () => Observation[], (number | null)[][], number[]][] = [
    ['one observation sits in the newest (last) step', () => [bili(1.5, 10)], [[1.5, NaN]], [0, 0, 0, 1]],
    [
      'nearest whole step back: 91 days rounds to bin 0, 92 days to bin 1',
      () => [bili(2, 0), bili(1, 91), chol(200, 92)],
      [
        [NaN, 200], // bin 1 (day 92)
        [2, 200], // bin 0: bili from day 0 (newer than day 91); chol carried from bin 1
      ],
      [0, 0, 1, 1],
    ],
    [
      'the latest value in a bin wins',
      () => [bili(1, 30), bili(3, 5), bili(2, 60)],
      [[3, NaN]],
      [0, 0, 0, 1],
    ],
    [
      'empty bins between visits are padding (mask 0, zeros)',
      () => [bili(1, 0), bili(4, 3 * 182.625)],
      [
        [4, NaN],
        [0, 0],
        [0, 0],
        [1, NaN],
      ],
      [1, 0, 0, 1],
    ],
    [
      'carry-forward within P1Y (2 bins) fills a missing feature of a real bin',
      () => [bili(1, 0), chol(250, 2 * 182.625)],
      [
        [NaN, 250],
        [0, 0],
        [1, 250],
      ],
      [0, 1, 0, 1],
    ],
    [
      'no carry-forward beyond P1Y: NaN (the graph imputes)',
      () => [bili(1, 0), chol(250, 3 * 182.625)],
      [
        [NaN, 250],
        [0, 0],
        [0, 0],
        [1, NaN],
      ],
      [1, 0, 0, 1],
    ],
    [
      'bins beyond the window are dropped but still carry into it',
      () => [bili(1, 0), bili(1.1, 3 * 182.625), chol(300, 4 * 182.625)],
      [
        [1.1, 300],
        [0, 0],
        [0, 0],
        [1, NaN],
      ],
      [1, 0, 0, 1],
    ],
    [
      'mmol/L cholesterol converted to mg/dL with 386.65 g/mol',
      () => [chol(5, 0, {}, 'mmol/L')],
      [[NaN, 193.325]],
      [0, 0, 0, 1],
    ],
    [
      'entered-in-error values are not used (the older value is)',
      () => [bili(9, 0, { status: 'entered-in-error' }), bili(2, 200)],
      [[2, NaN]],
      [0, 0, 0, 1],
    ],
    ['observations after asOf are not used', () => [bili(9, -10), bili(2, 0)], [[2, NaN]], [0, 0, 0, 1]],
    [
      'observations before the lookback (P8Y) are not used',
      () => [bili(2, 0), chol(180, 9 * 365.25)],
      [[2, NaN]],
      [0, 0, 0, 1],
    ],
  ];
  it.each(cases)('%s', (_name, make, steps, mask) => {
    const row = ok(ext.extract(patient, make(), AS_OF));
    expect(row.shape).toEqual([4, 4]);
    expect([...(row.mask ?? [])]).toEqual(mask);
    // `steps` lists the last N steps (newest last); earlier ones are padding.
    const first = 4 - steps.length;
    for (let s = 0; s < 4; s++) {
      const got = step(row, s);
      const want = s < first ? [0, 0] : (steps[s - first] as number[]);
      const real = (row.mask?.[s] ?? 0) === 1;
      if (!real) {
        expect(got).toEqual([0, 0, 0, 0]);
        continue;
      }
      for (const k of [0, 1]) {
        const w = want[k] as number;
        if (Number.isNaN(w)) expect(got[k + 2]).toBeNaN();
        else expect(got[k + 2]).toBeCloseTo(w, 3);
      }
    }
  });
});

describe('sequence: patient features, provenance, outcomes', () => {
  it('writes fractional age at the newest observation and sex on every real step only', () => {
    const row = ok(compileSequence(seqInput()).extract(patient, [bili(1, 0), bili(2, 365.25)], AS_OF));
    // Birth 1964-06-15, newest observation at AS_OF (2024-06-15T12:00Z): 60 years and half a day.
    const age = (AS_OF.getTime() - Date.UTC(1964, 5, 15)) / (365.25 * DAY);
    for (const s of [1, 3]) {
      expect(step(row, s)[0]).toBeCloseTo(age, 4);
      expect(step(row, s)[1]).toBe(1);
    }
    expect(step(row, 0)).toEqual([0, 0, 0, 0]);
    expect(step(row, 2)).toEqual([0, 0, 0, 0]);
  });

  it('lists every input used, carried ones included, with versions; effective = newest', () => {
    const obs = [bili(1, 0), chol(250, 182.625), chol(260, 3 * 182.625)];
    const row = ok(compileSequence(seqInput()).extract(patient, obs, AS_OF));
    const [b, c1, c3] = obs.map((x) => `Observation/${String(x.id)}/_history/1`);
    expect(row.inputs).toEqual([b, c1, c3, 'Patient/p1/_history/3'].sort());
    expect(row.provenance.find((p) => p.feature === 'chol')).toEqual({
      feature: 'chol',
      imputed: false,
      inputs: [c1, c3].sort(),
    });
    expect(row.provenance.find((p) => p.feature === 'bili')?.imputed).toBe(true); // NaN in older steps
    expect(row.effective).toBe(obs[0]?.effectiveDateTime);
  });

  it('no usable observation → insufficient-data naming the observation features', () => {
    const result = compileSequence(seqInput()).extract(
      patient,
      [bili(1, 0, { status: 'preliminary' })],
      AS_OF,
    );
    expect(result.status).toBe('insufficient-data');
    if (result.status !== 'insufficient-data') return;
    expect(result.missing).toEqual(['bili', 'chol']);
    expect(result.skipped.map((s) => s.reason)).toEqual(['status:preliminary']);
  });

  it('fewer real steps than minSteps → insufficient-data', () => {
    const result = compileSequence(seqInput({ minSteps: 3 })).extract(
      patient,
      [bili(1, 0), bili(2, 200)],
      AS_OF,
    );
    expect(result).toMatchObject({ status: 'insufficient-data', missing: ['steps:2<minSteps:3'] });
  });

  it('a patient without birthDate → insufficient-data (age required)', () => {
    const result = compileSequence(seqInput()).extract(
      { ...patient, birthDate: undefined },
      [bili(1, 0)],
      AS_OF,
    );
    expect(result).toMatchObject({ status: 'insufficient-data', missing: ['age'] });
  });

  it('a required observation feature seen nowhere → insufficient-data', () => {
    const input = seqInput({}, [
      lab('bili', '1975-2', 'mg/dL'),
      lab('chol', '2093-3', 'mg/dL', { required: true }),
    ]);
    const result = compileSequence(input).extract(patient, [bili(1, 0)], AS_OF);
    expect(result).toMatchObject({ status: 'insufficient-data', missing: ['chol'] });
  });

  it('constant imputation fills gaps; imputation none refuses a gap', () => {
    const constant = seqInput({}, [
      lab('bili', '1975-2', 'mg/dL'),
      lab('chol', '2093-3', 'mg/dL', { imputation: { strategy: 'constant', value: 286 } }),
    ]);
    const row = ok(compileSequence(constant).extract(patient, [bili(1, 0)], AS_OF));
    expect(step(row, 3)).toEqual([1, 286]);
    const none = seqInput({}, [
      lab('bili', '1975-2', 'mg/dL'),
      lab('chol', '2093-3', 'mg/dL', { imputation: { strategy: 'none' } }),
    ]);
    const result = compileSequence(none).extract(patient, [bili(1, 0), chol(200, 365.25 * 3)], AS_OF);
    expect(result).toMatchObject({ status: 'insufficient-data', missing: ['chol'] });
  });

  it('alignment oldest: the oldest bin is the first step, padding on the right', () => {
    const row = ok(
      compileSequence(seqInput({ alignment: 'oldest' })).extract(
        patient,
        [bili(1, 0), bili(2, 182.625)],
        AS_OF,
      ),
    );
    expect([...(row.mask ?? [])]).toEqual([1, 1, 0, 0]);
    expect(step(row, 0)[2]).toBe(2);
    expect(step(row, 1)[2]).toBe(1);
  });

  it('mean per bin when the manifest asks for it', () => {
    const input = seqInput({}, [lab('bili', '1975-2', 'mg/dL', { aggregate: 'mean' })]);
    const row = ok(compileSequence(input).extract(patient, [bili(1, 0), bili(2, 20), bili(6, 40)], AS_OF));
    expect(step(row, 3)).toEqual([3]);
  });

  it('reads BP panel components and the data-absent diastolic of the US Core examples', () => {
    const input = seqInput({ steps: 2 }, [
      lab('sys', '8480-6', 'mm[Hg]', { lookback: 'P30Y' }),
      lab('dia', '8462-4', 'mm[Hg]', { lookback: 'P30Y' }),
    ]);
    const bp = loadCorpus<Observation>('us-core/blood-pressure.json');
    const absent = loadCorpus<Observation>('us-core/bp-data-absent.json');
    const ext = compileSequence(input);
    const full = ok(ext.extract(undefined, [bp], AS_OF));
    expect(step(full, 1)).toEqual([109, 44]);
    const partial = ext.extract(undefined, [absent], AS_OF);
    const row = ok(partial);
    expect(step(row, 1)[0]).toBe(109);
    expect(step(row, 1)[1]).toBeNaN();
    expect(partial.skipped).toContainEqual(
      expect.objectContaining({ feature: 'dia', reason: 'value:absent' }),
    );
  });

  it('never throws on junk input', () => {
    const ext = compileSequence(seqInput());
    const junk = [
      null,
      7,
      'x',
      { resourceType: 'Observation' },
      { code: { coding: 'no' } },
    ] as unknown as Observation[];
    expect(ext.extract(patient, junk, AS_OF).status).toBe('insufficient-data');
    expect(ext.extract(patient, [bili(1, 0)], new Date(Number.NaN)).status).toBe('insufficient-data');
    expect(ext.extract(7 as unknown as Patient, [bili(1, 0)], AS_OF).status).toBe('insufficient-data');
  });

  it('compile refuses a spec without observation features; compileExtractor picks the kind', () => {
    expect(() =>
      compileSequence(seqInput({}, [{ name: 'age', source: 'patient.age', required: true }])),
    ).toThrow(FeatureSpecError);
    const ext = compileSequence(seqInput());
    expect(ext.stepMs).toBe(STEP_MS);
    expect(ext.carryBins).toBe(2);
  });
});
