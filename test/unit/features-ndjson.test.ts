import type { Observation } from '@medplum/fhirtypes';
import { describe, expect, it } from 'vitest';
import { compileSequence, compileTabular } from '../../shared/features/index.js';
import { createNdjsonPrefilter, parseNdjsonLines } from '../../shared/features/ndjson.js';
import { SequenceInputSchema, TabularInputSchema } from '../../shared/inference/manifest.js';
import type { ExtractResult } from '../../shared/types.js';

const LOINC = 'http://loinc.org';
const UCUM = 'http://unitsofmeasure.org';
const LOCAL = 'urn:oid:1.2.3';
const AS_OF = new Date('2024-06-15T00:00:00Z');

const feature = (name: string, code: string, unit: string, extra: Record<string, unknown> = {}) => ({
  name,
  source: 'observation',
  codes: [{ system: LOINC, code }],
  unit,
  lookback: 'P2Y',
  required: false,
  imputation: { strategy: 'nan' },
  ...extra,
});

const INPUT = TabularInputSchema.parse({
  kind: 'tabular',
  tensor: 'x',
  features: [
    feature('glucose', '2345-7', 'mg/dL', { molecularWeight: 180.156 }),
    feature('sbp', '8480-6', 'mm[Hg]', { aggregate: 'mean' }),
    feature('local', '12345', '1'),
  ],
});
const extractor = compileTabular(INPUT);

const obs = (id: string, code: unknown, extra: Record<string, unknown> = {}): Record<string, unknown> => ({
  resourceType: 'Observation',
  id,
  meta: { versionId: '1' },
  status: 'final',
  subject: { reference: 'Patient/p1' },
  effectiveDateTime: '2024-01-02T03:04:05Z',
  code,
  valueQuantity: { value: 5.5, unit: 'mmol/L', system: UCUM, code: 'mmol/L' },
  ...extra,
});
const coded = (system: string, code: unknown, display = 'x') => ({
  coding: [{ system, code, display }],
  text: display,
});

const line = (resource: unknown): string => JSON.stringify(resource);

/** The row (not the diagnostics) a list of Observations gives. */
const row = (result: ExtractResult) =>
  result.status === 'ok' ? { status: result.status, row: result.row } : { status: result.status };

/**
 * The prefilter's promise: a line it skips would have fed nothing, so the row is the same with
 * or without that line (only `code:missing` diagnostics may differ).
 */
function expectSafe(text: string): boolean {
  const skip = createNdjsonPrefilter([extractor]).canSkip(text);
  if (skip) {
    const parsed = JSON.parse(text) as Observation;
    const withIt = extractor.extract(undefined, [parsed], AS_OF);
    const without = extractor.extract(undefined, [], AS_OF);
    expect(row(withIt)).toEqual(row(without));
    const reasons = withIt.skipped.filter((s) => s.reason !== 'code:missing');
    expect(reasons).toEqual([]);
  }
  return skip;
}

