/**
 * The report transaction across inputs: determinism and idempotency keys, conclusionCode bands,
 * class probabilities of a classifier, and the arguments it refuses.
 */
import type { DiagnosticReport, Observation } from '@medplum/fhirtypes';
import { describe, expect, it } from 'vitest';
import type { ModelManifest } from '../../shared/inference/manifest.js';
import {
  buildReportTransaction,
  deterministicUuid,
  idempotencyKey,
  ReportInputError,
  selectBand,
  type ReportTransactionArgs,
} from '../../shared/reports/index.js';
import { args, entries, gbm, PROJECT, resourceOf, row, UUID_URN } from './reports-fixtures.js';

describe('determinism and idempotency keys', () => {
  it('the same input gives an identical bundle', () => {
    expect(JSON.stringify(buildReportTransaction(args()))).toBe(
      JSON.stringify(buildReportTransaction(args())),
    );
  });

  it('input order does not matter; a changed input version changes the key and every id', () => {
    const shuffled = { ...row, inputs: [...row.inputs].reverse() };
    const a = buildReportTransaction(args());
    expect(buildReportTransaction(args({ row: shuffled })).idempotencyKey).toBe(a.idempotencyKey);
    const bumped = {
      ...row,
      inputs: ['Observation/g1/_history/4', 'Observation/g2/_history/1', 'Patient/123/_history/7'],
    };
    const b = buildReportTransaction(args({ row: bumped }));
    expect(b.idempotencyKey).not.toBe(a.idempotencyKey);
    const urls = (t: typeof a): (string | undefined)[] => (t.bundle.entry ?? []).map((e) => e.fullUrl);
    expect(urls(b)[0]).toBe(urls(a)[0]); // the same Device
    expect(
      urls(b)
        .slice(1)
        .some((u) => urls(a).includes(u)),
    ).toBe(false);
  });

  it('idempotencyKey is SHA-256 over model, version, patient and sorted, unique inputs', () => {
    const key = idempotencyKey('m', '1.0.0', 'Patient/1', [
      'Observation/2/_history/1',
      'Observation/1/_history/1',
    ]);
    expect(key).toMatch(/^[0-9a-f]{64}$/);
    expect(
      idempotencyKey('m', '1.0.0', 'Patient/1', [
        'Observation/1/_history/1',
        'Observation/2/_history/1',
        'Observation/1/_history/1',
      ]),
    ).toBe(key);
    expect(
      idempotencyKey('m', '1.0.1', 'Patient/1', ['Observation/1/_history/1', 'Observation/2/_history/1']),
    ).not.toBe(key);
    expect(
      idempotencyKey('m', '1.0.0', 'Patient/2', ['Observation/1/_history/1', 'Observation/2/_history/1']),
    ).not.toBe(key);
    expect(
      idempotencyKey('m', '1.0.0', 'Patient/1', ['Observation/1/_history/2', 'Observation/2/_history/1']),
    ).not.toBe(key);
  });

  it('deterministicUuid is a stable version-8 UUID', () => {
    expect(deterministicUuid('ns', 'a')).toBe(deterministicUuid('ns', 'a'));
    expect(deterministicUuid('ns', 'a')).not.toBe(deterministicUuid('ns', 'b'));
    expect(`urn:uuid:${deterministicUuid('ns', 'a')}`).toMatch(UUID_URN);
  });

  it('a different issued time keeps the key and every fullUrl', () => {
    const a = buildReportTransaction(args());
    const b = buildReportTransaction(args({ issued: new Date('2025-01-01T00:00:00Z') }));
    expect(b.idempotencyKey).toBe(a.idempotencyKey);
    expect((b.bundle.entry ?? []).map((e) => e.fullUrl)).toEqual(
      (a.bundle.entry ?? []).map((e) => e.fullUrl),
    );
  });
});

describe('conclusionCode bands', () => {
  it.each([
    [-0.01, undefined],
    [0, 'progression-low'],
    [149.999, 'progression-low'],
    [150, 'progression-moderate'],
    [249.99, 'progression-moderate'],
    [250, 'progression-high'],
    [346, 'progression-high'],
  ])('score %s → %s', (score, expected) => {
    expect(selectBand(gbm.output.thresholds, score)?.conclusion.code).toBe(expected);
    const report = resourceOf<DiagnosticReport>('DiagnosticReport', entries(args({ prediction: { score } })));
    expect(report.conclusionCode?.[0]?.coding?.[0]?.code).toBe(expected);
  });

  it('bands are chosen by value even when listed out of order', () => {
    const shuffled = [...gbm.output.thresholds].reverse();
    expect(selectBand(shuffled, 200)?.conclusion.code).toBe('progression-moderate');
  });

  it('below every band: no conclusionCode, the conclusion still states the score', () => {
    const report = resourceOf<DiagnosticReport>(
      'DiagnosticReport',
      entries(args({ prediction: { score: -3 } })),
    );
    expect(report.conclusionCode).toBeUndefined();
    expect(report.conclusion).toMatch(/^Score \(score -3\)\./);
  });
});

describe('classifiers and bad arguments', () => {
  const classifier: ModelManifest = {
    ...gbm,
    task: 'classification',
    output: {
      ...gbm.output,
      kind: 'probability',
      unit: '1',
      labels: [
        { code: { system: PROJECT, code: 'benign', display: 'Benign' } },
        { code: { system: PROJECT, code: 'malignant', display: 'Malignant' } },
      ],
    },
  };

  it('adds one component per class probability to the score Observation', () => {
    const score = resourceOf<Observation>(
      'Observation',
      entries(
        args({
          manifest: classifier,
          prediction: { score: 0.8731234567, probabilities: [0.1268765433, 0.8731234567] },
        }),
      ),
    );
    expect(score.valueQuantity).toEqual({
      value: 0.873123,
      unit: '1',
      system: 'http://unitsofmeasure.org',
      code: '1',
    });
    expect(score.component?.map((c) => [c.code.coding?.[0]?.code, c.valueQuantity?.value])).toEqual([
      ['benign', 0.126877],
      ['malignant', 0.873123],
    ]);
  });

  it.each([
    ['a versioned patient', { patient: 'Patient/123/_history/2' }],
    ['a non-patient subject', { patient: 'Group/1' }],
    ['a NaN score', { prediction: { score: Number.NaN } }],
    ['an invalid issued date', { issued: new Date('nope') }],
    ['probabilities that do not fit the labels', { prediction: { score: 0.5, probabilities: [0.5] } }],
  ] as const)('rejects %s', (_name, extra) => {
    expect(() => buildReportTransaction(args(extra as Partial<ReportTransactionArgs>))).toThrow(
      ReportInputError,
    );
  });
});
