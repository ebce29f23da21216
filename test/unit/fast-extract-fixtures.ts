/**
 * Resources for the fast-extraction equivalence test (fast-extract.test.ts): the corpus (US Core
 * examples, the Synthea history), the write-back's transaction entries, the bench's synthetic
 * cohort, and hand-made edge cases for every shape the compiled path reads.
 */
import { readFileSync, readdirSync, statSync } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Resource } from '@medplum/fhirtypes';
import { loadHeldOutRows } from '../../local/demo/cohort.js';
import { syntheticPatient } from '../../local/fhir/export-cohort.js';
import { args, entries } from './reports-fixtures.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

function jsonFiles(dir: string): string[] {
  let found: string[] = [];
  for (const name of readdirSync(dir)) {
    const file = path.join(dir, name);
    if (statSync(file).isDirectory()) found = found.concat(jsonFiles(file));
    else if (name.endsWith('.json')) found.push(file);
  }
  return found;
}

/** Every resource in a value: the value itself, Bundle entries, contained resources. */
function resourcesIn(value: unknown, out: Resource[]): Resource[] {
  if (Array.isArray(value)) for (const v of value) resourcesIn(v, out);
  else if (value && typeof value === 'object') {
    if (typeof (value as { resourceType?: unknown }).resourceType === 'string') out.push(value as Resource);
    for (const v of Object.values(value)) resourcesIn(v, out);
  }
  return out;
}

/** The corpus in test/fixtures/corpus and the handbook's copy (../shared/corpus), when present. */
export function corpusResources(): Resource[] {
  const out: Resource[] = [];
  for (const dir of [
    path.join(ROOT, 'test', 'fixtures', 'corpus'),
    path.join(ROOT, '..', 'shared', 'corpus'),
  ]) {
    let files: string[] = [];
    try {
      files = jsonFiles(dir);
    } catch {
      continue; // the handbook's copy is not in every checkout
    }
    for (const file of files) resourcesIn(JSON.parse(readFileSync(file, 'utf8')), out);
  }
  return out;
}

/**
 * The write-back's resources as built (`urn:uuid:` references) and as a server stores them
 * (references rewritten to `Type/id`, ids and `meta.lastUpdated` assigned).
 */
export function reportResources(): Resource[] {
  const built = [
    ...entries(),
    ...entries(args({ row: { ...args().row, effective: undefined } })),
    ...entries(args({ patient: 'Patient/p-2', prediction: { score: 12 } })),
    ...entries(args({ modelCard: { markdown: '# Model card\n\nNot for clinical use.' } })),
  ].flatMap((e) => (e.resource ? [e.resource] : []));
  const ids = new Map<string, string>();
  for (const e of entries(args({ modelCard: { markdown: '# Card' } }))) {
    if (e.fullUrl && e.resource) ids.set(e.fullUrl, `${e.resource.resourceType}/${e.fullUrl.slice(-12)}`);
  }
  const stored = built.map((r, i) => {
    let json = JSON.stringify(r);
    for (const [urn, ref] of ids) json = json.split(urn).join(ref);
    const meta = {
      ...r.meta,
      versionId: String(i),
      lastUpdated: new Date(Date.UTC(2024, 5, 15, 12, i)).toISOString(),
    };
    return { ...(JSON.parse(json) as Resource), id: `r${String(i)}`, meta };
  });
  return [...built, ...stored];
}

/** The first `count` patients of the sweep bench's synthetic cohort, with their Observations. */
export function cohortResources(count: number): Resource[] {
  const rows = loadHeldOutRows(path.join(ROOT, 'local', 'demo', 'data', 'diabetes-heldout.json'));
  const out: Resource[] = [];
  for (let i = 0; i < count; i++) {
    const { patient, observations } = syntheticPatient(i, rows, {
      patients: count,
      today: new Date(Date.UTC(2026, 0, 1)),
    });
    const lastUpdated = new Date(Date.UTC(2026, 0, 1, 0, 0, i)).toISOString();
    out.push({ ...patient, meta: { versionId: '1', lastUpdated } });
    for (const o of observations) out.push({ ...o, meta: { versionId: '1', lastUpdated } });
  }
  return out;
}

const LOINC = 'http://loinc.org';

/** Date strings of every form Medplum's date conversion meets (some invalid on purpose). */
export const DATE_STRINGS: readonly string[] = [
  '2020',
  '2020-03',
  '2020-02',
  '2020-03-05',
  '2020-02-29',
  '2021-02-29',
  '2020-04-31',
  '2020-03-05T10:20:30Z',
  '2020-03-05T10:20:30.123Z',
  '2020-03-05T10:20:30.1Z',
  '2020-03-05T10:20:30.123456Z',
  '2020-03-05T10:20:30+01:00',
  '2020-03-05T10:20:30.123-05:00',
  '2020-03-05T10:20Z',
  '2020-03-05T24:00:00Z',
  '2020-03-05T10:20:60Z',
  '0001-01-01T00:00:00.000Z',
  '0050-06-15',
  '9999-12-31T23:59:59.999Z',
  '1900-02-29',
  '2000-02-29T00:00:00Z',
  '2020-13-01',
  '',
  'not a date',
];

