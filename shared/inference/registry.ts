/**
 * The model registry: every `<dir>/<id>/manifest.json`, parsed and validated, and which
 * models a FHIR resource triggers.
 */
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Coding as FhirCoding, Resource } from '@medplum/fhirtypes';
import { ManifestError, parseManifest, type Coding, type ModelManifest, type Trigger } from './manifest.js';

export interface ModelRegistry {
  /** Every model, ordered by id. */
  all(): ModelManifest[];
  get(id: string): ModelManifest | undefined;
  /** The models whose triggers match the resource, ordered by id. */
  matching(resource: Resource): ModelManifest[];
}

const sameCoding = (a: Coding, b: FhirCoding): boolean => a.system === b.system && a.code === b.code;

/** The codings a resource can trigger on, for Observation codes. */
function observationCodings(resource: Resource): FhirCoding[] {
  if (resource.resourceType !== 'Observation') return [];
  return [...(resource.code.coding ?? []), ...(resource.component ?? []).flatMap((c) => c.code.coding ?? [])];
}

/** ImagingStudy modalities, study-level and per series (R4: Coding; codes such as `CT`). */
function modalities(resource: Resource): string[] {
  if (resource.resourceType !== 'ImagingStudy') return [];
  const codes = [...(resource.modality ?? []), ...(resource.series ?? []).map((s) => s.modality)];
  return codes.flatMap((c) => (c.code ? [c.code] : []));
}

export function triggerMatches(trigger: Trigger, resource: Resource): boolean {
  switch (trigger.resourceType) {
    case 'Observation': {
      const codings = observationCodings(resource);
      return trigger.codes.some((t) => codings.some((c) => sameCoding(t, c)));
    }
    case 'ImagingStudy':
      return modalities(resource).includes(trigger.modality);
  }
}

/** A registry over manifests already parsed (tests, and `loadRegistry`). Ids must be unique. */
export function createRegistry(manifests: readonly ModelManifest[]): ModelRegistry {
  const byId = new Map<string, ModelManifest>();
  for (const m of manifests) {
    if (byId.has(m.id)) throw new ManifestError(`model id "${m.id}" appears twice`);
    byId.set(m.id, m);
  }
  const sorted = [...byId.values()].sort((a, b) => a.id.localeCompare(b.id));
  return {
    all: () => [...sorted],
    get: (id) => byId.get(id),
    matching: (resource) => sorted.filter((m) => m.triggers.some((t) => triggerMatches(t, resource))),
  };
}

/**
 * Reads every `<dir>/<sub>/manifest.json` (folders without one, such as `training/`, are
 * skipped). Errors name the file and the failing path; a manifest whose id differs from its
 * folder name is refused.
 */
export async function loadRegistry(dir: string): Promise<ModelRegistry> {
  const entries = await readdir(dir, { withFileTypes: true });
  const manifests: ModelManifest[] = [];
  for (const entry of entries.filter((e) => e.isDirectory()).sort((a, b) => a.name.localeCompare(b.name))) {
    const file = join(dir, entry.name, 'manifest.json');
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
      throw err;
    }
    let raw: unknown;
    try {
      raw = JSON.parse(text);
    } catch (err) {
      throw new ManifestError(`${file}: not valid JSON (${(err as Error).message})`);
    }
    const manifest = parseManifest(raw, file);
    if (manifest.id !== entry.name) {
      throw new ManifestError(
        `${file}: invalid manifest: id: "${manifest.id}" differs from its folder "${entry.name}"`,
      );
    }
    manifests.push(manifest);
  }
  return createRegistry(manifests);
}
