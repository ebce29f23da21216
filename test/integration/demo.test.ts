import { PassThrough } from 'node:stream';
import type { DiagnosticReport, Observation, Provenance } from '@medplum/fhirtypes';
import { afterAll, describe, expect, it } from 'vitest';
import { runDemo, type DemoSummary } from '../../local/demo/run.js';
import type { RunningStack } from '../../local/stack.js';
import { createFhirGateway } from '../../shared/fhir/gateway.js';
import { DEMO_CLIENT } from '../../local/jwks-issuer.js';

const stacks: RunningStack[] = [];
afterAll(async () => {
  for (const s of stacks) await s.close();
});

async function demo(
  opts: { fhirBaseUrl?: string } = {},
): Promise<{ summary: DemoSummary; stack: RunningStack; output: string }> {
  const out = new PassThrough();
  const chunks: Buffer[] = [];
  out.on('data', (c: Buffer) => chunks.push(c));
  const { summary, stack } = await runDemo({
    ...opts,
    anyPorts: true,
    out,
    logLevel: 'error',
  });
  stacks.push(stack);
  return { summary, stack, output: Buffer.concat(chunks).toString('utf8') };
}

describe('npm start (the demo) end to end', () => {
  it('writes one report per eligible patient, with its Observation and Provenance, and a second run adds none', async () => {
    const first = await demo();
    const s = first.summary;
    // 89 diabetes, 63 PBC and 12 imaging patients, one new result each, delivered by Subscriptions.
    expect(s.viaSubscriptions).toBe(true);
    expect(s.patients).toBe(164);
    expect(s.events).toBe(164);
    // The diabetes cohort leaves 15 patients without a usable required input on purpose (see cohort.ts).
    expect(s.perModel).toEqual({
      'diabetes-gbm': { written: 74, unchanged: 0, insufficient: 15 },
      'lung-nodule-cnn': { written: 12, unchanged: 0, insufficient: 0 },
      'pbc-attention': { written: 63, unchanged: 0, insufficient: 0 },
      'pbc-gru': { written: 63, unchanged: 0, insufficient: 0 },
    });
    expect(s.failedRecords).toBe(0);
    expect(s.deadLettered).toBe(0);
    expect(first.output).toContain('reports written          212');

    // The stack's partner API serves every model, the CNN included (DICOMweb configured).
    const token = await first.stack.issuer.accessToken(DEMO_CLIENT);
    const listed = (await (
      await fetch(`${first.stack.gateway.url}/v1/models`, { headers: { authorization: `Bearer ${token}` } })
    ).json()) as { models: { id: string }[] };
    expect(listed.models.map((m) => m.id).sort()).toContain('lung-nodule-cnn');

    const fhir = createFhirGateway({ baseUrl: first.stack.fhir.baseUrl });
    const all = await fhir.searchAll<DiagnosticReport>('DiagnosticReport', { _count: '1000' });
    expect(all).toHaveLength(212);
    const reports = all.filter((r) => r.code.coding?.[0]?.code === 'diabetes-progression-report');
    expect(reports).toHaveLength(74);
    expect(new Set(reports.map((r) => r.subject?.reference)).size).toBe(74);
    for (const r of reports) {
      expect(r.status).toBe('preliminary');
      expect(r.meta?.security?.map((c) => c.code)).toContain('AIAST');
      expect(r.result).toHaveLength(1);
    }
    const scores = await fhir.searchAll<Observation>('Observation', {
      code: 'urn:fhir-analytics:code|diabetes-progression-score',
      _count: '500',
    });
    expect(scores).toHaveLength(74);
    const provenance = await fhir.searchAll<Provenance>('Provenance', { _count: '1000' });
    expect(provenance).toHaveLength(212);
    // Each Provenance names versioned inputs: Observations (or the ImagingStudy) with their versions.
    for (const p of provenance) {
      const entities = (p.entity ?? []).map((e) => e.what.reference ?? '');
      expect(entities.some((e) => /^(Observation|ImagingStudy)\/[^/]+\/_history\/\d+$/.test(e))).toBe(true);
    }

    // Against the same server (no Subscriptions there: the demo sends the events itself).
    const second = await demo({ fhirBaseUrl: first.stack.fhir.baseUrl });
    expect(second.summary.viaSubscriptions).toBe(false);
    expect(second.summary.written).toBe(0);
    expect(second.summary.unchanged).toBe(212);
    expect(second.summary.reportsOnServer).toBe(212);
    const after = await fhir.searchAll<Provenance>('Provenance', { _count: '1000' });
    expect(after).toHaveLength(212);
    // Nothing was rewritten: the reports were found by their idempotency keys before any inference.
    expect(after.every((p) => p.meta?.versionId === '1')).toBe(true);
  });
});
