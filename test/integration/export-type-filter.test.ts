/**
 * `_typeFilter` on the embedded server's `$export`: each query narrows its type (alternatives
 * of one type OR-ed, parameters of one query AND-ed), in every kind of job, and a filter the
 * server cannot apply is refused with a 400 OperationOutcome naming it, never ignored.
 */
import type { Group, Observation, OperationOutcome, Patient, Resource } from '@medplum/fhirtypes';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { installBulkExport, type BulkExport } from '../../local/fhir/export.js';
import { GLUCOSE_CODE, loadSyntheticCohort } from '../../local/fhir/export-cohort.js';
import { startFhirServer, type RunningFhirServer } from '../../local/fhir/server.js';
import { createBulkClient } from '../../shared/sweep/bulk-client.js';
import { lines } from '../../shared/sweep/staging.js';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { compileTabular } from '../../shared/features/tabular.js';
import { observationSearchCodes } from '../../shared/features/search-codes.js';
import { parseManifest } from '../../shared/inference/manifest.js';
import { MODELS_DIR } from '../../local/stack.js';
import { exportTypeFilters } from '../../shared/sweep/type-filters.js';

const PATIENTS = 40;
const LOINC = 'http://loinc.org';
const BMI_CODE = '39156-5';
const OWN_TAG = { system: 'urn:test:own-writes', code: 'score' };

let fhir: RunningFhirServer;
let bulk: BulkExport;

beforeAll(async () => {
  fhir = await startFhirServer({ port: 0 });
  // 6 patients per cursor step and 50 resources per file: several pages and files.
  bulk = installBulkExport(fhir, { retryAfterSeconds: 0, chunkSize: 50, patientsPerPage: 6 });
  await loadSyntheticCohort(fhir.repo, { patients: PATIENTS, seed: 5 });
});

afterAll(async () => {
  await bulk.close();
  await fhir.close();
});

/** Kicks off an export with raw query parameters (repeated `_typeFilter` allowed). */
async function kickOff(path: string, params: [string, string][]): Promise<Response> {
  const url = new URL(`${fhir.baseUrl}/${path}`);
  for (const [k, v] of params) url.searchParams.append(k, v);
  return fetch(url, { headers: { Accept: 'application/fhir+json', Prefer: 'respond-async' } });
}

/** Runs an export to the end and returns every exported resource. */
async function exported(path: string, params: [string, string][]): Promise<Resource[]> {
  const res = await kickOff(path, params);
  expect(res.status).toBe(202);
  const client = createBulkClient({ baseUrl: fhir.baseUrl, minPollMs: 0 });
  const manifest = await client.waitForManifest(res.headers.get('content-location') ?? '');
  const out: Resource[] = [];
  for (const o of manifest.output) {
    for await (const line of lines(await client.download(o.url, false)))
      out.push(JSON.parse(line) as Resource);
  }
  return out;
}

const ids = (rs: readonly Resource[]): string[] => rs.map((r) => `${r.resourceType}/${r.id ?? ''}`).sort();
const codeOf = (o: Observation): string | undefined => o.code.coding?.[0]?.code;

async function all<T extends Resource>(type: T['resourceType']): Promise<T[]> {
  return fhir.repo.searchResources<T>({ resourceType: type });
}

