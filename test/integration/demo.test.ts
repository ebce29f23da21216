import { PassThrough } from 'node:stream';
import type { DiagnosticReport, Observation, Provenance } from '@medplum/fhirtypes';
import { afterAll, describe, expect, it } from 'vitest';
import { runDemo, type DemoSummary } from '../../local/demo/run.js';
import type { RunningStack } from '../../local/stack.js';
import { createFhirGateway } from '../../shared/fhir/gateway.js';

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
    fhirPort: 0,
    sagemakerPort: 0,
    queuePort: 0,
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
    expect(s.patients).toBe(89);
    expect(s.events).toBe(89);
    // The cohort leaves 15 patients without a usable required input on purpose (see cohort.ts).
    expect(s.insufficientData).toBe(15);
    expect(s.written).toBe(74);
    expect(s.failedRecords).toBe(0);
    expect(s.deadLettered).toBe(0);
    expect(first.output).toContain('reports written          74');

    const fhir = createFhirGateway({ baseUrl: first.stack.fhir.baseUrl });
    const reports = await fhir.searchAll<DiagnosticReport>('DiagnosticReport', { _count: '500' });
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
    const provenance = await fhir.searchAll<Provenance>('Provenance', { _count: '500' });
    expect(provenance).toHaveLength(74);
    // Each Provenance names the versioned inputs: 8 Observations and the Patient.
    for (const p of provenance) {
      const entities = (p.entity ?? []).map((e) => e.what.reference ?? '');
      expect(
        entities.filter((e) => /^Observation\/[^/]+\/_history\/\d+$/.test(e)).length,
      ).toBeGreaterThanOrEqual(7);
    }

    const second = await demo({ fhirBaseUrl: first.stack.fhir.baseUrl });
    expect(second.summary.written).toBe(0);
    expect(second.summary.unchanged).toBe(74);
    expect(second.summary.reportsOnServer).toBe(74);
    const after = await fhir.searchAll<Provenance>('Provenance', { _count: '500' });
    expect(after).toHaveLength(74);
  });
});
