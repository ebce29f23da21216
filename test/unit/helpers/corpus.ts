/**
 * Loads resources of the shared FHIR corpus (US Core examples, a Synthea bundle). The corpus
 * lives in `test/fixtures/corpus/` when vendored into the repository, else beside the
 * checkout in `../shared/corpus/`.
 */
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const CANDIDATES = ['../../fixtures/corpus/', '../../../../shared/corpus/'].map((rel) =>
  fileURLToPath(new URL(rel, import.meta.url)),
);

/** The corpus folder, or `undefined` when neither location exists. */
export function corpusDir(): string | undefined {
  return CANDIDATES.find((dir) => existsSync(dir));
}

/** Reads one corpus file, e.g. `loadCorpus<Observation>('us-core/blood-pressure.json')`. */
// eslint-disable-next-line @typescript-eslint/no-unnecessary-type-parameters -- the caller names the resource type
export function loadCorpus<T>(relativePath: string): T {
  const dir = corpusDir();
  if (dir === undefined) throw new Error(`FHIR corpus not found; looked in ${CANDIDATES.join(', ')}`);
  return JSON.parse(readFileSync(dir + relativePath, 'utf8')) as T;
}
