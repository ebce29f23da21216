/**
 * CDS services and cards derived from the manifests, validated against the CDS Hooks 2.0
 * schemas, and the FHIR server allow-list.
 */
import { perturbedRows, rankSensitivities } from '../../shared/partner/sensitivity.js';
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

  it('name the inputs and mark imputed values; without sensitivities no feature is singled out', () => {
    const m = manifests.find((x) => x.id === 'diabetes-gbm');
    if (!m) throw new Error('diabetes-gbm manifest missing');
    const card = scoreCard({ manifest: m, cardUrl: 'https://x.example/card' }, rowFor(m), { score: 100 });
    expect(card.detail).toContain('no feature is singled out');
    expect(card.detail).toContain('| age —');
    expect(card.detail).toContain('imputed');
  });

  it('name the three features the score moved most with, and say it is a local sensitivity', () => {
    const m = manifests.find((x) => x.id === 'diabetes-gbm');
    if (!m) throw new Error('diabetes-gbm manifest missing');
    const sens = rankSensitivities(
      ['bmi', 'glucose', 'hdl_cholesterol', 'mean_bp'],
      100,
      [101, 112.5, 96, 100],
    );
    const card = scoreCard(
      { manifest: m, cardUrl: 'https://x.example/card' },
      rowFor(m),
      { score: 100 },
      sens,
    );
    expect(card.detail).toContain(
      'Features that drove the score: glucose (+12.5), hdl_cholesterol (−4), bmi (+1)',
    );
    expect(card.detail).toContain('not a causal attribution');
    expect(card.detail).not.toContain('mean_bp (');
  });

  it('perturb only observed numeric inputs (the newest step of a sequence), each on its own', () => {
    const gbm = manifests.find((x) => x.id === 'diabetes-gbm');
    const pbc = manifests.find((x) => x.id === 'pbc-gru');
    if (!gbm || !pbc) throw new Error('manifest missing');
    const row = rowFor(gbm); // age (patient), sex (imputed: index 1), then observed labs 3..10
    const { rows, features } = perturbedRows(gbm, row);
    expect(features).toEqual(
      gbm.input.kind === 'tabular'
        ? gbm.input.features.filter((f) => f.source === 'observation').map((f) => f.name)
        : [],
    );
    rows.forEach((r, k) => {
      const j =
        gbm.input.kind === 'tabular' ? gbm.input.features.findIndex((f) => f.name === features[k]) : -1;
      expect(r.values[j]).toBeCloseTo((row.values[j] ?? 0) * 1.1, 5);
      expect(
        [...r.values].filter(
          (v, i) => i !== j && !(Number.isNaN(v) && Number.isNaN(row.values[i])) && v !== row.values[i],
        ),
      ).toEqual([]);
    });
    const width = pbc.input.kind === 'sequence' ? pbc.input.features.length : 0;
    const seq = {
      values: Float32Array.from({ length: 2 * width }, (_, i) => i + 1),
      shape: [2, width],
      mask: Float32Array.from([1, 1]),
      inputs: [],
      effective: undefined,
      provenance: (pbc.input.kind === 'sequence' ? pbc.input.features : []).map((f) => ({
        feature: f.name,
        imputed: false,
        inputs: [],
      })),
    };
    const perturbed = perturbedRows(pbc, seq);
    // Labs only (patient age/sex and the coded signs are not perturbed), at the newest (last) step.
    expect(perturbed.features).toEqual([
      'bilirubin',
      'albumin',
      'alk_phos',
      'ast',
      'platelets',
      'protime',
      'cholesterol',
    ]);
    expect(perturbed.rows[0]?.values[width + 2]).toBeCloseTo((width + 3) * 1.1, 4);
    expect(perturbed.rows[0]?.values[2]).toBe(3);
    expect(perturbedRows(pbc, { ...seq, mask: Float32Array.from([1, 0]) }).rows).toEqual([]);
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