describe('NDJSON prefilter', () => {
  it('skips an Observation naming none of the codes, and counts it', () => {
    const prefilter = createNdjsonPrefilter([extractor]);
    expect(prefilter.canSkip(line(obs('a', coded(LOINC, '8867-4'))))).toBe(true);
    expect(prefilter.canSkip(line(obs('b', coded(LOCAL, 'LAB7'))))).toBe(true);
    expect(prefilter.skipped).toBe(2);
    expect(expectSafe(line(obs('a', coded(LOINC, '8867-4'))))).toBe(true);
  });

  it('keeps an Observation with a wanted code, at the top level or in a component', () => {
    expect(expectSafe(line(obs('a', coded(LOINC, '2345-7'))))).toBe(false);
    const panel = obs('b', coded(LOINC, '85354-9'), {
      valueQuantity: undefined,
      component: [
        { code: coded(LOINC, '8480-6'), valueQuantity: { value: 120, system: UCUM, code: 'mm[Hg]' } },
      ],
    });
    expect(expectSafe(line(panel))).toBe(false);
    // …and the kept line does feed the feature.
    const result = extractor.extract(undefined, [JSON.parse(line(panel)) as Observation], AS_OF);
    expect(result.status === 'ok' && result.row.values[1]).toBe(120);
  });

  it('keeps a second coding that matches, after a local one', () => {
    const code = {
      coding: [
        { system: LOCAL, code: 'GLU' },
        { system: LOINC, code: '2345-7' },
      ],
    };
    expect(expectSafe(line(obs('a', code)))).toBe(false);
  });

  it('keeps a line whose code appears only in display or text (a false keep costs one parse)', () => {
    const text = line(
      obs('a', { coding: [{ system: LOCAL, code: 'G', display: '2345-7' }], text: '8480-6' }),
    );
    expect(expectSafe(text)).toBe(false);
    // The full parse uses nothing from it: the row is all imputed.
    const result = extractor.extract(undefined, [JSON.parse(text) as Observation], AS_OF);
    expect(result.status === 'ok' && result.row.provenance.every((p) => p.imputed)).toBe(true);
  });

  it('keeps a line with escapes that could hide a code (\\u002d), which the full parse does use', () => {
    const text = line(obs('a', coded(LOINC, '2345-7'))).replace('"2345-7"', '"2345\\u002d7"');
    expect(text).not.toContain('"2345-7"');
    expect(expectSafe(text)).toBe(false);
    const result = extractor.extract(undefined, [JSON.parse(text) as Observation], AS_OF);
    expect(result.status === 'ok' && result.row.provenance[0]?.imputed).toBe(false);
  });

  it('keeps a line with any backslash at all, even one that hides nothing', () => {
    expect(expectSafe(line(obs('a', coded(LOINC, '8867-4', 'a "quoted" display'))))).toBe(false);
    expect(expectSafe(line(obs('a', coded(LOINC, '8867-4', 'tab\there'))))).toBe(false);
  });

  it('keeps a code the matcher would read through String(): a number, an array', () => {
    const numeric = line(obs('a', coded(LOINC, 12345), { valueQuantity: { value: 3 } }));
    expect(expectSafe(numeric)).toBe(false);
    const result = extractor.extract(undefined, [JSON.parse(numeric) as Observation], AS_OF);
    expect(result.status === 'ok' && result.row.values[2]).toBe(3);
    expect(expectSafe(line(obs('b', coded(LOINC, ['8867-4']))))).toBe(false);
    expect(expectSafe(line(obs('c', coded(LOINC, true))))).toBe(false);
    expect(expectSafe(line(obs('d', coded(LOINC, null))))).toBe(false);
    expect(expectSafe(line(obs('e', coded(LOINC, 1.2345e4))))).toBe(false);
    expect(expectSafe('{"resourceType":"Observation","code":{"coding":[{"code" : 1}]}}')).toBe(false);
  });

  it('keeps an object-valued code when a manifest code is "[object Object]"', () => {
    const odd = createNdjsonPrefilter([{ codeValues: ['[object Object]'] }]);
    expect(odd.canSkip('{"resourceType":"Observation","code":{"coding":[{"code":{}}]}}')).toBe(false);
  });

  it('keeps lines written with whitespace when the code is there', () => {
    const text =
      '{"resourceType":"Observation", "id":"a", "code" : { "coding" : [ { "code" : "2345-7" } ] } }';
    expect(expectSafe(text)).toBe(false);
  });

  it('keeps every line that is not plainly one Observation', () => {
    const prefilter = createNdjsonPrefilter([extractor]);
    const keep = [
      line({ resourceType: 'Patient', id: 'p1', birthDate: '1970-01-01' }),
      line({ resourceType: 'ImagingStudy', id: 's1' }),
      line({ resourceType: 'ObservationDefinition', id: 'd1' }),
      ` ${line(obs('a', coded(LOINC, '8867-4')))}`, // leading whitespace
      `\uFEFF${line(obs('a', coded(LOINC, '8867-4')))}`, // byte-order mark
      '{ "resourceType": "Observation", "id": "a" }',
      // contained resources, and a duplicate key that makes it a Patient after all
      line(obs('a', coded(LOINC, '8867-4'), { contained: [{ resourceType: 'Patient', id: 'c' }] })),
      '{"resourceType":"Observation","id":"x","resourceType":"Patient"}',
      '{"resource\\u0054ype":"Observation"}',
    ];
    for (const text of keep) expect(prefilter.canSkip(text), text).toBe(false);
    expect(prefilter.skipped).toBe(0);
  });

  it('skips nothing relevant in a randomized mix (escapes, components, displays, numbers)', () => {
    let seed = 42;
    const rnd = (): number => {
      seed = (seed * 1103515245 + 12345) >>> 0;
      return seed / 2 ** 32;
    };
    const pool: unknown[] = [
      '2345-7',
      '8480-6',
      '12345',
      '8867-4',
      'LAB1',
      12345,
      '2345-70',
      ' 2345-7',
      '2345-7 ',
    ];
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)] as T;
    let skipped = 0;
    for (let i = 0; i < 2000; i++) {
      const code = pick(pool);
      const resource = obs(`o${String(i)}`, coded(pick([LOINC, LOCAL]), code, String(pick(pool))), {
        ...(rnd() < 0.3
          ? {
              component: [
                { code: coded(LOINC, pick(pool)), valueQuantity: { value: 1, system: UCUM, code: 'mm[Hg]' } },
              ],
            }
          : {}),
      });
      let text = line(resource);
      if (rnd() < 0.2) text = text.replace(/-/g, '\\u002d');
      if (rnd() < 0.1) text = text.replace(/:/g, ' : ');
      if (expectSafe(text)) skipped++;
    }
    expect(skipped).toBeGreaterThan(100);
  });

  it('serves a sequence extractor too', () => {
    const seq = compileSequence(
      SequenceInputSchema.parse({
        kind: 'sequence',
        tensor: 'x',
        maskTensor: 'mask',
        step: 'P6M',
        steps: 2,
        features: [feature('chol', '2093-3', 'mg/dL', { molecularWeight: 386.65 })],
      }),
    );
    expect(seq.codeValues).toEqual(['2093-3']);
    const prefilter = createNdjsonPrefilter([extractor, seq]);
    expect(prefilter.canSkip(line(obs('a', coded(LOINC, '2093-3'))))).toBe(false);
    expect(prefilter.canSkip(line(obs('a', coded(LOINC, '2345-7'))))).toBe(false);
    expect(prefilter.canSkip(line(obs('a', coded(LOINC, '8867-4'))))).toBe(true);
  });
});

