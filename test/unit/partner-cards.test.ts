/**
 * CDS services and cards derived from the manifests, validated against the CDS Hooks 2.0
 * schemas, and the FHIR server allow-list.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { MODELS_DIR } from '../../local/stack.js';
import { CdsCardSchema, CdsServiceSchema } from '../../shared/events/cds-hooks.js';
import type { ModelManifest } from '../../shared/inference/manifest.js';
import { loadRegistry } from '../../shared/inference/registry.js';
import {
  insufficientDataCard,
  scoreCard,
  serviceFor,
  servesPatientView,
} from '../../shared/partner/cards.js';
import { isAllowedFhirServer } from '../../shared/partner/cds.js';
import type { FeatureRow } from '../../shared/types.js';

let manifests: ModelManifest[];

beforeAll(async () => {
  manifests = (await loadRegistry(MODELS_DIR)).all();
});

function rowFor(m: ModelManifest): FeatureRow {
  const features = m.input.kind === 'image' ? [] : m.input.features;
  return {
    values: Float32Array.from(features.map((_, i) => (i === 1 ? NaN : i + 1))),
    shape: [features.length],
    inputs: ['Observation/1/_history/1'],
    effective: '2024-01-01T00:00:00Z',
    provenance: features.map((f, i) => ({
      feature: f.name,
      imputed: i === 1,
      inputs: i === 1 ? [] : ['Observation/1'],
    })),
  };
}

describe('services', () => {
  it('derives one valid patient-view service per Observation-based manifest, prefetching exactly its codes', () => {
    const served = manifests.filter(servesPatientView);
    expect(served.length).toBeGreaterThanOrEqual(3);
    for (const m of served) {
      const service = CdsServiceSchema.parse(serviceFor(m));
      expect(service.id).toBe(m.id);
      const query = service.prefetch?.observations ?? '';
      for (const f of m.input.kind === 'image' ? [] : m.input.features) {
        if (f.source !== 'observation') continue;
        for (const c of f.codes) expect(decodeURIComponent(query)).toContain(`${c.system}|${c.code}`);
      }
    }
    expect(manifests.filter((m) => m.input.kind === 'image').some(servesPatientView)).toBe(false);
  });
});

describe('cards', () => {
  it('take the indicator of the threshold band the score falls in, for every model', () => {
    for (const m of manifests.filter(servesPatientView)) {
      const ctx = { manifest: m, cardUrl: `https://partner.example.org/v1/models/${m.id}/card` };
      for (const band of m.output.thresholds) {
        const card = CdsCardSchema.parse(scoreCard(ctx, rowFor(m), { score: band.atOrAbove + 1e-6 }));
        expect(card.indicator).toBe(band.indicator);
        expect(card.summary.length).toBeLessThan(140);
        expect(card.source.url).toBe(ctx.cardUrl);
      }
    }
  });

  it('name the inputs, say that there are no attributions, and mark imputed values', () => {
    const m = manifests.find((x) => x.id === 'diabetes-gbm');
    if (!m) throw new Error('diabetes-gbm manifest missing');
    const card = scoreCard({ manifest: m, cardUrl: 'https://x.example/card' }, rowFor(m), { score: 100 });
    expect(card.detail).toContain('does not report how much each contributed');
    expect(card.detail).toContain('| age —');
    expect(card.detail).toContain('imputed');
  });

  it('insufficient data: info, no score, the missing features named', () => {
    const m = manifests.find((x) => x.id === 'diabetes-onset-rf');
    if (!m) throw new Error('diabetes-onset-rf manifest missing');
    const card = CdsCardSchema.parse(
      insufficientDataCard({ manifest: m, cardUrl: 'https://x.example/card' }, ['glucose_2h_ogtt', 'age']),
    );
    expect(card.indicator).toBe('info');
    expect(card.summary).toContain('glucose_2h_ogtt');
    expect(card.detail).toContain('within P1Y');
    expect(card.detail).not.toMatch(/score \*\*/i);
  });

  it('the schema refuses what the spec forbids', () => {
    const base = { summary: 's', indicator: 'info', source: { label: 'l' } };
    expect(CdsCardSchema.safeParse(base).success).toBe(true);
    expect(CdsCardSchema.safeParse({ ...base, summary: 'x'.repeat(140) }).success).toBe(false);
    expect(CdsCardSchema.safeParse({ ...base, indicator: 'hard-stop' }).success).toBe(false);
    expect(CdsCardSchema.safeParse({ ...base, detail: '' }).success).toBe(false);
    expect(CdsCardSchema.safeParse({ ...base, suggestions: [{ label: 'a' }] }).success).toBe(false);
    expect(CdsCardSchema.safeParse({ ...base, links: [] }).success).toBe(false);
  });
});

describe('FHIR server allow-list', () => {
  const allow = ['https://ehr.example.org/fhir', 'http://127.0.0.1:8080/fhir/'];
  it.each([
    ['https://ehr.example.org/fhir', true],
    ['https://ehr.example.org/fhir/', true],
    ['https://EHR.example.org/fhir/R4', true],
    ['http://127.0.0.1:8080/fhir', true],
    ['https://ehr.example.org/fhir-evil', false],
    ['https://ehr.example.org.evil.com/fhir', false],
    ['https://user@ehr.example.org/fhir', false],
    ['http://ehr.example.org/fhir', false],
    ['https://ehr.example.org/fhir?x=1', false],
    ['http://169.254.169.254/latest/meta-data', false],
    ['file:///etc/passwd', false],
    ['not a url', false],
  ])('%s → %s', (url, allowed) => {
    expect(isAllowedFhirServer(allow, url)).toBe(allowed);
  });
});
