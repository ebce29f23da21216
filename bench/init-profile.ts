/**
 * What each module costs at a function's cold init: bundles `functions/<name>/handler.ts` with
 * the Lambda build (`infra/constructs/bundling.ts`) but unminified, so that each line of the
 * bundle still belongs to one module (esbuild marks each with a `// path` comment), imports it in
 * fresh `node --cpu-prof` processes and sums the samples' self time by where they ran:
 * - a module of the bundle (by package, or by `shared/<folder>` for ours), from the sample's
 *   line (`positionTicks`), top-level evaluation included (zod's time is zod's own functions,
 *   mostly building our schemas);
 * - the runtime's AWS SDK (`node_modules/@aws-sdk`, `@smithy`: the packages Lambda provides);
 * - Node itself (process start, module loaders, builtins, compiling), garbage collection.
 * A profile, not a benchmark: the milliseconds are sampled self time (mean of the runs, inflated
 * by the profiler), for ranking contributors; `bench/bundles.ts` measures init.
 *
 * Run alone: `npx tsx bench/init-profile.ts [name ...]` (prints JSON).
 */
import { execFile } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { loadavg } from 'node:os';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { build } from 'esbuild';
import { bundleOptions } from '../infra/constructs/bundling.js';
import { REPO_ROOT } from '../infra/paths.js';
import { functionNames } from './bundles.js';

const run = promisify(execFile);
const OUT_DIR = path.join(REPO_ROOT, '.bench', 'init-profile');
const RUNS = 5;

interface CpuProfileNode {
  readonly id: number;
  readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number };
  readonly positionTicks?: readonly { readonly line: number; readonly ticks: number }[];
  readonly children?: readonly number[];
}
interface CpuProfile {
  readonly nodes: readonly CpuProfileNode[];
  readonly samples: readonly number[];
  readonly startTime: number;
  readonly endTime: number;
}

/** The package (`zod`, `@smithy/core`) or our folder (`shared/fhir`) a bundle input belongs to. */
function owner(input: string): string {
  // The shims that load a runtime SDK package (infra/constructs/bundling.ts, runtimeSdkPlugin).
  if (input.startsWith('runtime-sdk:')) return 'runtime AWS SDK';
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(input);
  if (pkg?.[1]) return pkg[1];
  return input.replace(/^((?:shared|functions)\/[^/]+)\/.*/, '$1');
}

/** Line (0-based) → owner, from the `// path` comments esbuild writes before each module. */
function lineOwners(source: string): string[] {
  let current = '(esbuild runtime helpers)';
  return source.split('\n').map((line) => {
    const m = /^\/\/ (\S+)$/.exec(line);
    if (m?.[1] && /\.(?:[cm]?js|ts|json)$|^runtime-sdk:/.test(m[1])) current = owner(m[1]);
    return current;
  });
}

function classify(url: string): string | undefined {
  if (/node_modules\/@(?:aws-sdk|smithy|aws)\//.test(url)) return 'runtime AWS SDK';
  if (url.includes('node_modules/')) return `runtime ${owner(url)}`;
  if (url.startsWith('node:') || url === '') return undefined;
  return 'other (the importing script)';
}

/** Self time (ms) by contributor over `runs` profiled imports of `file`. */
export async function profileImport(file: string, runs = RUNS): Promise<Map<string, number>> {
  const owners = lineOwners(readFileSync(file, 'utf8'));
  const href = pathToFileURL(file).href;
  const totals = new Map<string, number>();
  const add = (key: string, ms: number) => totals.set(key, (totals.get(key) ?? 0) + ms / runs);
  for (let r = 0; r < runs; r++) {
    const dir = path.join(path.dirname(file), 'prof');
    rmSync(dir, { recursive: true, force: true });
    await run(
      process.execPath,
      [
        '--cpu-prof',
        '--cpu-prof-interval',
        '100',
        '--cpu-prof-dir',
        dir,
        '--input-type=module',
        '-e',
        `await import(${JSON.stringify(href)});`,
      ],
      {
        cwd: path.dirname(file),
        env: { ...process.env, AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' },
      },
    );
    const [name = ''] = readdirSync(dir);
    const profile = JSON.parse(readFileSync(path.join(dir, name), 'utf8')) as CpuProfile;
    const msPerSample = (profile.endTime - profile.startTime) / 1000 / Math.max(1, profile.samples.length);
    const parent = new Map<number, CpuProfileNode>();
    for (const n of profile.nodes) {
      for (const c of n.children ?? []) parent.set(c, n);
    }
    const hits = new Map<number, number>();
    for (const id of profile.samples) hits.set(id, (hits.get(id) ?? 0) + 1);
    for (const node of profile.nodes) {
      const n = hits.get(node.id) ?? 0;
      if (n === 0) continue;
      const { url, functionName, lineNumber } = node.callFrame;
      if (url === href) {
        const ticks = node.positionTicks ?? [];
        const ticked = ticks.reduce((s, t) => s + t.ticks, 0);
        for (const t of ticks) add(owners[t.line - 1] ?? '?', (t.ticks / ticked) * n * msPerSample);
        if (ticked === 0) add(owners[lineNumber] ?? '?', n * msPerSample);
        continue;
      }
      // Node's own frames (loaders, builtins, compiling) count for the nearest caller that is a
      // module: the SDK package or the bundle's module that asked for the load.
      let key = classify(url);
      for (let up = parent.get(node.id); key === undefined && up !== undefined; up = parent.get(up.id)) {
        key = up.callFrame.url === href ? owners[up.callFrame.lineNumber] : classify(up.callFrame.url);
      }
      key ??=
        functionName === '(garbage collector)' ? 'garbage collection' : 'node (start, loaders, compile)';
      add(key, n * msPerSample);
    }
  }
  return totals;
}

export async function benchInitProfile(
  names: readonly string[] = functionNames(),
): Promise<Record<string, unknown>> {
  const loadAtStart = loadavg().map((l) => Math.round(l * 100) / 100);
  const functions: Record<string, unknown> = {};
  for (const name of names) {
    const file = path.join(OUT_DIR, name, 'index.mjs');
    mkdirSync(path.dirname(file), { recursive: true });
    await build({
      ...bundleOptions(path.join(REPO_ROOT, 'functions', name, 'handler.ts'), file),
      minify: false,
      sourcemap: false,
    });
    const totals = await profileImport(file);
    const all = [...totals.values()].reduce((s, ms) => s + ms, 0);
    functions[name] = {
      sampledMs: Math.round(all),
      top: [...totals.entries()]
        .filter(([, ms]) => ms >= 0.5)
        .sort((a, b) => b[1] - a[1])
        .slice(0, 12)
        .map(([who, ms]) => `${who} ${ms.toFixed(1)} ms`),
    };
  }
  return {
    bench: 'init-profile',
    runsPerFunction: RUNS,
    loadAverage: { atStart: loadAtStart, atEnd: loadavg().map((l) => Math.round(l * 100) / 100) },
    functions,
  };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const names = process.argv.slice(2);
  console.log(JSON.stringify(await benchInitProfile(names.length ? names : undefined), null, 2));
}