describe('parseNdjsonLines', () => {
  it('gives the same row as parsing every line, and counts what it could not read', () => {
    const lines = [
      line({ resourceType: 'Patient', id: 'p1', birthDate: '1970-01-01', gender: 'female' }),
      line(obs('a', coded(LOINC, '2345-7'))),
      line(obs('b', coded(LOINC, '8867-4'))),
      line(obs('c', coded(LOINC, '2345-7'), { effectiveDateTime: '2024-03-01T00:00:00Z' })),
      line({ resourceType: 'Condition', id: 'x' }),
      '{not json',
      '[1,2]',
    ];
    const prefilter = createNdjsonPrefilter([extractor]);
    const fast = parseNdjsonLines(lines, prefilter);
    const slow = parseNdjsonLines(lines);
    expect(prefilter.skipped).toBe(1);
    expect(fast.observations.map((o) => o.id)).toEqual(['a', 'c']);
    expect(slow.observations.map((o) => o.id)).toEqual(['a', 'b', 'c']);
    expect(fast.patient?.id).toBe('p1');
    expect(fast.malformed).toBe(2);
    expect(extractor.extract(fast.patient, fast.observations, AS_OF)).toEqual(
      extractor.extract(slow.patient, slow.observations, AS_OF),
    );
  });

  it('treats a malformed line that starts like an Observation without any code as skippable', () => {
    const prefilter = createNdjsonPrefilter([extractor]);
    const parsed = parseNdjsonLines(['{"resourceType":"Observation","id":"a",'], prefilter);
    expect(parsed).toEqual({ patient: undefined, observations: [], malformed: 0 });
    expect(prefilter.skipped).toBe(1);
  });
});
