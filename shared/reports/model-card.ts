/**
 * The model card of a model version as a FHIR R4 DocumentReference (HL7 AI Transparency on FHIR,
 * "AI Model-Card DocumentReference"): the `models/<id>/card.md` markdown as an attachment,
 * identified by `<modelId>@<version>` so that a conditional create writes it once per version.
 *
 * How it is linked (R4 has no core element for it):
 * - the model's Device names it with the IG's `modelCardDescription` extension
 *   (`valueReference`), the link "from the Device" the IG defines for R4;
 * - each report's Provenance lists it as an `entity` with role `derivation`, the R4 role the IG
 *   uses for the model card (R5's `instantiates` is not in R4).
 * The card does not point back at the Device: a cycle of `urn:uuid:` references inside one
 * transaction is something servers resolve differently, and one direction is searchable enough.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Coding, DocumentReference } from '@medplum/fhirtypes';
import type { ModelManifest } from '../inference/manifest.js';
import { writtenMeta } from './labels.js';

/** Identifier system of model-card DocumentReferences; the value is `<modelId>@<version>`. */
export const MODEL_CARD_SYSTEM = 'urn:fhir-analytics:model-card';

/** The IG's extension on Device that references its model card. */
export const MODEL_CARD_EXTENSION =
  'http://hl7.org/fhir/uv/aitransparency/StructureDefinition/aitransparency.modelCardDescription';

export const AI_MODEL_CARD_CS = 'http://hl7.org/fhir/uv/aitransparency/CodeSystem/AImodelCardCS';
const TYPE_MODEL_CARD: Coding = { system: AI_MODEL_CARD_CS, code: 'AIModelCard', display: 'AI Model-Card' };
const CATEGORY_MARKDOWN: Coding = {
  system: AI_MODEL_CARD_CS,
  code: 'AImodelCardMarkdownFormat',
  display: 'Markdown Format',
};

/** R4 `Provenance.entity.role` for the model card (the IG's choice in R4). */
export const MODEL_CARD_ENTITY_ROLE = 'derivation';

export interface ModelCard {
  /** The card as written in `models/<id>/card.md`. */
  readonly markdown: string;
}

/** Model cards by model id. */
export type ModelCards = ReadonlyMap<string, ModelCard>;

/** `<modelId>@<version>`: the identifier value of a model version's Device and model card. */
export const modelVersionId = (manifest: Pick<ModelManifest, 'id' | 'version'>): string =>
  `${manifest.id}@${manifest.version}`;

/** A card's attachment data (base64), size and SHA-1, computed once per card: every report's transaction carries the card. */
const encoded = new WeakMap<
  ModelCard,
  { readonly data: string; readonly size: number; readonly hash: string }
>();

function encode(card: ModelCard): { readonly data: string; readonly size: number; readonly hash: string } {
  let found = encoded.get(card);
  if (!found) {
    const bytes = Buffer.from(card.markdown, 'utf8');
    // R4: the SHA-1 of the data, base64.
    found = {
      data: bytes.toString('base64'),
      size: bytes.length,
      hash: createHash('sha1').update(bytes).digest('base64'),
    };
    encoded.set(card, found);
  }
  return found;
}

/**
 * The DocumentReference of one model version's card. Deterministic (no creation time), so the
 * same card gives the same resource: `docStatus` final, because the card of a released version
 * does not change (a new card is a new version); `status` current.
 */
export function modelCardDocument(
  manifest: ModelManifest,
  card: ModelCard,
  system = MODEL_CARD_SYSTEM,
): DocumentReference {
  const { data, size, hash } = encode(card);
  return {
    resourceType: 'DocumentReference',
    meta: writtenMeta(),
    identifier: [{ system, value: modelVersionId(manifest) }],
    status: 'current',
    docStatus: 'final',
    type: { coding: [{ ...TYPE_MODEL_CARD }], text: 'AI model card' },
    category: [{ coding: [{ ...CATEGORY_MARKDOWN }] }],
    description: `Model card of ${manifest.title} ${manifest.version}; not for clinical use.`,
    content: [
      {
        attachment: {
          contentType: 'text/markdown',
          language: 'en',
          data,
          size,
          hash,
          title: `${manifest.title} ${manifest.version}: model card`,
        },
      },
    ],
  };
}

/**
 * Reads `<dir>/<id>/card.md` of every model, once per cold start. A model without a card is an
 * error: every report must name its model card.
 */
export async function loadModelCards(dir: string, manifests: readonly ModelManifest[]): Promise<ModelCards> {
  const cards = new Map<string, ModelCard>();
  for (const m of manifests) {
    const file = join(dir, m.id, 'card.md');
    let markdown: string;
    try {
      markdown = await readFile(file, 'utf8');
    } catch (err) {
      throw new Error(`model ${m.id} has no model card at ${file}`, { cause: err });
    }
    if (!markdown.trim()) throw new Error(`model ${m.id} has an empty model card at ${file}`);
    cards.set(m.id, { markdown });
  }
  return cards;
}
