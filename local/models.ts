/** `fhir-analytics models`: one line per model with its held-out metrics. */
import { loadRegistry } from '../shared/inference/registry.js';

export async function listModels(dir: string): Promise<string> {
  const registry = await loadRegistry(dir);
  const lines = registry.all().map((m) => {
    const metrics = Object.entries(m.metrics)
      .map(([k, v]) => `${k}=${Number.isInteger(v) ? v : v.toFixed(3)}`)
      .join(' ');
    return `${m.id.padEnd(22)} ${m.version.padEnd(8)} ${m.family.padEnd(10)} ${m.task.padEnd(15)} ${metrics}`;
  });
  return ['id                     version  family     task            held-out metrics', ...lines, ''].join(
    '\n',
  );
}
