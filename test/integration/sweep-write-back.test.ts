/**
 * The sweep's write-back against the embedded FHIR server: the lean transaction client (the
 * same contract as the gateway's `transaction`), and reports built lazily by the writer's
 * workers, idempotent on a re-run, a report that cannot be built failing alone.
 */
import * as path from 'node:path';
import type { Bundle, DiagnosticReport, Provenance } from '@medplum/fhirtypes';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadHeldOutRows } from '../../local/demo/cohort.js';
import { syntheticPatient } from '../../local/fhir/export-cohort.js';
import { startFhirServer, type RunningFhirServer } from '../../local/fhir/server.js';
import { MODELS_DIR, ROOT } from '../../local/stack.js';
import { compileExtractor } from '../../shared/features/index.js';
import { FhirRequestError, FhirUnavailableError } from '../../shared/fhir/errors.js';
import type { ModelManifest } from '../../shared/inference/manifest.js';
import { loadRegistry } from '../../shared/inference/registry.js';
import { buildReportTransaction } from '../../shared/reports/index.js';
import { createTransactionClient, type TransactionClient } from '../../shared/sweep/transaction-client.js';
import { createReportWriter, type ReportWrite } from '../../shared/sweep/write-back.js';
import type { FeatureRow } from '../../shared/types.js';

let fhir: RunningFhirServer;
let client: TransactionClient;
let manifest: ModelManifest;
const rows: { patient: string; row: FeatureRow }[] = [];

beforeAll(async () => {
  fhir = await startFhirServer({ port: 0 });
  client = createTransactionClient({ baseUrl: fhir.baseUrl, backoffMs: 1 });
  const registry = await loadRegistry(MODELS_DIR);
  manifest = registry.all().find((m) => m.id === 'diabetes-gbm') as ModelManifest;
  const extractor = compileExtractor(manifest);
  const heldOut = loadHeldOutRows(path.join(ROOT, 'local', 'demo', 'data', 'diabetes-heldout.json'));
  for (let i = 0; i < 12; i++) {
    const { patient, observations } = syntheticPatient(i, heldOut, { patients: 12, seed: 5, gapEvery: 0 });
    await fhir.repo.createResource(patient, { assignedId: true });
    for (const o of observations) await fhir.repo.createResource(o, { assignedId: true });
    const extracted = extractor.extract(patient, observations, new Date());
    if (extracted.status === 'ok') rows.push({ patient: `Patient/${patient.id ?? ''}`, row: extracted.row });
  }
});

afterAll(async () => {
  client.close();
  await fhir.close();
});

const report = (r: { patient: string; row: FeatureRow }, score: number): ReportWrite => ({
  build: () =>
    buildReportTransaction({
      manifest,
      patient: r.patient,
      row: r.row,
      prediction: { score },
      issued: new Date(),
    }).bundle,
});

describe('sweep write-back', () => {
  it('writes lazily built reports once each, and finds them all on a re-run; a report that cannot be built fails alone', async () => {
    // Arrange
    const writer = createReportWriter(client, { concurrency: 3 });
    const writes: ReportWrite[] = rows.map((r, i) => report(r, 50 + i));
    writes.splice(5, 0, {
      build: () => {
        throw new Error('no report');
      },
    });

    // Act
    const first = await writer.write(writes);
    const second = await writer.write(writes);

    // Assess
    expect(rows).toHaveLength(12);
    expect(first.map((r) => (r.ok ? r.created : r.error.message))).toEqual([
      ...Array<boolean>(5).fill(true),
      'no report',
      ...Array<boolean>(7).fill(true),
    ]);
    expect(second.filter((r) => r.ok && !r.created)).toHaveLength(12);
    const reports = await fhir.repo.searchResources<DiagnosticReport>({ resourceType: 'DiagnosticReport' });
    expect(new Set(reports.map((r) => r.subject?.reference))).toEqual(new Set(rows.map((r) => r.patient)));
    expect(reports).toHaveLength(12);
    // Every Provenance names the stored Device, never the bundle's urn:uuid.
    const provenances = await fhir.repo.searchResources<Provenance>({ resourceType: 'Provenance' });
    const agents = provenances.flatMap((p) => p.agent.map((a) => a.who.reference ?? ''));
    expect(agents.some((a) => a.startsWith('Device/'))).toBe(true);
    expect(agents.some((a) => a.startsWith('urn:uuid:'))).toBe(false);
  });

  it('asks for minimal transaction responses: entries keep status and location, without the stored resources', async () => {
    // Arrange
    const [a, b] = rows;
    const bundleOf = (r: { patient: string; row: FeatureRow }): Bundle =>
      buildReportTransaction({
        manifest,
        patient: r.patient,
        row: r.row,
        prediction: { score: 7 },
        issued: new Date(),
      }).bundle;

    // Act
    const minimal = await client.transaction(bundleOf(a as (typeof rows)[number]), { minimal: true });
    const full = await client.transaction(bundleOf(b as (typeof rows)[number]));

    // Assess
    expect(minimal.type).toBe('transaction-response');
    expect(minimal.entry?.length).toBe(full.entry?.length);
    expect(minimal.entry?.every((e) => e.resource === undefined)).toBe(true);
    expect(minimal.entry?.map((e) => e.response?.status)).toEqual(full.entry?.map((e) => e.response?.status));
    expect(
      minimal.entry?.every((e) => /^[A-Za-z]+\/[^/]+\/_history\/\d+$/.test(e.response?.location ?? '')),
    ).toBe(true);
    expect(full.entry?.every((e) => e.resource?.id !== undefined)).toBe(true);
  });

  it('the transaction client refuses with FhirRequestError on a 4xx, and says unavailable when nothing answers', async () => {
    // Arrange
    const refused: Bundle = {
      resourceType: 'Bundle',
      type: 'transaction',
      entry: [
        {
          request: { method: 'POST', url: 'NoSuchType' },
          resource: { resourceType: 'Basic', code: {} },
        } as never,
      ],
    };
    const nowhere = createTransactionClient({
      baseUrl: 'http://127.0.0.1:9/fhir',
      attempts: 2,
      backoffMs: 1,
    });

    // Act
    const bad = await client.transaction(refused).catch((err: unknown) => err);
    const down = await nowhere
      .transaction({ resourceType: 'Bundle', type: 'transaction' })
      .catch((err: unknown) => err);
    nowhere.close();

    // Assess
    expect(bad).toBeInstanceOf(FhirRequestError);
    expect((bad as FhirRequestError).status).toBeGreaterThanOrEqual(400);
    expect((bad as FhirRequestError).status).toBeLessThan(500);
    expect(down).toBeInstanceOf(FhirUnavailableError);
  });
});
