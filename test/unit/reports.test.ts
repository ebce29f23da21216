import type {
  BundleEntry,
  Device,
  DiagnosticReport,
  Observation,
  Provenance,
  Resource,
} from '@medplum/fhirtypes';
import { describe, expect, it } from 'vitest';
import { parseManifest, type ModelManifest } from '../../shared/inference/manifest.js';
import {
  AI_ASSERTED_SECURITY_LABEL,
  buildReportTransaction,
  deterministicUuid,
  idempotencyKey,
  isWrittenByFhirAnalytics,
  ReportInputError,
  selectBand,
  WRITTEN_BY_TAG,
  type ReportTransactionArgs,
} from '../../shared/reports/index.js';
import type { FeatureRow } from '../../shared/types.js';

const LOINC = 'http://loinc.org';
const PROJECT = 'urn:fhir-analytics:code';
const V2_0074 = 'http://terminology.hl7.org/CodeSystem/v2-0074';
const LOINC_GLUCOSE = '2345-7'; // Glucose [Mass/volume] in Serum or Plasma

/** Like the diabetes GBM: a regression on 10 tabular features, bands at 0 / 150 / 250. */
const gbm: ModelManifest = parseManifest(
  {
    id: 'diabetes-progression-gbm',
    version: '1.2.0',
    family: 'gbm',
    task: 'regression',
    title: 'Diabetes progression (gradient boosting)',
    intendedUse: 'Research demonstration of one-year diabetes progression scoring.',
    notForClinicalUse: true,
    triggers: [{ resourceType: 'Observation', codes: [{ system: LOINC, code: LOINC_GLUCOSE }] }],
    input: {
      kind: 'tabular',
      tensor: 'x',
      features: [
        {
          name: 'glucose',
          source: 'observation',
          codes: [{ system: LOINC, code: LOINC_GLUCOSE }],
          unit: 'mg/dL',
          lookback: 'P1Y',
          required: true,
        },
        { name: 'age', source: 'patient.age', required: true },
      ],
    },
    output: {
      kind: 'regression',
      tensor: 'y',
      unit: '{score}',
      code: { system: PROJECT, code: 'diabetes-progression-score', display: 'Diabetes progression score' },
      thresholds: [
        {
          atOrAbove: 0,
          indicator: 'info',
          conclusion: { system: PROJECT, code: 'progression-low', display: 'Low progression' },
        },
        {
          atOrAbove: 150,
          indicator: 'warning',
          conclusion: { system: PROJECT, code: 'progression-moderate', display: 'Moderate progression' },
        },
        {
          atOrAbove: 250,
          indicator: 'critical',
          conclusion: { system: PROJECT, code: 'progression-high', display: 'High progression' },
        },
      ],
    },
    report: {
      code: { system: PROJECT, code: 'diabetes-progression-report', display: 'Diabetes progression (AI)' },
      category: [{ system: V2_0074, code: 'LAB', display: 'Laboratory' }],
    },
    serving: {
      tritonModelName: 'diabetes_progression_gbm',
      instanceType: 'ml.g5.xlarge',
      maxBatchSize: 64,
      inputs: [{ name: 'x', datatype: 'FP32', dims: [2] }],
      outputs: [{ name: 'y', datatype: 'FP32', dims: [1] }],
    },
  },
  'test:diabetes-progression-gbm',
);

const row: FeatureRow = {
  values: new Float32Array([140, 54]),
  shape: [2],
  inputs: ['Observation/g2/_history/1', 'Observation/g1/_history/3', 'Patient/123/_history/7'],
  effective: '2024-05-15T08:30:00Z',
  provenance: [
    {
      feature: 'glucose',
      imputed: false,
      inputs: ['Observation/g1/_history/3', 'Observation/g2/_history/1'],
    },
    { feature: 'age', imputed: false, inputs: ['Patient/123/_history/7'] },
  ],
};

const ISSUED = new Date('2024-06-15T12:00:00.000Z');

const args = (extra: Partial<ReportTransactionArgs> = {}): ReportTransactionArgs => ({
  manifest: gbm,
  patient: 'Patient/123',
  row,
  prediction: { score: 212.4567 },
  issued: ISSUED,
  ...extra,
});

function entries(a: ReportTransactionArgs = args()): BundleEntry[] {
  return buildReportTransaction(a).bundle.entry ?? [];
}

function resourceOf<T extends Resource>(type: T['resourceType'], list: BundleEntry[] = entries()): T {
  const found = list.find((e) => e.resource?.resourceType === type);
  if (!found) throw new Error(`no ${type} entry`);
  return found.resource as T;
}

const UUID_URN = /^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

