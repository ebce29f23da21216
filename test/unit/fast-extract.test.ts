import type { FhirPathAtom, TypedValue } from '@medplum/core';
import { globalSchema, toPeriod, toTypedValue } from '@medplum/core';
import type { Resource } from '@medplum/fhirtypes';
import { beforeAll, describe, expect, it } from 'vitest';
import { ensureFhirDefinitions } from '../../local/fhir/definitions.js';
import { compileSearchExpression, periodOf } from '../../local/fhir/fast-extract.js';
import {
  INDEXED_CODES,
  evaluate,
  expressionFor,
  extractForIndex,
  paramValues,
} from '../../local/fhir/search-index.js';
import {
  DATE_STRINGS,
  REFERENCES,
  cohortResources,
  corpusResources,
  edgeCases,
  obs,
  reportResources,
} from './fast-extract-fixtures.js';

/** A call's value, or its error's message: both paths must fail alike too. */
function outcome<T>(fn: () => T): { value: T } | { error: string } {
  try {
    return { value: fn() };
  } catch (err) {
    return { error: (err as Error).message };
  }
}

/** The compiled path's values, undefined when it leaves the parameter to FHIRPath. */
function fastEvaluate(ast: FhirPathAtom, resource: Resource): TypedValue[] | undefined {
  const evaluator = compileSearchExpression(ast, resource.resourceType);
  if (!evaluator) throw new Error(`no fast path for ${resource.resourceType}: ${ast.toString()}`);
  return evaluator(toTypedValue(resource));
}

/** Each path gets its own copy: FHIRPath's primitive-extension handling may touch its input. */
const copy = (r: Resource): Resource => structuredClone(r);

const codesOf = (resourceType: string): string[] =>
  INDEXED_CODES.filter((code) => expressionFor(resourceType, code) !== null);

interface Tally {
  fast: number;
  fallback: number;
}

/**
 * Checks both paths agree on a resource, parameter by parameter and for the whole index entry,
 * and counts where the fast path answered by itself.
 */
function checkEquivalent(resource: Resource, tally: Map<string, Tally>): void {
  const type = resource.resourceType;
  for (const code of codesOf(type)) {
    const ast = expressionFor(type, code);
    if (!ast) continue;
    const fast = outcome(() => fastEvaluate(ast, copy(resource)));
    const slow = outcome(() => evaluate(ast, toTypedValue(copy(resource))));
    expect('value' in fast, `${type}.${code}: the fast path never throws`).toBe(true);
    const fastValues = 'value' in fast ? fast.value : undefined;
    const t = tally.get(type) ?? { fast: 0, fallback: 0 };
    tally.set(type, t);
    if (fastValues === undefined) t.fallback++;
    else {
      t.fast++;
      expect(fastValues, `${type}.${code} values`).toStrictEqual((slow as { value: TypedValue[] }).value);
    }
    expect(
      outcome(() => paramValues(copy(resource), code)),
      `${type}.${code} ParamValues`,
    ).toStrictEqual(outcome(() => paramValues(copy(resource), code, { path: 'fhirpath' })));
  }
  expect(
    outcome(() => extractForIndex(copy(resource))),
    `${type} index entry`,
  ).toStrictEqual(outcome(() => extractForIndex(copy(resource), { path: 'fhirpath' })));
}

function checkAll(resources: readonly Resource[]): Map<string, Tally> {
  const tally = new Map<string, Tally>();
  for (const r of resources) checkEquivalent(r, tally);
  return tally;
}

beforeAll(() => {
  ensureFhirDefinitions();
});

describe('fast extraction: compiled search expressions', () => {
  it('compiles every indexed (type, code) pair of a concrete resource type', () => {
    let pairs = 0;
    const missing: string[] = [];
    for (const type of Object.keys(globalSchema.types)) {
      for (const code of codesOf(type)) {
        const ast = expressionFor(type, code);
        if (!ast || !globalSchema.types[type]?.searchParams?.[code]) continue;
        pairs++;
        if (!compileSearchExpression(ast, type)) missing.push(`${type}.${code}`);
      }
    }
    expect(pairs).toBeGreaterThan(400);
    // The abstract types only: no stored resource has them as its resourceType.
    expect(missing.sort()).toStrictEqual(['DomainResource._lastUpdated', 'Resource._lastUpdated']);
  });

  it('does not compile a shape it does not know', () => {
    const ast = expressionFor('Observation', 'code');
    expect(ast).not.toBeNull();
    if (ast) expect(compileSearchExpression(ast, 'Patient')).toBeNull();
  });
});

