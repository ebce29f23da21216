/**
 * The shared FHIR corpus through the real HTTP API of the embedded FHIR server and the
 * extractors: every US Core example, and the Synthea patient posted as a transaction.
 */
import { readdirSync, readFileSync } from 'node:fs';
import type {
  Bundle,
  ImagingStudy,
  Observation,
  OperationOutcome,
  Patient,
  Resource,
} from '@medplum/fhirtypes';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDicomWebServer, type RunningDicomWebServer } from '../../local/dicomweb/server.js';
import { startFhirServer, type RunningFhirServer } from '../../local/fhir/server.js';
import { compileExtractor, compileImageExtractor } from '../../shared/features/index.js';
import { TabularInputSchema } from '../../shared/inference/manifest.js';
import { loadRegistry, type ModelRegistry } from '../../shared/inference/registry.js';
import { corpusDir, loadCorpus } from '../unit/helpers/corpus.js';

const LOINC = 'http://loinc.org';
const MODELS = new URL('../../models/', import.meta.url).pathname;
const DICOM_DIR = new URL('../../local/demo/data/dicom/', import.meta.url).pathname;

let fhir: RunningFhirServer;
let registry: ModelRegistry;

// eslint-disable-next-line @typescript-eslint/no-unnecessary-type-parameters -- the caller names the body type
async function http<T>(method: string, path: string, body?: unknown): Promise<{ status: number; json: T }> {
  const res = await fetch(`${fhir.baseUrl}/${path}`, {
    method,
    headers: { 'content-type': 'application/fhir+json', accept: 'application/fhir+json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, json: (await res.json()) as T };
}

async function searchAll<T extends Resource>(query: string): Promise<T[]> {
  const { json } = await http<Bundle<T>>('GET', `${query}&_count=1000`);
  return (json.entry ?? []).flatMap((e) => (e.resource ? [e.resource] : []));
}

beforeAll(async () => {
  fhir = await startFhirServer({ port: 0 });
  registry = await loadRegistry(MODELS);
});
afterAll(async () => {
  await fhir.close();
});

const bpInput = TabularInputSchema.parse({
  kind: 'tabular',
  tensor: 'x',
  features: [
    {
      name: 'sys',
      source: 'observation',
      codes: [{ system: LOINC, code: '8480-6' }],
      unit: 'mm[Hg]',
      lookback: 'P30Y',
      required: false,
      imputation: { strategy: 'nan' },
    },
    {
      name: 'dia',
      source: 'observation',
      codes: [{ system: LOINC, code: '8462-4' }],
      unit: 'mm[Hg]',
      lookback: 'P30Y',
      required: false,
      imputation: { strategy: 'nan' },
    },
    {
      name: 'glucose',
      source: 'observation',
      codes: [{ system: LOINC, code: '2345-7' }],
      unit: 'mmol/L',
      molecularWeight: 180.156,
      lookback: 'P30Y',
      required: false,
      imputation: { strategy: 'nan' },
    },
    {
      name: 'platelets',
      source: 'observation',
      codes: [{ system: LOINC, code: '777-3' }],
      unit: '10*3/uL',
      lookback: 'P30Y',
      required: false,
      imputation: { strategy: 'nan' },
    },
    {
      name: 'bmi',
      source: 'observation',
      codes: [{ system: LOINC, code: '39156-5' }],
      unit: 'kg/m2',
      lookback: 'P30Y',
      required: false,
      imputation: { strategy: 'nan' },
    },
  ],
});
const AS_OF = new Date('2024-06-15T00:00:00Z');

describe('US Core examples through the FHIR server', () => {
  const files = readdirSync(`${String(corpusDir())}us-core/`)
    .filter((f) => f.endsWith('.json'))
    .sort();
  let observations: Observation[] = [];
  let patient: Patient;

  beforeAll(async () => {
    for (const file of files) {
      const resource = loadCorpus<Resource>(`us-core/${file}`);
      const { status } = await http('PUT', `${resource.resourceType}/${String(resource.id)}`, resource);
      expect([200, 201], file).toContain(status);
    }
    patient = (await http<Patient>('GET', 'Patient/example')).json;
    observations = await searchAll<Observation>('Observation?subject=Patient/example');
  });

  it('every example is stored and read back through HTTP', async () => {
    expect(files).toHaveLength(18);
    for (const file of files) {
      const r = loadCorpus<Resource>(`us-core/${file}`);
      const { status, json } = await http<Resource>('GET', `${r.resourceType}/${String(r.id)}`);
      expect(status, file).toBe(200);
      expect(json.meta?.versionId).toBeDefined();
    }
    expect(observations.length).toBeGreaterThanOrEqual(10);
  });

  it('reads panel components, the data-absent diastolic and dates without times', () => {
    const result = compileExtractor({ id: 'bp', input: bpInput }).extract(patient, observations, AS_OF);
    if (result.status !== 'ok') throw new Error('expected ok');
    const [sys, dia, glucose, platelets, bmi] = [...result.row.values];
    expect(sys).toBe(109); // blood-pressure.json and bp-data-absent.json: both systolic 109, same day
    expect(dia).toBe(44); // only blood-pressure.json has a diastolic
    expect(glucose).toBeCloseTo(76 / 18.0156, 4); // 76 mg/dL → mmol/L with 180.156 g/mol
    expect(platelets).toBe(200); // observation-cbc-platelets.json: 200 10*3/uL
    expect(bmi).toBeCloseTo(16.2, 5); // bmi.json: 16.2 kg/m2
    expect(result.skipped).toContainEqual({
      feature: 'dia',
      reference: 'Observation/bp-data-absent/_history/1',
      reason: 'value:absent',
    });
    expect(result.row.effective).toBe('2005-07-05'); // the glucose date without a time is the newest
  });

  it('reads the smoking status (a CodeableConcept value) and the averaged blood pressure (components)', () => {
    const input = TabularInputSchema.parse({
      kind: 'tabular',
      tensor: 'x',
      features: [
        {
          name: 'smoker',
          source: 'observation',
          codes: [{ system: 'http://loinc.org', code: '72166-2' }],
          lookback: 'P100Y',
          required: true,
          valueMap: { 'http://snomed.info/sct|428041000124106': 1, 'http://snomed.info/sct|266919005': 0 },
        },
        {
          name: 'avg_sys',
          source: 'observation',
          codes: [{ system: 'http://loinc.org', code: '96608-5' }],
          unit: 'mm[Hg]',
          lookback: 'P100Y',
          required: true,
        },
        {
          name: 'avg_dia',
          source: 'observation',
          codes: [{ system: 'http://loinc.org', code: '96609-3' }],
          unit: 'mm[Hg]',
          lookback: 'P100Y',
          required: true,
        },
      ],
    });
    const result = compileExtractor({ id: 'corpus', input }).extract(patient, observations, AS_OF);
    if (result.status !== 'ok') throw new Error(`expected ok, missing ${result.missing.join(',')}`);
    expect([...result.row.values]).toEqual([1, 109, 72]); // some-day-smoker; average BP 109/72
  });

  it('imaging results that are not ImagingStudies do not start the CNN', () => {
    for (const file of [
      'observation-xray-chest-findings.json',
      'media-chest-xray.json',
      'DiagnosticReport-chest-xray-report.json',
    ]) {
      const ids = registry.matching(loadCorpus<Resource>(`us-core/${file}`)).map((m) => m.id);
      expect(ids, file).not.toContain('lung-nodule-cnn');
    }
    const ct: ImagingStudy = {
      resourceType: 'ImagingStudy',
      status: 'available',
      subject: { reference: 'Patient/example' },
      series: [{ uid: '1.2.3', modality: { code: 'CT' } }],
    };
    expect(registry.matching(ct).map((m) => m.id)).toEqual(['lung-nodule-cnn']);
    const xray: ImagingStudy = { ...ct, series: [{ uid: '1.2.3', modality: { code: 'DX' } }] };
    expect(registry.matching(xray)).toEqual([]);
  });

  it('every real model extracts without throwing; the ones lacking inputs say insufficient-data', () => {
    for (const m of registry.all()) {
      if (m.input.kind === 'image') continue;
      const result = compileExtractor(m).extract(patient, observations, AS_OF);
      // None of the models has all its required inputs in the US Core examples (no PBC liver
      // panel, no cytology, no OGTT, no lipid panel).
      expect(result.status, m.id).toBe('insufficient-data');
    }
  });
});

describe('the Synthea patient as a transaction', () => {
  const bundle = loadCorpus<Bundle>('synthea/sample_complete_patient.json');
  let observations: Observation[] = [];
  let patient: Patient;

  it('unresolvable conditional references give a clear OperationOutcome, nothing stored', async () => {
    const { status, json } = await http<OperationOutcome>('POST', '', bundle);
    expect(status).toBe(400);
    expect(json.resourceType).toBe('OperationOutcome');
    expect(JSON.stringify(json.issue)).toMatch(
      /Conditional reference '(Practitioner|Organization|Location)\?identifier=/,
    );
    expect(await searchAll<Patient>('Patient?family=Abbott')).toEqual([]);
  });

  it('resolves once the referenced resources exist, then the extractors run for the patient', async () => {
    const refs = new Set(
      [...JSON.stringify(bundle).matchAll(/"reference":\s*"([A-Za-z]+)\?identifier=([^|"]+)\|([^"]+)"/g)].map(
        (m) => m.slice(1, 4).join('\u0000'),
      ),
    );
    for (const ref of refs) {
      const [type, system, value] = ref.split('\u0000') as [string, string, string];
      const resource = {
        resourceType: type,
        identifier: [{ system, value }],
        ...(type === 'Practitioner' ? { name: [{ family: 'Doe' }] } : { name: value }),
      };
      expect((await http('POST', type, resource)).status).toBe(201);
    }
    const { status, json } = await http<Bundle>('POST', '', bundle);
    expect(status).toBe(200);
    expect(json.entry).toHaveLength(bundle.entry?.length ?? 0);
    const patientRef = json.entry
      ?.find((e) => e.response?.location?.startsWith('Patient/'))
      ?.response?.location?.split('/_history')[0];
    expect(patientRef).toBeDefined();
    patient = (await http<Patient>('GET', String(patientRef))).json;
    observations = await searchAll<Observation>(`Observation?subject=${String(patientRef)}`);
    expect(observations).toHaveLength(58);
    expect(patient.birthDate).toBe('1950-10-24');

    // Panels and labs that are there: the 20 BP panels' components, the lipid panel.
    const asOf = new Date('2024-01-01T00:00:00Z');
    const result = compileExtractor({
      id: 'bp',
      input: TabularInputSchema.parse({
        ...bpInput,
        features: bpInput.features.map((f) => ({ ...f, aggregate: 'count' })),
      }),
    }).extract(patient, observations, asOf);
    if (result.status !== 'ok') throw new Error('expected ok');
    expect(result.row.values[0]).toBe(20); // systolic from 20 panels' components
    expect(result.row.values[1]).toBe(20);

    const outcomes = Object.fromEntries(
      registry
        .all()
        .filter((m) => m.input.kind !== 'image')
        .map((m) => {
          const r = compileExtractor(m).extract(patient, observations, asOf);
          return [m.id, r.status === 'ok' ? 'ok' : `missing:${r.missing.join(',')}`];
        }),
    );
    expect(outcomes['breast-cancer-svm']).toMatch(/^missing:mean_radius,/);
    expect(outcomes['diabetes-onset-rf']).toBe('missing:glucose_2h_ogtt');
    expect(outcomes['diabetes-gbm']).toMatch(/^missing:.*mean_bp/);
    // The PBC models require bilirubin, albumin and prothrombin time: Synthea has none of them.
    expect(outcomes['pbc-gru']).toBe('missing:bilirubin,albumin,protime');
    expect(outcomes['pbc-attention']).toBe('missing:bilirubin,albumin,protime');
  });
});

describe('the lung CNN over the demo DICOM files', () => {
  let dicom: RunningDicomWebServer;
  beforeAll(async () => {
    dicom = await startDicomWebServer({ dir: DICOM_DIR, port: 0 });
  });
  afterAll(async () => {
    await dicom.close();
  });

  it('extracts [1, 64, 64] in [0, 1] from each demo instance', async () => {
    const manifest = registry.get('lung-nodule-cnn');
    if (manifest?.input.kind !== 'image') throw new Error('lung-nodule-cnn is not an image model');
    const index = JSON.parse(readFileSync(`${DICOM_DIR}index.json`, 'utf8')) as {
      instances: { studyInstanceUid: string; seriesInstanceUid: string; sopInstanceUid: string }[];
    };
    const extractor = compileImageExtractor(manifest.input, { fetch, allowList: [dicom.url] });
    expect(index.instances.length).toBeGreaterThan(0);
    for (const inst of index.instances) {
      const study: ImagingStudy = {
        resourceType: 'ImagingStudy',
        id: 'demo',
        status: 'available',
        subject: { reference: 'Patient/x' },
        identifier: [{ system: 'urn:dicom:uid', value: `urn:oid:${inst.studyInstanceUid}` }],
        contained: [
          {
            resourceType: 'Endpoint',
            id: 'e',
            status: 'active',
            connectionType: { code: 'dicom-wado-rs' },
            payloadType: [{ text: 'DICOM' }],
            address: dicom.url,
          },
        ],
        endpoint: [{ reference: '#e' }],
        series: [
          {
            uid: inst.seriesInstanceUid,
            modality: { code: 'CT' },
            instance: [{ uid: inst.sopInstanceUid, sopClass: { code: '1.2.840.10008.5.1.4.1.1.2' } }],
          },
        ],
      };
      const result = await extractor.extract(study, AS_OF);
      if (result.status !== 'ok')
        throw new Error(`${inst.sopInstanceUid}: ${result.status} ${result.message}`);
      expect(result.row.shape).toEqual([1, 64, 64]);
      const values = [...result.row.values];
      expect(Math.min(...values)).toBeGreaterThanOrEqual(0);
      expect(Math.max(...values)).toBeLessThanOrEqual(1);
      // Lung parenchyma (−890 to −800 HU) windows to about 0.3: the median pixel is there.
      const median = values.sort((a, b) => a - b)[2048] as number;
      expect(median).toBeGreaterThan(0.25);
      expect(median).toBeLessThan(0.4);
    }
  });
});
