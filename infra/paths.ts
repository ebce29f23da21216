/** Paths the infrastructure reads at synthesis time. */
import * as path from 'node:path';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** The repository root (this file is `infra/paths.ts`). */
export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** The handler file of a function folder: `functions/<name>/handler.ts`. */
export function functionEntry(name: string): string {
  return path.join(REPO_ROOT, 'functions', name, 'handler.ts');
}

/** True when `functions/<name>/handler.ts` exists. */
export function functionExists(name: string): boolean {
  return existsSync(functionEntry(name));
}
