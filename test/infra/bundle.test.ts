/**
 * The Lambda bundles, built as the CDK app builds them: ESM for Node 22 with the AWS SDK left to
 * the runtime, and never onnxruntime (the local endpoint server's native runtime).
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { bundleEntry, bundleFunction, forbiddenModules, functionNames } from '../../bench/bundles.js';

describe('function bundles', () => {
  it.each(functionNames())(
    '%s: no onnxruntime among the inputs or imports, AWS SDK external',
    async (name) => {
      const b = await bundleFunction(name);
      expect(forbiddenModules(b.metafile)).toEqual([]);
      const inputs = Object.keys(b.metafile.inputs);
      expect(inputs.some((i) => i.includes('node_modules/@aws-sdk/'))).toBe(false);
      expect(inputs).toContain(`functions/${name}/handler.ts`);
      const [output] = Object.values(b.metafile.outputs).filter((o) => o.entryPoint);
      // population-sweep has one entry point per Step Functions state; the others one handler.
      const entryPoints =
        name === 'population-sweep' ? ['startHandler', 'itemHandler', 'finishHandler'] : ['handler'];
      for (const e of entryPoints) expect(output?.exports).toContain(e);
    },
  );

  it('catches onnxruntime when an entry pulls it in', async () => {
    mkdirSync(join(process.cwd(), '.bench'), { recursive: true });
    const dir = mkdtempSync(join(process.cwd(), '.bench', 'onnx-probe-'));
    const entry = join(dir, 'entry.ts');
    writeFileSync(entry, "import * as ort from 'onnxruntime-node';\nexport const handler = () => ort.env;\n");
    try {
      const b: Awaited<ReturnType<typeof bundleEntry>> | Error = await bundleEntry('onnx-probe', entry).catch(
        (err: unknown) => (err instanceof Error ? err : new Error(String(err))),
      );
      // Either the native addon cannot be bundled, or it is there and the scan names it.
      if (b instanceof Error) expect(b.message).toMatch(/onnxruntime|\.node/);
      else expect(forbiddenModules(b.metafile).some((m) => m.includes('onnxruntime'))).toBe(true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
