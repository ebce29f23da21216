/**
 * The sweep definition: which models, over which cohort, since when. What EventBridge
 * Scheduler sends the coordinator, what `fhir-analytics sweep` builds from its flags.
 */
import * as z from 'zod';
import type { ModelManifest } from '../inference/manifest.js';
import { SweepInputError } from './errors.js';

const FHIR_ID = /^[A-Za-z0-9\-.]{1,64}$/;

/** A search cohort's query (`Patient?a=1&b=2` or `a=1&b=2`) as parameters. */
export const cohortQueryParams = (query: string): URLSearchParams =>
  new URLSearchParams(query.replace(/^Patient\?/, ''));

/** The paged search carries a cohort query as one value per parameter name. */
function noRepeatedParameter(query: string): boolean {
  const names = [...cohortQueryParams(query).keys()];
  return new Set(names).size === names.length;
}

export const CohortSchema = z.union([
  /** Every patient the server holds (`Patient/$export`). */
  z.object({ kind: z.literal('all') }),
  /** The members of a Group (`Group/[id]/$export`, `Group.member.entity`). */
  z.object({ kind: z.literal('group'), group: z.string().regex(FHIR_ID) }),
  /**
   * A FHIR search for Patients (`Patient?address-state=MA`): runs as paged search, since
   * `$export` has no patient filter of that kind.
   */
  z.object({
    kind: z.literal('search'),
    query: z.string().min(1).max(2000).refine(noRepeatedParameter, {
      error:
        'each search parameter may appear once (a repeated one, e.g. two birthdate bounds, is not supported: the sweep would keep only the last)',
    }),
  }),
]);
export type Cohort = z.infer<typeof CohortSchema>;

export const SweepDefinitionSchema = z.object({
  /** Names the sweep across runs: incremental runs take `_since` from this name's last success. */
  name: z
    .string()
    .regex(/^[A-Za-z0-9_.-]{1,64}$/)
    .default('default'),
  /** Model ids (manifest `id`); tabular and sequence models. Empty: every such model. */
  models: z.array(z.string().regex(/^[a-z0-9-]{1,64}$/)).default([]),
  cohort: CohortSchema.default({ kind: 'all' }),
  /**
   * `full`: every patient; `incremental`: `_since` = the last successful sweep's transactionTime
   * (a full sweep when there is none); an ISO instant: exactly that `_since`.
   */
  since: z
    .union([z.literal('full'), z.literal('incremental'), z.iso.datetime({ offset: true })])
    .default('incremental'),
  /** Patients per inference call and write-back batch, and per checkpoint. */
  batchSize: z.number().int().min(1).max(5000).default(500),
  /** Resource types exported besides Patient and the models' own (Observation, ImagingStudy). */
  extraTypes: z.array(z.string().regex(/^[A-Z][A-Za-z]{1,63}$/)).default([]),
});
export type SweepDefinition = z.infer<typeof SweepDefinitionSchema>;
export type SweepDefinitionInput = z.input<typeof SweepDefinitionSchema>;

export function parseSweepDefinition(input: unknown): SweepDefinition {
  const parsed = SweepDefinitionSchema.safeParse(input);
  if (!parsed.success) {
    const detail = parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');
    throw new SweepInputError(`invalid sweep definition: ${detail}`);
  }
  return parsed.data;
}

/** The definition's models: known ids, Observation-driven (image models need DICOMweb, not a sweep). */
export function selectModels(all: readonly ModelManifest[], definition: SweepDefinition): ModelManifest[] {
  const usable = all.filter((m) => m.input.kind !== 'image');
  if (definition.models.length === 0) return usable;
  return definition.models.map((id) => {
    const m = all.find((x) => x.id === id);
    if (!m) throw new SweepInputError(`unknown model "${id}"`);
    if (m.input.kind === 'image')
      throw new SweepInputError(`model "${id}" reads images: not available in sweeps`);
    return m;
  });
}
