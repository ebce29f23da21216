/**
 * Bundle budget: bundles every `functions/<name>/handler.ts` exactly as the CDK app does (the
 * one build in `infra/constructs/bundling.ts`: minified ESM, node22, `@aws-sdk/*` external, zod
 * without its other locales), then reports each bundle's size and its cold init time (a fresh
 * `node` process that imports the bundle, median of interleaved runs) beside, in the same run,
 * an empty bundle's and that of an entry importing only the SDK clients the function imports.
 * Targets: ≤ 400 KB per bundle; init ≤ 2× the empty bundle's. No onnxruntime in any bundle.
 *
 * Run alone: `npx tsx bench/bundles.ts` (prints JSON).
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { isBuiltin } from 'node:module';
import { loadavg } from 'node:os';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import type { Metafile } from 'esbuild';
import { BUNDLE_BUDGET_BYTES, bundleFile, FORBIDDEN_IN_BUNDLE } from '../infra/constructs/bundling.js';
import { REPO_ROOT } from '../infra/paths.js';
import { machineInfo } from './machine.js';

const run = promisify(execFile);

/** Bundles land under `.bench/` inside the repository, so `@aws-sdk/*` resolves as in Lambda. */
const OUT_DIR = path.join(REPO_ROOT, '.bench', 'bundles');
const INIT_RUNS = 7;
/** Cold init may be at most this many times the empty bundle's. */
export const INIT_RATIO_BUDGET = 2;

export interface BundleResult {
  readonly name: string;
  readonly file: string;
  readonly bytes: number;
  readonly metafile: Metafile;
}

/** Function folders with a handler. */
export function functionNames(): string[] {
  const dir = path.join(REPO_ROOT, 'functions');
  return readdirSync(dir)
    .filter((n) => existsSync(path.join(dir, n, 'handler.ts')))
    .sort();
}

/** Bundles one entry file with the infra's options; `name` names the output folder. */
export async function bundleEntry(name: string, entry: string): Promise<BundleResult> {
  const { file, bytes, metafile } = await bundleFile(entry, path.join(OUT_DIR, name, 'index.mjs'));
  return { name, file, bytes, metafile };
}

/** Bundles `functions/<name>/handler.ts`. */
export function bundleFunction(name: string): Promise<BundleResult> {
  return bundleEntry(name, path.join(REPO_ROOT, 'functions', name, 'handler.ts'));
}

/** Inputs and external imports of a bundle that belong to a forbidden package. */
export function forbiddenModules(metafile: Metafile): string[] {
  const hits = new Set<string>();
  const isForbidden = (p: string) =>
    FORBIDDEN_IN_BUNDLE.some((pkg) => p.split(/[\\/]/).includes(pkg) || p === pkg);
  for (const input of Object.keys(metafile.inputs)) if (isForbidden(input)) hits.add(input);
  for (const output of Object.values(metafile.outputs)) {
    for (const imp of output.imports) if (isForbidden(imp.path)) hits.add(imp.path);
  }
  return [...hits].sort();
}

/** The largest packages in a bundle, by bytes of input that reached the output. */
export function topPackages(metafile: Metafile, n = 8): { pkg: string; bytes: number }[] {
  const sizes = new Map<string, number>();
  for (const output of Object.values(metafile.outputs)) {
    for (const [input, { bytesInOutput }] of Object.entries(output.inputs)) {
      const m = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(input);
      const pkg = m?.[1] ?? input.split('/').slice(0, 2).join('/');
      sizes.set(pkg, (sizes.get(pkg) ?? 0) + bytesInOutput);
    }
  }
  return [...sizes.entries()]
    .map(([pkg, bytes]) => ({ pkg, bytes }))
    .sort((a, b) => b.bytes - a.bytes)
    .slice(0, n);
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? (s[mid] ?? 0) : ((s[mid - 1] ?? 0) + (s[mid] ?? 0)) / 2;
}

/** The packages a bundle leaves to the runtime (`@aws-sdk/*`) that it imports. */
export function externalImports(metafile: Metafile): string[] {
  const names = new Set<string>();
  for (const output of Object.values(metafile.outputs)) {
    for (const imp of output.imports) if (imp.external && !isBuiltin(imp.path)) names.add(imp.path);
  }
  return [...names].sort();
}

/** One cold init: wall time, and the CPU time (user + system) the child process used. */
interface InitSample {
  readonly wallMs: number;
  readonly cpuMs: number;
}

/**
 * A fresh `node` process that imports the bundle and exits: process start plus module
 * evaluation, the local analogue of a Lambda cold start's init phase. Wall time is the measure;
 * the child's own CPU time is reported beside it, as it varies less with the machine's load.
 */