describe('buildReportTransaction: bundle shape', () => {
  const { bundle, idempotencyKey: key } = buildReportTransaction(args());
  const list = bundle.entry ?? [];
  const urlOf = (type: string): string => list.find((e) => e.resource?.resourceType === type)?.fullUrl ?? '';

  it('is one transaction of Device, Observation, DiagnosticReport and Provenance with urn:uuid fullUrls', () => {
    expect(bundle.resourceType).toBe('Bundle');
    expect(bundle.type).toBe('transaction');
    expect(list.map((e) => e.resource?.resourceType)).toEqual([
      'Device',
      'Observation',
      'DiagnosticReport',
      'Provenance',
    ]);
    for (const e of list) expect(e.fullUrl).toMatch(UUID_URN);
    expect(new Set(list.map((e) => e.fullUrl)).size).toBe(4);
    expect(key).toMatch(/^[0-9a-f]{64}$/);
  });

  it('requests: conditional creates for Device, Observation, report; PUT for Provenance', () => {
    expect(list.map((e) => e.request)).toEqual([
      {
        method: 'POST',
        url: 'Device',
        ifNoneExist: 'identifier=urn:fhir-analytics:model|diabetes-progression-gbm@1.2.0',
      },
      {
        method: 'POST',
        url: 'Observation',
        ifNoneExist: `identifier=urn:fhir-analytics:idempotency-key|${key}-score`,
      },
      {
        method: 'POST',
        url: 'DiagnosticReport',
        ifNoneExist: `identifier=urn:fhir-analytics:idempotency-key|${key}`,
      },
      { method: 'PUT', url: `Provenance/${resourceOf<Provenance>('Provenance', list).id ?? ''}` },
    ]);
    expect(list[3]?.fullUrl).toBe(`urn:uuid:${resourceOf<Provenance>('Provenance', list).id ?? ''}`);
  });

  it('Device: the model version', () => {
    const device = resourceOf<Device>('Device', list);
    expect(device.identifier).toEqual([
      { system: 'urn:fhir-analytics:model', value: 'diabetes-progression-gbm@1.2.0' },
    ]);
    expect(device.deviceName).toEqual([
      { name: 'Diabetes progression (gradient boosting)', type: 'model-name' },
    ]);
    expect(device.version).toEqual([{ value: '1.2.0' }]);
    expect(device.modelNumber).toBe('diabetes-progression-gbm');
  });

  it('DiagnosticReport: status, codes, subject, times, no Device performer, result, conclusion, identifier', () => {
    const report = resourceOf<DiagnosticReport>('DiagnosticReport', list);
    expect(report).toMatchObject({
      status: 'preliminary',
      code: { coding: [{ system: PROJECT, code: 'diabetes-progression-report' }] },
      category: [{ coding: [{ system: V2_0074, code: 'LAB' }] }],
      subject: { reference: 'Patient/123' },
      effectiveDateTime: '2024-05-15T08:30:00Z',
      issued: '2024-06-15T12:00:00.000Z',
      result: [{ reference: urlOf('Observation') }],
      conclusionCode: [{ coding: [{ system: PROJECT, code: 'progression-moderate' }] }],
      identifier: [{ system: 'urn:fhir-analytics:idempotency-key', value: key }],
    });
    expect(report.performer).toBeUndefined();
    expect(report.conclusion).toBe(
      'Moderate progression (score 212). AI-generated by diabetes-progression-gbm 1.2.0; not for clinical use.',
    );
  });

  it('Observation: the score with its unit, derived from the input Observations with versions', () => {
    const score = resourceOf<Observation>('Observation', list);
    expect(score).toMatchObject({
      status: 'preliminary',
      code: { coding: [{ system: PROJECT, code: 'diabetes-progression-score' }] },
      subject: { reference: 'Patient/123' },
      effectiveDateTime: '2024-05-15T08:30:00Z',
      issued: '2024-06-15T12:00:00.000Z',
      valueQuantity: {
        value: 212.457,
        unit: '{score}',
        system: 'http://unitsofmeasure.org',
        code: '{score}',
      },
      device: { reference: urlOf('Device') },
      identifier: [{ system: 'urn:fhir-analytics:idempotency-key', value: `${key}-score` }],
    });
    expect(score.derivedFrom).toEqual([
      { reference: 'Observation/g1/_history/3' },
      { reference: 'Observation/g2/_history/1' },
    ]);
    expect(score.component).toBeUndefined();
  });

  it('Provenance: targets, recorded, the Device as author, each input with its version', () => {
    const provenance = resourceOf<Provenance>('Provenance', list);
    expect(provenance.target).toEqual([
      { reference: urlOf('DiagnosticReport') },
      { reference: urlOf('Observation') },
    ]);
    expect(provenance.recorded).toBe('2024-06-15T12:00:00.000Z');
    expect(provenance.agent).toEqual([
      {
        type: {
          coding: [
            {
              system: 'http://terminology.hl7.org/CodeSystem/provenance-participant-type',
              code: 'author',
              display: 'Author',
            },
          ],
        },
        who: { reference: urlOf('Device'), display: 'Diabetes progression (gradient boosting) 1.2.0' },
      },
    ]);
    expect(provenance.entity).toEqual([
      { role: 'source', what: { reference: 'Observation/g1/_history/3' } },
      { role: 'source', what: { reference: 'Observation/g2/_history/1' } },
      { role: 'source', what: { reference: 'Patient/123/_history/7' } },
    ]);
  });

  it('labels every resource AIAST and written-by-fhir-analytics', () => {
    for (const e of list) {
      expect(e.resource?.meta?.security).toContainEqual(AI_ASSERTED_SECURITY_LABEL);
      expect(e.resource?.meta?.tag).toContainEqual(WRITTEN_BY_TAG);
      expect(isWrittenByFhirAnalytics(e.resource)).toBe(true);
    }
    expect(AI_ASSERTED_SECURITY_LABEL).toEqual({
      system: 'http://terminology.hl7.org/CodeSystem/v3-ObservationValue',
      code: 'AIAST',
      display: 'Artificial Intelligence asserted',
    });
    expect(isWrittenByFhirAnalytics({ meta: { tag: [{ system: 'x', code: 'y' }] } })).toBe(false);
    expect(isWrittenByFhirAnalytics(undefined)).toBe(false);
  });

  it('carries no patient data beyond the subject reference', () => {
    const text = JSON.stringify(bundle);
    expect(text).not.toContain('"value":140');
    expect(text).not.toContain('"value":54');
    // The report's and the Observation's subject, and the Provenance entity (versioned).
    expect(text.match(/Patient\/123/g)?.length).toBe(3);
  });
});

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
