/**
 * What the local endpoint server reads from a Triton model configuration (`config.pbtxt`):
 * `max_batch_size` and the `dynamic_batching` block (`max_queue_delay_microseconds`,
 * `preferred_batch_size`), with Triton's defaults. Without a config.pbtxt the max batch size
 * comes from the manifest and dynamic batching is on with no queue delay, as Triton's
 * auto-completed configuration of a batching ONNX model has it.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

export interface ModelDynamicBatching {
  /** `max_queue_delay_microseconds` in ms; Triton's default is 0 (no wait). */
  maxQueueDelayMs: number;
  /** The largest `preferred_batch_size`; undefined when the config names none. */
  preferredBatchSize: number | undefined;
}

export interface ModelConfig {
  /** Undefined when neither config.pbtxt nor the manifest says. */
  maxBatchSize: number | undefined;
  /** Undefined when the model's config has no `dynamic_batching` block (each request runs alone). */
  dynamicBatching: ModelDynamicBatching | undefined;
}

/** The text inside the braces of `name { ... }` at the top level of a config, or undefined. */
function block(config: string, name: string): string | undefined {
  const start = new RegExp(`^\\s*${name}\\s*\\{`, 'm').exec(config);
  if (!start) return undefined;
  let depth = 1;
  const from = start.index + start[0].length;
  for (let i = from; i < config.length; i++) {
    if (config[i] === '{') depth++;
    else if (config[i] === '}' && --depth === 0) return config.slice(from, i);
  }
  return config.slice(from);
}

/** Parses the parts of a config.pbtxt this server uses. */
export function parseModelConfig(config: string): ModelConfig {
  const max = /^\s*max_batch_size\s*:\s*(\d+)/m.exec(config)?.[1];
  const dynamic = block(config, 'dynamic_batching');
  let dynamicBatching: ModelDynamicBatching | undefined;
  if (dynamic !== undefined) {
    const delayUs = /max_queue_delay_microseconds\s*:\s*(\d+)/.exec(dynamic)?.[1];
    const preferred = [...dynamic.matchAll(/preferred_batch_size\s*:\s*\[?([\d\s,]+)\]?/g)]
      .flatMap((m) => (m[1] ?? '').split(/[\s,]+/))
      .filter((s) => s !== '')
      .map(Number);
    dynamicBatching = {
      maxQueueDelayMs: delayUs === undefined ? 0 : Number(delayUs) / 1000,
      preferredBatchSize: preferred.length ? Math.max(...preferred) : undefined,
    };
  }
  return { maxBatchSize: max === undefined ? undefined : Number(max), dynamicBatching };
}

/** The model folder's configuration, falling back to its manifest's `serving.maxBatchSize`. */
export async function readModelConfig(modelDir: string): Promise<ModelConfig> {
  let parsed: ModelConfig | undefined;
  try {
    parsed = parseModelConfig(await readFile(join(modelDir, 'config.pbtxt'), 'utf8'));
  } catch {
    // no config.pbtxt: the manifest's max batch size, dynamic batching with no delay
  }
  if (parsed?.maxBatchSize !== undefined) return parsed;
  let fromManifest: number | undefined;
  try {
    const manifest = JSON.parse(await readFile(join(modelDir, 'manifest.json'), 'utf8')) as {
      serving?: { maxBatchSize?: unknown };
    };
    const n = manifest.serving?.maxBatchSize;
    fromManifest = typeof n === 'number' ? n : undefined;
  } catch {
    fromManifest = undefined;
  }
  return {
    maxBatchSize: fromManifest,
    dynamicBatching: parsed ? parsed.dynamicBatching : { maxQueueDelayMs: 0, preferredBatchSize: undefined },
  };
}
