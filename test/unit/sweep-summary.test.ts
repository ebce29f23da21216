import type { ImagingStudy, Observation } from '@medplum/fhirtypes';
import { describe, expect, it } from 'vitest';
import { parseSweepDefinition } from '../../shared/sweep/definition.js';
import { SweepInputError } from '../../shared/sweep/errors.js';
import { partitionOf, patientIdOf } from '../../shared/sweep/staging.js';
import { histogramSvg } from '../../shared/sweep/summary.js';
import {
  addFailed,
  addScore,
  emptyTally,
  MAX_FAILED_LISTED,
  mergeTally,
  patientOutcome,
  type Histogram,
} from '../../shared/sweep/tally.js';

const histogram = (): Histogram => ({
  lo: 0,
  hi: 1,
  bins: new Array<number>(10).fill(0),
  below: 0,
  above: 0,
  n: 0,
  sum: 0,
  min: null,
  max: null,
});

describe('sweep tallies and summary', () => {
  it('bins scores, counts out-of-range ones apart, and merges histograms bin by bin', () => {
    const a = emptyTally();
    const b = emptyTally();
    a.histograms.m = histogram();
    b.histograms.m = histogram();
    for (const s of [0, 0.05, 0.55, 1]) addScore(a.histograms.m, s);
    for (const s of [-1, 2, 0.56]) addScore(b.histograms.m, s);
    const merged = mergeTally(mergeTally(emptyTally(), a), b).histograms.m;
    expect(merged?.bins).toEqual([2, 0, 0, 0, 0, 2, 0, 0, 0, 1]);
    expect(merged).toMatchObject({ below: 1, above: 1, n: 7, min: -1, max: 2 });
  });

  it('a patient is failed if any model failed, else written, else unchanged, else insufficient data', () => {
    expect(patientOutcome(['written', 'failed'])).toBe('failed');
    expect(patientOutcome(['unchanged', 'written'])).toBe('written');
    expect(patientOutcome(['insufficient-data', 'unchanged'])).toBe('unchanged');
    expect(patientOutcome([])).toBe('insufficient-data');
  });

  it('lists failed patients up to a bound and counts the rest', () => {
    const t = emptyTally();
    for (let i = 0; i < MAX_FAILED_LISTED + 5; i++) addFailed(t, `Patient/${i}`);
    expect(t.failedPatients).toHaveLength(MAX_FAILED_LISTED);
    expect(t.failedNotListed).toBe(5);
  });

  it('draws an inline SVG with one bar per bin and no external reference', () => {
    const h = histogram();
    for (const s of [0.1, 0.2, 0.2, 0.9]) addScore(h, s);
    const svg = histogramSvg('m<1>', h);
    expect(svg.match(/<rect /g)).toHaveLength(10);
    expect(svg).toContain('m&lt;1&gt;');
    expect(svg.replace('http://www.w3.org/2000/svg', '')).not.toMatch(/https?:/);
  });
});

describe('sweep definition and staging helpers', () => {
  it('fills defaults and refuses bad input with a SweepInputError', () => {
    expect(parseSweepDefinition({})).toMatchObject({
      name: 'default',
      models: [],
      cohort: { kind: 'all' },
      since: 'incremental',
      batchSize: 500,
    });
    expect(() => parseSweepDefinition({ cohort: { kind: 'group', group: 'no spaces' } })).toThrow(
      SweepInputError,
    );
    expect(() => parseSweepDefinition({ since: 'yesterday' })).toThrow(SweepInputError);
    expect(() => parseSweepDefinition({ batchSize: 0 })).toThrow(SweepInputError);
    // A search cohort's parameter given twice would keep only the last value: a wider cohort.
    expect(() =>
      parseSweepDefinition({
        cohort: { kind: 'search', query: 'Patient?birthdate=ge1950&birthdate=lt1960' },
      }),
    ).toThrow(/cohort\.query: each search parameter may appear once/);
    expect(
      parseSweepDefinition({ cohort: { kind: 'search', query: 'Patient?birthdate=ge1950&gender=female' } })
        .cohort,
    ).toEqual({ kind: 'search', query: 'Patient?birthdate=ge1950&gender=female' });
  });

  it('finds the patient of a resource and keeps each patient in one partition', () => {
    const observation: Observation = {
      resourceType: 'Observation',
      status: 'final',
      code: {},
      subject: { reference: 'Patient/b2' },
    };
    const study: ImagingStudy = {
      resourceType: 'ImagingStudy',
      status: 'available',
      subject: { reference: 'http://x/fhir/Patient/c3/_history/2' },
    };
    const grouped: Observation = { ...observation, subject: { reference: 'Group/g' } };
    expect(patientIdOf({ resourceType: 'Patient', id: 'a1' })).toBe('a1');
    expect(patientIdOf(observation)).toBe('b2');
    expect(patientIdOf(study)).toBe('c3');
    expect(patientIdOf(grouped)).toBeUndefined();
    const parts = new Set(Array.from({ length: 1000 }, (_, i) => partitionOf(`p${i}`, 8)));
    expect(parts.size).toBe(8);
    expect(partitionOf('p42', 8)).toBe(partitionOf('p42', 8));
  });
});