async function coldInitOnce(file: string): Promise<InitSample> {
  const url = pathToFileURL(file).href;
  const started = process.hrtime.bigint();
  const { stdout } = await run(
    process.execPath,
    [
      '--enable-source-maps',
      '--input-type=module',
      '-e',
      `await import(${JSON.stringify(url)}); const u = process.resourceUsage(); process.stdout.write(String(u.userCPUTime + u.systemCPUTime));`,
    ],
    {
      cwd: path.dirname(file),
      env: { ...process.env, AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' },
    },
  );
  const wallMs = Number(process.hrtime.bigint() - started) / 1e6;
  return { wallMs, cpuMs: Number(stdout.trim().split('\n').pop()) / 1000 };
}

/**
 * Median cold init of each file (wall and CPU). The runs are interleaved (one of each file per
 * round), so a change in the machine's load during the bench weighs on every file alike, as it
 * must for figures that are read as ratios of each other.
 */
async function coldInit(files: readonly string[], runs = INIT_RUNS): Promise<InitSample[]> {
  const samples = files.map((): InitSample[] => []);
  for (let i = 0; i < runs; i++) {
    for (const [k, file] of files.entries()) samples[k]?.push(await coldInitOnce(file));
  }
  const round = (x: number) => Math.round(x * 10) / 10;
  return samples.map((s) => ({
    wallMs: round(median(s.map((x) => x.wallMs))),
    cpuMs: round(median(s.map((x) => x.cpuMs))),
  }));
}

const ratio = (a: number, b: number): number => Math.round((a / b) * 100) / 100;

export async function benchBundles(): Promise<Record<string, unknown>> {
  mkdirSync(OUT_DIR, { recursive: true });
  const emptyEntry = path.join(OUT_DIR, 'empty-entry.mjs');
  writeFileSync(emptyEntry, 'export const handler = async () => ({});\n');
  const empty = await bundleEntry('empty', emptyEntry);

  // Beside each function: an entry that imports only the runtime-provided SDK clients the
  // function imports, the part of its init that no bundling choice changes.
  const bundles: { b: BundleResult; sdk: string[]; sdkFile: string }[] = [];
  for (const name of functionNames()) {
    const b = await bundleFunction(name);
    const sdk = externalImports(b.metafile);
    const sdkFile = path.join(OUT_DIR, name, 'sdk-only.mjs');
    writeFileSync(sdkFile, sdk.map((m) => `import ${JSON.stringify(m)};`).join('\n') + '\n');
    bundles.push({ b, sdk, sdkFile });
  }
  const none: InitSample = { wallMs: Number.NaN, cpuMs: Number.NaN };
  const [emptyInit = none, ...inits] = await coldInit([
    empty.file,
    ...bundles.flatMap(({ b, sdkFile }) => [b.file, sdkFile]),
  ]);

  const functions = bundles.map(({ b, sdk }, i) => {
    const init = inits[2 * i] ?? none;
    const sdkInit = inits[2 * i + 1] ?? none;
    return {
      name: b.name,
      bytes: b.bytes,
      kib: Math.round((b.bytes / 1024) * 10) / 10,
      withinSizeBudget: b.bytes <= BUNDLE_BUDGET_BYTES,
      coldInitMs: init.wallMs,
      initRatioToEmpty: ratio(init.wallMs, emptyInit.wallMs),
      withinInitBudget: ratio(init.wallMs, emptyInit.wallMs) <= INIT_RATIO_BUDGET,
      coldInitCpuMs: init.cpuMs,
      initCpuRatioToEmpty: ratio(init.cpuMs, emptyInit.cpuMs),
      sdkClients: sdk,
      sdkOnlyColdInitMs: sdkInit.wallMs,
      sdkOnlyRatioToEmpty: ratio(sdkInit.wallMs, emptyInit.wallMs),
      sdkOnlyCpuRatioToEmpty: ratio(sdkInit.cpuMs, emptyInit.cpuMs),
      forbidden: forbiddenModules(b.metafile),
      topPackages: topPackages(b.metafile).map((p) => `${p.pkg} ${Math.round(p.bytes / 1024)} KiB`),
    };
  });
  return {
    bench: 'bundles',
    budget: { bytes: BUNDLE_BUDGET_BYTES, initRatio: INIT_RATIO_BUDGET },
    empty: { bytes: empty.bytes, coldInitMs: emptyInit.wallMs, coldInitCpuMs: emptyInit.cpuMs },
    runsPerMedian: INIT_RUNS,
    loadAverage: loadavg().map((l) => Math.round(l * 100) / 100),
    functions,
    machine: machineInfo(),
  };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  console.log(JSON.stringify(await benchBundles(), null, 2));
}
