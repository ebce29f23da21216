/**
 * The search index's extraction per resource (`extractForIndex`, local/fhir/search-index.ts):
 * the compiled fast path (local/fhir/fast-extract.ts) beside FHIRPath alone, in the same run,
 * on the resources the population sweep writes and loads: the synthetic cohort's Patients and
 * Observations, and the write-back's Observation, DiagnosticReport and Provenance as the server
 * stores them (references rewritten, `meta.lastUpdated` set).
 *
 * Run alone: `npx tsx bench/fast-extract.ts [rounds]` prints the JSON (µs per resource, best
 * round of each path; the rounds alternate between the paths).
 */
import { readFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import * as path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { Resource } from '@medplum/fhirtypes';
import { loadHeldOutRows } from '../local/demo/cohort.js';
import { ensureFhirDefinitions } from '../local/fhir/definitions.js';
import { syntheticPatient } from '../local/fhir/export-cohort.js';
import { extractForIndex, type ExtractOptions } from '../local/fhir/search-index.js';
import { parseManifest } from '../shared/inference/manifest.js';
import { buildReportTransaction } from '../shared/reports/index.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const PATIENTS = 500;

/** The cohort's resources and one write-back per patient, as stored. */
function samples(): Map<string, Resource[]> {
  const rows = loadHeldOutRows(path.join(ROOT, 'local', 'demo', 'data', 'diabetes-heldout.json'));
  const modelDir = path.join(ROOT, 'models', 'diabetes-gbm');
  const manifest = parseManifest(
    JSON.parse(readFileSync(path.join(modelDir, 'manifest.json'), 'utf8')),
    'diabetes-gbm',
  );
  const modelCard = { markdown: readFileSync(path.join(modelDir, 'card.md'), 'utf8') };
  const byType = new Map<string, Resource[]>();
  const add = (r: Resource): void => {
    const list = byType.get(r.resourceType) ?? [];
    list.push(r);
    byType.set(r.resourceType, list);
  };
  const stamp = { versionId: '1', lastUpdated: new Date().toISOString() };
  for (let i = 0; i < PATIENTS; i++) {
    const { patient, observations } = syntheticPatient(i, rows, { patients: PATIENTS });
    add({ ...patient, meta: stamp });
    for (const o of observations) add({ ...o, meta: stamp });
    const inputs = [
      `Patient/${patient.id ?? ''}/_history/1`,
      ...observations.map((o) => `Observation/${o.id ?? ''}/_history/1`),
    ];
    const { bundle } = buildReportTransaction({
      manifest,
      modelCard,
      patient: `Patient/${patient.id ?? ''}`,
      row: {
        values: new Float32Array(10),
        shape: [10],
        inputs: inputs.sort(),
        effective: observations[0]?.effectiveDateTime,
        provenance: [],
      },
      prediction: { score: 100 + i },
      issued: new Date(),
    });
    const refs = new Map<string, string>();
    for (const e of bundle.entry ?? []) {
      if (e.fullUrl && e.resource)
        refs.set(e.fullUrl, `${e.resource.resourceType}/w${String(i)}-${e.resource.resourceType}`);
    }
    for (const e of bundle.entry ?? []) {
      if (
        !e.resource ||
        e.resource.resourceType === 'Device' ||
        e.resource.resourceType === 'DocumentReference'
      )
        continue;
      let json = JSON.stringify(e.resource);
      for (const [urn, ref] of refs) json = json.split(urn).join(ref);
      const stored = JSON.parse(json) as Resource;
      add({
        ...stored,
        id: (refs.get(e.fullUrl ?? '') ?? '').split('/')[1],
        meta: { ...stored.meta, ...stamp },
      });
    }
  }
  return byType;
}

/** µs per resource for one pass over the list. */
function pass(list: readonly Resource[], options: ExtractOptions): number {
  let keys = 0;
  const started = process.hrtime.bigint();
  for (const r of list) {
    const { dates, postings } = extractForIndex(r, options);
    keys += postings.length + Object.keys(dates).length;
  }
  const us = Number(process.hrtime.bigint() - started) / 1000 / list.length;
  if (keys === 0) throw new Error('nothing extracted');
  return us;
}

export interface FastExtractFigure {
  readonly resourceType: string;
  readonly resources: number;
  /** Best round, µs per resource. */
  readonly fastUs: number;
  readonly fhirpathUs: number;
  readonly speedup: number;
}

export function benchFastExtract(rounds = 7): { loadavg: number[]; figures: FastExtractFigure[] } {
  ensureFhirDefinitions();
  const byType = samples();
  const figures: FastExtractFigure[] = [];
  for (const type of ['Observation', 'DiagnosticReport', 'Provenance', 'Patient']) {
    const list = byType.get(type) ?? [];
    if (list.length === 0) throw new Error(`no ${type} samples`);
    let fast = Infinity;
    let slow = Infinity;
    pass(list, { path: 'fast' }); // warm-up, both paths
    pass(list, { path: 'fhirpath' });
    for (let i = 0; i < rounds; i++) {
      fast = Math.min(fast, pass(list, { path: 'fast' }));
      slow = Math.min(slow, pass(list, { path: 'fhirpath' }));
    }
    const round = (x: number): number => Math.round(x * 100) / 100;
    figures.push({
      resourceType: type,
      resources: list.length,
      fastUs: round(fast),
      fhirpathUs: round(slow),
      speedup: round(slow / fast),
    });
  }
  return { loadavg: loadavg().map((x) => Math.round(x * 100) / 100), figures };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  console.log(JSON.stringify(benchFastExtract(Number(process.argv[2] ?? 7)), null, 2));
}
