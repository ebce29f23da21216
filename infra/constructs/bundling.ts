/**
 * The one definition of how a Lambda is bundled: `HouseFunction` passes these options to
 * `NodejsFunction` (local esbuild, no Docker) and `bench/bundles.ts` builds with the same values,
 * so the budget it measures is the bundle that ships.
 */

/** esbuild target of the Lambda runtime (Node.js 22). */
export const BUNDLE_TARGET = 'node22';

/** Provided by the Node.js 22 Lambda runtime: never bundled. */
export const EXTERNAL_MODULES: readonly string[] = ['@aws-sdk/*'];

/** ESM bundles need a `require` shim for the CommonJS dependencies they inline. */
export const ESM_REQUIRE_BANNER =
  "import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);";

/** Resolution order: ESM builds of dependencies first. */
export const MAIN_FIELDS: readonly string[] = ['module', 'main'];

/**
 * Packages that must never reach a Lambda bundle: onnxruntime is the local endpoint server's
 * runtime (native, ~100 MB); inference in AWS runs on SageMaker.
 */
export const FORBIDDEN_IN_BUNDLE: readonly string[] = [
  'onnxruntime-node',
  'onnxruntime-common',
  'onnxruntime-web',
];

/** Budget per minified function bundle, in bytes. */
export const BUNDLE_BUDGET_BYTES = 400 * 1024;
