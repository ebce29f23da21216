/**
 * CDS services and cards, derived from the model manifests: one `patient-view` service per
 * model that reads Observations (tabular and sequence inputs), with prefetch templates for
 * the Patient and for exactly the Observation codes the model reads; one card per call.
 *
 * The card's `detail` lists the inputs the model was given, and says so: the models do not
 * report per-feature attributions, and this service does not invent any.
 */
import { randomUUID } from 'node:crypto';
import { PERTURBATION, type Sensitivity } from './sensitivity.js';
import type { CdsCard, CdsService } from '../events/cds-hooks.js';
import type { ModelManifest, TabularFeature } from '../inference/manifest.js';
import { selectBand } from '../reports/index.js';
import type { FeatureRow, Prediction } from '../types.js';
import { observationSearchCodes } from '../features/search-codes.js';

export const PATIENT_VIEW = 'patient-view';
export const PREFETCH_PATIENT = 'patient';
export const PREFETCH_OBSERVATIONS = 'observations';
const SUMMARY_MAX = 139;

/** Models a `patient-view` service can serve: those whose inputs are Observations and the Patient. */
export function servesPatientView(manifest: ModelManifest): boolean {
  return manifest.input.kind === 'tabular' || manifest.input.kind === 'sequence';
}

export function serviceFor(manifest: ModelManifest): CdsService {
  const codes = observationSearchCodes([manifest]);
  return {
    hook: PATIENT_VIEW,
    id: manifest.id,
    title: manifest.title,
    description: `${manifest.intendedUse} AI-generated; research use only, not for clinical use.`,
    prefetch: {
      [PREFETCH_PATIENT]: 'Patient/{{context.patientId}}',
      ...(codes.length
        ? {
            [PREFETCH_OBSERVATIONS]: `Observation?patient={{context.patientId}}&code=${codes
              .map(encodeURIComponent)
              .join(',')}`,
          }
        : {}),
    },
    usageRequirements:
      'Research and demonstration only: not for clinical use. Prefetch both keys, or pass fhirServer and fhirAuthorization with read access to Patient and Observation.',
  };
}

export interface CardContext {
  readonly manifest: ModelManifest;
  /** Absolute URL of the model card. */
  readonly cardUrl: string;
}

function source(ctx: CardContext): CdsCard['source'] {
  return {
    label: `${ctx.manifest.id} ${ctx.manifest.version} model card`,
    url: ctx.cardUrl,
    topic: { system: 'urn:fhir-analytics:model', code: ctx.manifest.id, display: ctx.manifest.family },
  };
}

function truncate(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
}

function displayNumber(n: number): string {
  if (!Number.isFinite(n)) return 'n/a';
  return String(Number(n.toPrecision(4)));
}

function featureLabel(f: TabularFeature): string {
  if (f.source === 'observation') {
    const c = f.codes[0];
    return c ? `${c.display ?? c.code} (${c.code})` : f.name;
  }
  return f.source === 'patient.age' ? 'Age (from birth date)' : 'Administrative sex';
}

function featureUnit(f: TabularFeature): string {
  if (f.source === 'patient.age') return 'a';
  if (f.source === 'patient.sex') return 'code';
  const unit = f.unit ?? '1';
  return f.transform === 'ln' ? `ln(${unit})` : unit;
}

const escapeCell = (s: string): string => s.replace(/\|/g, '\\|').replace(/\n/g, ' ');

/** The features that drove the score near this patient's values, as card lines. */
function drivers(sensitivities: readonly Sensitivity[]): string[] {
  const top = sensitivities.filter((s) => s.delta !== 0).slice(0, 3);
  if (top.length === 0) {
    return ['No observed numeric input moved the score when raised by 10%; no feature is singled out.', ''];
  }
  const list = top.map((s) => `${s.feature} (${s.delta > 0 ? '+' : '−'}${displayNumber(Math.abs(s.delta))})`);
  return [
    `Features that drove the score: ${list.join(', ')}, the change in score when each observed input ` +
      `is raised by ${String(PERTURBATION * 100)}% on its own. This is the model's local sensitivity ` +
      "near this patient's values, not a causal attribution.",
    '',
  ];
}

/** The card for a score. */
export function scoreCard(
  ctx: CardContext,
  row: FeatureRow,
  prediction: Prediction,
  sensitivities: readonly Sensitivity[] = [],
): CdsCard {
  const { manifest } = ctx;
  const band = selectBand(manifest.output.thresholds, prediction.score);
  const label = band ? (band.conclusion.display ?? band.conclusion.code) : 'Model score';
  const score = displayNumber(prediction.score);
  const summary = truncate(
    `${label}: ${score} (${manifest.id}, AI-generated, not for clinical use)`,
    SUMMARY_MAX,
  );
  const features = manifest.input.kind === 'image' ? [] : manifest.input.features;
  const flat = row.shape.length === 1 && row.shape[0] === features.length;
  const lines = [
    `**${manifest.title}** — ${manifest.id} ${manifest.version}. AI-generated; research use only, **not for clinical use**.`,
    '',
    `Score **${score}**${manifest.output.unit === '1' ? '' : ` ${manifest.output.unit}`}` +
      (band ? `, band "${label}" (${band.indicator} at ≥ ${band.atOrAbove}).` : '.'),
    '',
    ...drivers(sensitivities),
    'Inputs the model was given: the values the score was computed from.',
    '',
    flat ? '| feature | value | unit | source |' : '| feature | source |',
    flat ? '|---|---|---|---|' : '|---|---|',
  ];
  features.forEach((f, i) => {
    const prov = row.provenance.find((p) => p.feature === f.name);
    const value = row.values[i];
    const imputed = prov?.imputed ?? false;
    const how = imputed
      ? Number.isNaN(value)
        ? 'not available: imputed inside the model'
        : 'not available: imputed with the training median'
      : `observed (${String(prov?.inputs.length ?? 0)} resource${prov?.inputs.length === 1 ? '' : 's'})`;
    const name = escapeCell(`${f.name} — ${featureLabel(f)}`);
    lines.push(
      flat
        ? `| ${name} | ${value === undefined || Number.isNaN(value) ? '—' : displayNumber(value)} | ${escapeCell(featureUnit(f))} | ${how} |`
        : `| ${name} | ${how} |`,
    );
  });
  return {
    uuid: randomUUID(),
    summary,
    detail: lines.join('\n'),
    indicator: band?.indicator ?? 'info',
    source: source(ctx),
  };
}

/** The card when required inputs are missing: no score, and which features were missing. */
export function insufficientDataCard(ctx: CardContext, missing: readonly string[]): CdsCard {
  const { manifest } = ctx;
  const features = manifest.input.kind === 'image' ? [] : manifest.input.features;
  const lines = [
    `**${manifest.title}** — ${manifest.id} ${manifest.version}: no score was computed, because ` +
      `these required inputs had no usable value within their look-back windows:`,
    '',
    ...missing.map((name) => {
      const f = features.find((x) => x.name === name);
      const lookback = f && f.source === 'observation' ? `, within ${f.lookback}` : '';
      return `- ${escapeCell(f ? `${name} — ${featureLabel(f)}${lookback}` : name)}`;
    }),
    '',
    'AI-generated; research use only, not for clinical use.',
  ];
  return {
    uuid: randomUUID(),
    summary: truncate(
      `${manifest.id}: not enough data for a score (missing ${missing.join(', ')})`,
      SUMMARY_MAX,
    ),
    detail: lines.join('\n'),
    indicator: 'info',
    source: source(ctx),
  };
}
