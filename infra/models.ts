/**
 * The models the app serves, read from `models/<id>/manifest.json` at synthesis time: adding a
 * model folder adds its endpoint, with no change here.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { ModelManifestSchema, type ModelManifest } from '../shared/inference/manifest.js';
import { ConfigError, type AppConfig } from './config.js';
import { REPO_ROOT } from './paths.js';

/** One model as deployed: its manifest's serving section plus the effective instance type. */
export interface ServedModel {
  readonly id: string;
  readonly version: string;
  readonly family: ModelManifest['family'];
  readonly tritonModelName: string;
  readonly instanceType: string;
  readonly maxBatchSize: number;
  /** True when the instance type has a GPU (ml.g*, ml.p*). */
  readonly gpu: boolean;
}

/** GPU instance families SageMaker offers for real-time inference. */
export function isGpuInstance(instanceType: string): boolean {
  return /^ml\.(g\d|p\d)[a-z]*\./.test(instanceType);
}

/**
 * Instance types with local NVMe storage. SageMaker rejects `KmsKeyId` on their endpoint
 * configurations: the instance store is encrypted by the Nitro hardware module instead.
 */
export function hasLocalInstanceStorage(instanceType: string): boolean {
  return /^ml\.(g4dn|g5|g6|g6e|gr6|p3dn|p4d|p4de|p5|p5e|p5en|[cmr]5d|[cmr]5ad|[cmr]6id|[cmr]6gd|[cmr]7gd)\./.test(
    instanceType,
  );
}

/** Every manifest under `models/`, validated with the shared schema; errors name the file. */
export function readManifests(modelsDir = path.join(REPO_ROOT, 'models')): ModelManifest[] {
  const out: ModelManifest[] = [];
  for (const entry of readdirSync(modelsDir, { withFileTypes: true }).sort((a, b) =>
    a.name.localeCompare(b.name),
  )) {
    const file = path.join(modelsDir, entry.name, 'manifest.json');
    if (!entry.isDirectory() || !existsSync(file)) continue;
    const parsed = ModelManifestSchema.safeParse(JSON.parse(readFileSync(file, 'utf8')) as unknown);
    if (!parsed.success) {
      const detail = parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ');
      throw new ConfigError(`invalid model manifest models/${entry.name}/manifest.json: ${detail}`);
    }
    out.push(parsed.data);
  }
  return out;
}

/** The manifests selected by `models.include`, with `models.instanceTypes` applied. */
export function selectModels(config: AppConfig, manifests: readonly ModelManifest[]): ServedModel[] {
  const known = new Set(manifests.map((m) => m.id));
  for (const id of config.models.include ?? []) {
    if (!known.has(id)) throw new ConfigError(`models.include: no manifest for model "${id}" under models/`);
  }
  for (const id of Object.keys(config.models.instanceTypes)) {
    if (!known.has(id))
      throw new ConfigError(`models.instanceTypes.${id}: no manifest for model "${id}" under models/`);
  }
  const include = config.models.include ? new Set(config.models.include) : undefined;
  return manifests
    .filter((m) => include?.has(m.id) ?? true)
    .map((m) => {
      const instanceType = config.models.instanceTypes[m.id] ?? m.serving.instanceType;
      return {
        id: m.id,
        version: m.version,
        family: m.family,
        tritonModelName: m.serving.tritonModelName,
        instanceType,
        maxBatchSize: m.serving.maxBatchSize,
        gpu: isGpuInstance(instanceType),
      };
    });
}