/** Every reference form `resolve()` meets. */
export const REFERENCES: readonly object[] = [
  { reference: 'Patient/1' },
  { reference: 'Patient/1/_history/2' },
  { reference: 'http://example.org/fhir/Patient/1' },
  { reference: 'urn:uuid:0b9e6a3c-7c43-4b38-9a3c-1a2b3c4d5e6f' },
  { reference: '#contained-1' },
  { reference: 'Patient?identifier=urn:sys|1' },
  { reference: 'Group/g1' },
  { reference: '' },
  { reference: 'Patient' },
  { type: 'Patient', identifier: { system: 'urn:sys', value: '1' } },
  { type: 'Patient', identifier: { value: '1' } },
  { type: 'Device', identifier: { system: 'urn:sys', value: '1' } },
  { identifier: { system: 'urn:sys', value: '1' } },
  { display: 'only a display' },
  { reference: 'Patient/1', resource: { resourceType: 'Patient', id: '1' } },
  {},
];

/** Hand-made JSON as a resource: some of it is malformed on purpose. */
export const asResource = (json: object): Resource => json as Resource;

/** An Observation with the given elements. */
export const obs = (extra: Record<string, unknown>): Resource =>
  asResource({ resourceType: 'Observation', status: 'final', code: { text: 't' }, ...extra });

/** Hand-made resources for the shapes and values the fast path must agree on (or fall back for). */
export function edgeCases(): Resource[] {
  const out: Resource[] = [];
  for (const d of DATE_STRINGS) {
    out.push(obs({ effectiveDateTime: d }), obs({ effectiveInstant: d }), obs({ meta: { lastUpdated: d } }));
    out.push(obs({ effectivePeriod: { start: d } }), obs({ effectivePeriod: { end: d } }));
    out.push(obs({ effectivePeriod: { start: d, end: '2020-03-05T10:20:30Z' } }));
  }
  out.push(
    obs({ effectiveTiming: { event: ['2020-01-01', '2020-02-01'] } }),
    obs({ effectiveTiming: { repeat: { boundsPeriod: { start: '2020-01-01' } } } }),
    obs({ effectiveDateTime: '2020-01-01', effectivePeriod: { start: '2019-01-01' } }),
    obs({ effectivePeriod: {} }),
    obs({ effectivePeriod: { start: null, end: '2020-01-01' } }),
    obs({ effectiveDateTime: '2020-01-01', _effectiveDateTime: { id: 'x' } }),
    obs({ _effectiveDateTime: { extension: [{ url: 'urn:x', valueString: 'y' }] } }),
    obs({ meta: { lastUpdated: '2020-01-01T00:00:00Z', _lastUpdated: { id: 'x' } } }),
    obs({ effectiveDateTime: ['2020-01-01'] }),
    obs({ effectiveDateTime: 20200101 }),
    obs({ identifier: [] }),
    obs({ identifier: [{}] }),
    obs({ identifier: [{ value: 'v' }, { system: 'urn:s' }, { system: 'urn:s', value: 'V' }] }),
    obs({ identifier: [{ type: { text: 'MRN' }, value: 'x' }, null] }),
    obs({ identifier: { system: 'urn:s', value: 'scalar' } }),
    obs({ identifier: ['a string'] }),
    obs({ identifier: [[{ system: 'urn:s', value: 'nested' }]] }),
    obs({ code: { coding: [{ code: 'no-system' }, { system: LOINC, code: '2345-7', display: 'Glucose' }] } }),
    obs({ code: { coding: [{ system: LOINC }], text: 'only text' } }),
    obs({ code: {} }),
    obs({ code: { coding: [] } }),
    obs({ code: 'a string code' }),
    obs({ subject: 'Patient/1' }),
    obs({ subject: { reference: 5 } }),
    obs({ subject: { reference: 'Patient/1', _reference: { id: 'x' } } }),
    obs({ subject: { reference: 'Patient/1', resourceType: 'subject' } }),
    obs({ subject: null }),
    obs({ subject: {} }),
  );
  for (const ref of REFERENCES) {
    out.push(obs({ subject: ref }));
    out.push(
      asResource({
        resourceType: 'Provenance',
        recorded: '2024-01-01T00:00:00Z',
        agent: [{ who: ref }],
        target: [ref, { reference: 'Patient/1' }, ref],
      }),
    );
    out.push(
      asResource({
        resourceType: 'AuditEvent',
        agent: [{ who: ref }],
        entity: [{ what: ref }, { what: ref }],
      }),
    );
    out.push(asResource({ resourceType: 'Person', link: [{ target: ref }] }));
  }
  out.push(
    asResource({
      resourceType: 'DocumentReference',
      masterIdentifier: { value: 'm' },
      identifier: [{ value: 'm' }, { value: 'n' }],
    }),
    asResource({ resourceType: 'DocumentReference', masterIdentifier: { system: 'urn:s', value: 'm' } }),
    asResource({ resourceType: 'MedicationRequest', medicationCodeableConcept: { coding: [{ code: 'm' }] } }),
    asResource({ resourceType: 'MedicationRequest', medicationReference: { reference: 'Medication/1' } }),
    asResource({ resourceType: 'RiskAssessment', occurrenceDateTime: '2020-01-01' }),
    asResource({ resourceType: 'RiskAssessment', occurrencePeriod: { start: '2020-01-01' } }),
    asResource({
      resourceType: 'Substance',
      code: { text: 'x' },
      ingredient: [{ substanceCodeableConcept: { text: 'x' } }],
    }),
    asResource({
      resourceType: 'DiagnosticReport',
      status: 'final',
      code: { text: 'r' },
      effectivePeriod: { end: '2021' },
    }),
    asResource({ resourceType: 'Patient', identifier: [{ system: 'urn:s', value: 'p' }], meta: {} }),
    asResource({ resourceType: 'Patient', value: 3, identifier: [{ value: 'quantity-shaped' }] }),
    asResource({
      resourceType: 'Encounter',
      status: 'finished',
      class: { code: 'x' },
      period: { start: '2020-01-01T10:00:00+02:00' },
    }),
  );
  return out;
}