describe('$export _typeFilter', () => {
  it('exports only the Observations a code query names, and every Patient', async () => {
    // Arrange
    const glucose = (await all<Observation>('Observation')).filter((o) => codeOf(o) === GLUCOSE_CODE);
    const patients = await all<Patient>('Patient');

    // Act
    const got = await exported('Patient/$export', [
      ['_type', 'Patient,Observation'],
      ['_typeFilter', `Observation?code=${LOINC}|${GLUCOSE_CODE}`],
    ]);

    // Assert
    expect(glucose.length).toBeGreaterThan(0);
    expect(ids(got)).toEqual(ids([...patients, ...glucose]));
  });

  it('ORs the queries of one type, in one value or repeated, and exports each resource once', async () => {
    // Arrange: the second query overlaps the first (every glucose Observation is final).
    const observations = await all<Observation>('Observation');
    const wanted = observations.filter((o) => [GLUCOSE_CODE, BMI_CODE].includes(codeOf(o) ?? ''));

    // Act
    const oneValue = await exported('Patient/$export', [
      ['_type', 'Observation'],
      ['_typeFilter', `Observation?code=${GLUCOSE_CODE},Observation?code=${BMI_CODE}`],
    ]);
    const repeated = await exported('Patient/$export', [
      ['_type', 'Observation'],
      ['_typeFilter', `Observation?code=${BMI_CODE}`],
      ['_typeFilter', `Observation?code=${GLUCOSE_CODE}&status=final`],
      ['_typeFilter', `Observation?code=${GLUCOSE_CODE}`],
    ]);

    // Assert
    expect(ids(oneValue)).toEqual(ids(wanted));
    expect(ids(repeated)).toEqual(ids(wanted));
    expect(new Set(ids(repeated)).size).toBe(repeated.length);
  });

  it('narrows Patients of a group export, and the changes of an incremental one', async () => {
    // Arrange: a Group of the first 10 patients; then, after a timestamp, one own-tagged
    // Observation (a score) and one untagged change.
    const patients = (await all<Patient>('Patient')).slice(0, 10);
    const group = await fhir.repo.createResource<Group>({
      resourceType: 'Group',
      type: 'person',
      actual: true,
      member: patients.map((p) => ({ entity: { reference: `Patient/${p.id ?? ''}` } })),
    });
    const female = patients.filter((p) => p.gender === 'female');
    await new Promise((r) => setTimeout(r, 5));
    const since = new Date().toISOString();
    await new Promise((r) => setTimeout(r, 5));
    const subject = { reference: `Patient/${patients[0]?.id ?? ''}` };
    const own = await fhir.repo.createResource<Observation>({
      resourceType: 'Observation',
      meta: { tag: [OWN_TAG] },
      status: 'final',
      code: { coding: [{ system: LOINC, code: '55284-4' }] },
      subject,
    });
    const changed = await fhir.repo.createResource<Observation>({
      resourceType: 'Observation',
      status: 'final',
      code: { coding: [{ system: LOINC, code: GLUCOSE_CODE }] },
      subject,
      valueQuantity: { value: 101, unit: 'mg/dL' },
    });

    // Act
    const groupPatients = await exported(`Group/${group.id}/$export`, [
      ['_type', 'Patient'],
      ['_typeFilter', 'Patient?gender=female'],
    ]);
    const changes = await exported('Patient/$export', [
      ['_type', 'Observation'],
      ['_since', since],
      ['_typeFilter', `Observation?_tag:not=${OWN_TAG.system}|${OWN_TAG.code}`],
    ]);

    // Assert
    expect(female.length).toBeGreaterThan(0);
    expect(female.length).toBeLessThan(patients.length);
    expect(ids(groupPatients)).toEqual(ids(female));
    expect(ids(changes)).toEqual(ids([changed]));
    expect(ids(changes)).not.toContain(`Observation/${own.id}`);
  });

  it("takes the sweep's own filter through the Bulk Data client", async () => {
    // Arrange
    const codes = [`${LOINC}|${GLUCOSE_CODE}`, `${LOINC}|${BMI_CODE}`];
    const wanted = (await all<Observation>('Observation')).filter((o) =>
      [GLUCOSE_CODE, BMI_CODE].includes(codeOf(o) ?? ''),
    );
    const client = createBulkClient({ baseUrl: fhir.baseUrl, minPollMs: 0 });

    // Act
    const status = await client.kickOff({
      level: 'patient',
      types: ['Observation'],
      typeFilters: exportTypeFilters(codes),
    });
    const manifest = await client.waitForManifest(status);
    const got: Resource[] = [];
    for (const o of manifest.output) {
      for await (const line of lines(await client.download(o.url, false)))
        got.push(JSON.parse(line) as Resource);
    }

    // Assert
    expect(ids(got)).toEqual(ids(wanted));
  });

  it('keeps a blood-pressure panel whose diastolic component a model reads, and the model reads it', async () => {
    // Arrange: the RF model reads diastolic pressure (8462-4); this patient has it only as a
    // component of a US Core blood-pressure panel (85354-9).
    const file = path.join(MODELS_DIR, 'diabetes-onset-rf', 'manifest.json');
    const rf = parseManifest(JSON.parse(readFileSync(file, 'utf8')), file);
    if (rf.input.kind !== 'tabular') throw new Error('the RF model is tabular');
    const patient = await fhir.repo.createResource<Patient>({
      resourceType: 'Patient',
      birthDate: '1970-01-01',
    });
    const panel = await fhir.repo.createResource<Observation>({
      resourceType: 'Observation',
      status: 'final',
      code: { coding: [{ system: LOINC, code: '85354-9' }] },
      subject: { reference: `Patient/${patient.id}` },
      effectiveDateTime: new Date().toISOString(),
      component: [
        {
          code: { coding: [{ system: LOINC, code: '8480-6' }] },
          valueQuantity: { value: 128, unit: 'mm[Hg]', system: 'http://unitsofmeasure.org', code: 'mm[Hg]' },
        },
        {
          code: { coding: [{ system: LOINC, code: '8462-4' }] },
          valueQuantity: { value: 83, unit: 'mm[Hg]', system: 'http://unitsofmeasure.org', code: 'mm[Hg]' },
        },
      ],
    });
    const client = createBulkClient({ baseUrl: fhir.baseUrl, minPollMs: 0 });

    // Act: the sweep's export filter for the RF model, and the extractor on what it exported.
    const status = await client.kickOff({
      level: 'patient',
      types: ['Observation'],
      typeFilters: exportTypeFilters(observationSearchCodes([rf])),
    });
    const manifest = await client.waitForManifest(status);
    const got: Observation[] = [];
    for (const o of manifest.output) {
      for await (const line of lines(await client.download(o.url, false)))
        got.push(JSON.parse(line) as Observation);
    }
    const mine = got.filter((o) => o.subject?.reference === `Patient/${patient.id}`);
    const extractor = compileTabular(rf.input);
    const result = extractor.extract(patient, mine, new Date());

    // Assert
    expect(ids(mine)).toEqual([`Observation/${panel.id}`]);
    const diastolic = rf.input.features.findIndex((f) => f.name === 'diastolic_bp');
    expect(diastolic).toBeGreaterThanOrEqual(0);
    expect(result.status).toBe('insufficient-data'); // no 2-h glucose: the row is not scored
    expect(result.skipped).toEqual([]);
    const withGlucose = extractor.extract(
      patient,
      [
        ...mine,
        {
          resourceType: 'Observation',
          id: 'glucose-2h',
          status: 'final',
          code: { coding: [{ system: LOINC, code: '20438-8' }] },
          effectiveDateTime: new Date().toISOString(),
          valueQuantity: { value: 140, unit: 'mg/dL', system: 'http://unitsofmeasure.org', code: 'mg/dL' },
        },
      ],
      new Date(),
    );
    expect(withGlucose).toMatchObject({ status: 'ok' });
    if (withGlucose.status === 'ok') expect(withGlucose.row.values[diastolic]).toBe(83);
  });

  it.each([
    ['Observation?foo=1', 'unknown search parameter foo'],
    ['Observation?code=x&_count=5', 'result parameters are not supported'],
    ['Condition?code=x', 'Condition is not in _type'],
    ['Observation?', 'no search parameter'],
    ['code=x', 'not Type?query'],
    ['Observation?code:foo=x', 'modifier :foo of code is not supported'],
    ['Observation?subject:Patient=p1', 'modifier :Patient of subject is not supported'],
    ['Observation?code:in=http://example.org/vs', 'modifier :in of code is not supported'],
    ['Observation?code:text=Diastolic', 'modifier :text of code is not supported'],
    ['Observation?subject:identifier=abc', 'modifier :identifier of subject is not supported'],
    ['Observation?date=2020-02-30', 'date'],
    ['Observation?code=', 'code has no value'],
    ['Observation?value-quantity=abc', 'value-quantity is not a number'],
    ['Observation?date=2020-13', 'date'],
    ['Observation?code=a%ZZ', 'not validly percent-encoded'],
    ['Observation?code:missing=maybe', 'takes true or false'],
  ])('refuses _typeFilter=%s with a 400 naming it', async (filter, reason) => {
    // Act
    const res = await kickOff('Patient/$export', [
      ['_type', 'Patient,Observation'],
      ['_typeFilter', filter],
    ]);

    // Assert
    expect(res.status).toBe(400);
    const outcome = (await res.json()) as OperationOutcome;
    expect(outcome.resourceType).toBe('OperationOutcome');
    const text = outcome.issue[0]?.details?.text ?? '';
    expect(text).toContain(filter);
    expect(text).toContain(reason);
  });
});
