/**
 * Bundle budget: bundles every `functions/<name>/handler.ts` exactly as the CDK app does (the
 * one build in `infra/constructs/bundling.ts`: minified ESM, node22, `@aws-sdk/*` external, zod
 * without its other locales), then reports each bundle's size and its cold init time (a fresh
 * `node` process that imports the bundle, median of interleaved runs, wall and CPU) beside, in
 * the same run:
 * - an empty bundle's;
 * - that of an entry importing only the SDK modules the function imports at init (static
 *   imports), the part of its init that the function's own code does not change, and the
 *   difference (`ownInitMs`, `ownInitCpuMs`): what the function's own code costs;
 * - the bundle followed by the SDK modules it imports only on first use (dynamic imports: the
 *   Secrets Manager client in SMART mode, the default credential chain in SigV4 mode), what a
 *   cold start in those modes pays by the end of its first FHIR request;
 * - the same function with the AWS SDK bundled too (tree-shaken, minified, ESM, code splitting),
 *   AWS's own advice for cold starts, with its size against the same budget.
 * Targets: ≤ 400 KB per bundle; init ≤ 2× the empty bundle's. No onnxruntime in any bundle.
 *
 * Run alone: `npx tsx bench/bundles.ts` (prints JSON).
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { isBuiltin } from 'node:module';
import { loadavg } from 'node:os';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { build, type Metafile } from 'esbuild';
import {
  BUNDLE_BUDGET_BYTES,
  bundleFile,
  bundleOptions,
  FORBIDDEN_IN_BUNDLE,
  RUNTIME_SDK_NAMESPACE,
  runtimeSdkPlugin,
} from '../infra/constructs/bundling.js';
import { REPO_ROOT } from '../infra/paths.js';
import { machineInfo } from './machine.js';

const run = promisify(execFile);

/** Bundles land under `.bench/` inside the repository, so `@aws-sdk/*` resolves as in Lambda. */
const OUT_DIR = path.join(REPO_ROOT, '.bench', 'bundles');
const INIT_RUNS = 7;
/**
 * The `node` that runs each cold init: this one, or `BENCH_NODE` (e.g. a Node.js 22 binary, the
 * Lambda runtime's major version, when this machine's default is older).
 */
const INIT_NODE = process.env.BENCH_NODE ?? process.execPath;
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

/**
 * The packages a bundle leaves to the runtime (`@aws-sdk/*`, loaded through the
 * `runtimeSdkPlugin` shims): `static`, those it loads at init; `dynamic`, those it loads only
 * through `import()` (on first use) and never at init.
 */
export function externalImports(metafile: Metafile, when: 'static' | 'dynamic' = 'static'): string[] {
  const prefix = `${RUNTIME_SDK_NAMESPACE}:`;
  const stat = new Set<string>();
  const dyn = new Set<string>();
  for (const input of Object.values(metafile.inputs)) {
    for (const imp of input.imports) {
      if (!imp.path.startsWith(prefix)) continue;
      (imp.kind === 'dynamic-import' ? dyn : stat).add(imp.path.slice(prefix.length));
    }
  }
  // Anything external that is not a shim (a builtin aside) would be an ESM import of its own.
  for (const output of Object.values(metafile.outputs)) {
    for (const imp of output.imports) {
      if (!imp.external || isBuiltin(imp.path) || stat.has(imp.path) || dyn.has(imp.path)) continue;
      (imp.kind === 'dynamic-import' ? dyn : stat).add(imp.path);
    }
  }
  return [...(when === 'static' ? stat : [...dyn].filter((m) => !stat.has(m)))].sort();
}

/**
 * The function bundled with the AWS SDK inside instead of left to the runtime: the same build
 * (options, plugins, minified ESM) with nothing external and code splitting, so the SDK's own
 * `import()`s (the credential providers a chain tries last, the deferred clients) land in chunks
 * that load only when used. `bytes` counts every file the Lambda package would hold (no maps).
 */
