/**
 * What the report-transaction tests (reports*.test.ts) share: a manifest like the diabetes GBM
 * (a regression with three bands), a feature row with versioned inputs, the builder's arguments,
 * and readers of the bundle's entries.
 */
import type { BundleEntry, Resource } from '@medplum/fhirtypes';
import { parseManifest, type ModelManifest } from '../../shared/inference/manifest.js';
import { buildReportTransaction, type ReportTransactionArgs } from '../../shared/reports/index.js';
import type { FeatureRow } from '../../shared/types.js';

const LOINC = 'http://loinc.org';
export const PROJECT = 'urn:fhir-analytics:code';
export const V2_0074 = 'http://terminology.hl7.org/CodeSystem/v2-0074';
const LOINC_GLUCOSE = '2345-7'; // Glucose [Mass/volume] in Serum or Plasma

/** Like the diabetes GBM: a regression on 10 tabular features, bands at 0 / 150 / 250. */
export const gbm: ModelManifest = parseManifest(
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

export const row: FeatureRow = {
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

export const args = (extra: Partial<ReportTransactionArgs> = {}): ReportTransactionArgs => ({
  manifest: gbm,
  patient: 'Patient/123',
  row,
  prediction: { score: 212.4567 },
  issued: ISSUED,
  ...extra,
});

export function entries(a: ReportTransactionArgs = args()): BundleEntry[] {
  return buildReportTransaction(a).bundle.entry ?? [];
}

export function resourceOf<T extends Resource>(type: T['resourceType'], list: BundleEntry[] = entries()): T {
  const found = list.find((e) => e.resource?.resourceType === type);
  if (!found) throw new Error(`no ${type} entry`);
  return found.resource as T;
}

export const UUID_URN = /^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