describe('fast extraction: same values as FHIRPath', () => {
  it('on every corpus resource (US Core examples, Synthea history)', () => {
    const resources = corpusResources();
    expect(resources.length).toBeGreaterThan(300);
    const tally = checkAll(resources);
    for (const type of ['Observation', 'DiagnosticReport', 'Provenance', 'Patient']) {
      const t = tally.get(type);
      expect(t?.fast, `${type}: the fast path is taken`).toBeGreaterThan(0);
      expect(t?.fallback, `${type}: no fallback on ordinary corpus resources`).toBe(0);
    }
  });

  it('on the write-back transaction resources, built and stored', () => {
    const resources = reportResources();
    const tally = checkAll(resources);
    for (const type of ['Observation', 'DiagnosticReport', 'Provenance', 'Device', 'DocumentReference']) {
      expect(tally.get(type)?.fast, `${type}: the fast path is taken`).toBeGreaterThan(0);
      expect(tally.get(type)?.fallback, `${type}: no fallback`).toBe(0);
    }
  });

  it("on the sweep bench's synthetic cohort", () => {
    const resources = cohortResources(300);
    expect(resources.length).toBeGreaterThan(2000);
    const tally = checkAll(resources);
    expect(tally.get('Patient')).toStrictEqual({ fast: 600, fallback: 0 });
    expect(tally.get('Observation')?.fallback).toBe(0);
    expect(tally.get('Observation')?.fast).toBe((resources.length - 300) * 6);
  });

  it('on hand-made edge cases (choice types, partial dates, identifiers, references, extensions)', () => {
    const resources = edgeCases();
    const tally = checkAll(resources);
    expect(tally.get('Observation')?.fast).toBeGreaterThan(500);
    expect(tally.get('Provenance')?.fast).toBeGreaterThan(0);
    expect(tally.get('AuditEvent')?.fast).toBeGreaterThan(0);
  });
});

describe('fast extraction: falls back where it cannot be sure', () => {
  const fastOn = (resource: Resource, code: string): TypedValue[] | undefined => {
    const ast = expressionFor(resource.resourceType, code);
    if (!ast) throw new Error(`no ${code} on ${resource.resourceType}`);
    return fastEvaluate(ast, resource);
  };

  it('on a primitive extension of the element it reads', () => {
    expect(
      fastOn(obs({ effectiveDateTime: '2020', _effectiveDateTime: { id: 'a' } }), 'date'),
    ).toBeUndefined();
    expect(fastOn(obs({ _effectiveDateTime: { id: 'a' } }), 'date')).toBeUndefined();
    expect(fastOn(obs({ _effectiveDateTime: { id: 'a' } }), 'code')).toHaveLength(1);
  });

  it('on a reference with an inline resource, a non-string reference, or a nested array', () => {
    expect(fastOn(obs({ subject: REFERENCES.at(-2) }), 'patient')).toBeUndefined();
    expect(fastOn(obs({ subject: { reference: 5 } }), 'patient')).toBeUndefined();
    expect(fastOn(obs({ subject: [[{ reference: 'Patient/1' }]] }), 'patient')).toBeUndefined();
  });

  it('resolves references as Medplum does: relative, versioned and conditional ones only', () => {
    const patientRefs = REFERENCES.map((ref) => fastOn(obs({ subject: ref }), 'patient')?.length);
    expect(patientRefs).toStrictEqual([1, 1, 0, 0, 0, 1, 0, 0, 0, 1, 1, 0, 0, 0, undefined, 0]);
  });
});

describe('fast extraction: periods', () => {
  it('equal toPeriod for every date form, alone and as Period bounds', () => {
    const inputs: unknown[] = [undefined, null, 0, 20200101, {}, [], { event: ['2020'] }, { start: null }];
    for (const d of DATE_STRINGS)
      inputs.push(d, { start: d }, { end: d }, { start: d, end: d }, { start: d, end: 5 });
    for (const input of inputs) {
      expect(
        outcome(() => periodOf(input)),
        JSON.stringify(input),
      ).toStrictEqual(outcome(() => toPeriod(input)));
    }
  });

  it('equal toPeriod on a sweep of calendar dates and times', () => {
    let checked = 0;
    for (const year of [1, 4, 99, 100, 400, 1000, 1899, 1900, 1970, 1999, 2000, 2023, 2024, 2100, 9999]) {
      for (let month = 0; month <= 13; month++) {
        for (let day = 0; day <= 32; day++) {
          const date = `${String(year).padStart(4, '0')}-${String(month).padStart(2, '0')}-${String(day).padStart(2, '0')}`;
          for (const s of [date, `${date}T23:59:59Z`, `${date}T00:00:00.000Z`, `${date}T12:30:45.678Z`]) {
            expect(
              outcome(() => periodOf(s)),
              s,
            ).toStrictEqual(outcome(() => toPeriod(s)));
            checked++;
          }
        }
      }
    }
    expect(checked).toBe(15 * 14 * 33 * 4);
  });
});