export async function bundleWithSdk(name: string, entry: string): Promise<{ file: string; bytes: number }> {
  const dir = path.join(OUT_DIR, name, 'sdk-bundled');
  rmSync(dir, { recursive: true, force: true });
  const {
    outfile: _outfile,
    external: _external,
    plugins = [],
    ...opts
  } = bundleOptions(entry, path.join(dir, 'index.mjs'));
  const sdkShims = runtimeSdkPlugin().name;
  const result = await build({
    ...opts,
    plugins: plugins.filter((p) => p.name !== sdkShims),
    sourcemap: false,
    outdir: dir,
    splitting: true,
    entryNames: 'index',
    chunkNames: 'chunk-[hash]',
    outExtension: { '.js': '.mjs' },
  });
  const bytes = Object.entries(result.metafile.outputs)
    .filter(([f]) => !f.endsWith('.map'))
    .reduce((sum, [, o]) => sum + o.bytes, 0);
  return { file: path.join(dir, 'index.mjs'), bytes };
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
    INIT_NODE,
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
const loadAverage = (): number[] => loadavg().map((l) => Math.round(l * 100) / 100);
const kib = (bytes: number): number => Math.round((bytes / 1024) * 10) / 10;

export async function benchBundles(): Promise<Record<string, unknown>> {
  const loadAtStart = loadAverage();
  mkdirSync(OUT_DIR, { recursive: true });
  const emptyEntry = path.join(OUT_DIR, 'empty-entry.mjs');
  writeFileSync(emptyEntry, 'export const handler = async () => ({});\n');
  const empty = await bundleEntry('empty', emptyEntry);

  const importsOf = (mods: readonly string[]): string =>
    mods.map((m) => `await import(${JSON.stringify(m)});`).join('\n') + '\n';
  const bundles = [];
  for (const name of functionNames()) {
    const b = await bundleFunction(name);
    const sdk = externalImports(b.metafile, 'static');
    const deferred = externalImports(b.metafile, 'dynamic');
    // Only the SDK modules the function loads at init, loaded as the bundle loads them (the same
    // build): what no code of ours changes. Beside it, the same modules through ESM `import`.
    const sdkEntry = path.join(OUT_DIR, name, 'sdk-only-entry.mjs');
    writeFileSync(sdkEntry, sdk.map((m) => `import ${JSON.stringify(m)};`).join('\n') + '\n');
    const sdkFile = (await bundleEntry(path.join(name, 'sdk-only'), sdkEntry)).file;
    const sdkEsmFile = path.join(OUT_DIR, name, 'sdk-only-esm-import.mjs');
    writeFileSync(sdkEsmFile, importsOf(sdk));
    // The bundle, then what it imports on first use (SMART: Secrets Manager; SigV4: credentials).
    const deferredFile = path.join(OUT_DIR, name, 'with-deferred.mjs');
    writeFileSync(
      deferredFile,
      `const m = await import('./index.mjs');\n` +
        // The bundle's own lazy loaders would run on first use; the same packages through require:
        `import { createRequire } from 'node:module';\nconst require = createRequire(import.meta.url);\n` +
        deferred.map((d) => `require(${JSON.stringify(d)});`).join('\n') +
        `\nexport default m;\n`,
    );
    const withSdk = await bundleWithSdk(name, path.join(REPO_ROOT, 'functions', name, 'handler.ts'));
    bundles.push({
      b,
      sdk,
      deferred,
      files: [b.file, sdkFile, deferredFile, withSdk.file, sdkEsmFile],
      withSdk,
    });
  }
  const none: InitSample = { wallMs: Number.NaN, cpuMs: Number.NaN };
  const [emptyInit = none, ...inits] = await coldInit([empty.file, ...bundles.flatMap((x) => x.files)]);
  const per = bundles[0]?.files.length ?? 0;
  const rel = (s: InitSample) => ({
    coldInitMs: s.wallMs,
    ratioToEmpty: ratio(s.wallMs, emptyInit.wallMs),
    coldInitCpuMs: s.cpuMs,
    cpuRatioToEmpty: ratio(s.cpuMs, emptyInit.cpuMs),
  });

  const functions = bundles.map(({ b, sdk, deferred, withSdk }, i) => {
    const [init = none, sdkInit = none, deferredInit = none, withSdkInit = none, esmInit = none] =
      inits.slice(per * i, per * (i + 1));
    return {
      name: b.name,
      bytes: b.bytes,
      kib: kib(b.bytes),
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
      // What the function's own code (ours and its bundled packages) adds to those SDK modules.
      ownInitMs: Math.round((init.wallMs - sdkInit.wallMs) * 10) / 10,
      ownInitCpuMs: Math.round((init.cpuMs - sdkInit.cpuMs) * 10) / 10,
      // The same SDK modules loaded through ESM `import` (how the bundles loaded them before).
      sdkOnlyEsmImport: rel(esmInit),
      // Imported on first use only, in the modes that need them: paid then, not at init.
      deferredSdkImports: deferred,
      withDeferredImports: rel(deferredInit),
      // The AWS SDK bundled in (not the runtime's): faster to load, but is it within the budget?
      sdkBundled: {
        bytes: withSdk.bytes,
        kib: kib(withSdk.bytes),
        withinSizeBudget: withSdk.bytes <= BUNDLE_BUDGET_BYTES,
        ...rel(withSdkInit),
      },
      forbidden: forbiddenModules(b.metafile),
      topPackages: topPackages(b.metafile).map((p) => `${p.pkg} ${Math.round(p.bytes / 1024)} KiB`),
    };
  });
  return {
    bench: 'bundles',
    budget: { bytes: BUNDLE_BUDGET_BYTES, initRatio: INIT_RATIO_BUDGET },
    empty: { bytes: empty.bytes, coldInitMs: emptyInit.wallMs, coldInitCpuMs: emptyInit.cpuMs },
    runsPerMedian: INIT_RUNS,
    loadAverage: { atStart: loadAtStart, atEnd: loadAverage() },
    functions,
    machine: { ...machineInfo(), initNode: (await run(INIT_NODE, ['--version'])).stdout.trim() },
  };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  console.log(JSON.stringify(await benchBundles(), null, 2));
}
