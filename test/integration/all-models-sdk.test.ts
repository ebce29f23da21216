/**
 * Every model in `models/` served by the local endpoint server and called through the real
 * AWS SDK (`SageMakerRuntimeClient` → `InvokeEndpointCommand`, binary KServe tensors so that
 * NaN for in-graph imputation travels), reproducing its golden cases.
 */
import { readdirSync, readFileSync, existsSync } from 'node:fs';
import * as path from 'node:path';
import { SageMakerRuntimeClient } from '@aws-sdk/client-sagemaker-runtime';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEndpointServer } from '../../local/sagemaker/server.js';
import { MODELS_DIR } from '../../local/stack.js';
import { createInvoker } from '../../shared/inference/invoker.js';
import { loadRegistry, type ModelRegistry } from '../../shared/inference/registry.js';
import { fromNumbers, toNumbers, type Tensor } from '../../shared/inference/tensor.js';

type Value = number | null | Value[];
interface Golden {
  model: string;
  input?: string;
  inputs?: string[];
  output: string;
  cases: (Record<string, Value> & { expected: Value })[];
}

const models = readdirSync(MODELS_DIR).filter((d) => existsSync(path.join(MODELS_DIR, d, 'golden.json')));

let server: Awaited<ReturnType<typeof startEndpointServer>>;
let client: SageMakerRuntimeClient;
let registry: ModelRegistry;

beforeAll(async () => {
  server = await startEndpointServer({ modelsDir: MODELS_DIR, port: 0 });
  client = new SageMakerRuntimeClient({
    endpoint: server.url,
    region: 'us-east-1',
    credentials: { accessKeyId: 'local', secretAccessKey: 'local' },
  });
  registry = await loadRegistry(MODELS_DIR);
});

afterAll(async () => {
  client.destroy();
  await server.close();
});

function flat(v: Value): number[] {
  if (v === null) return [Number.NaN];
  return Array.isArray(v) ? v.flatMap(flat) : [v];
}

function shapeOf(v: Value): number[] {
  return Array.isArray(v) ? [v.length, ...shapeOf(v[0] ?? 0)] : [];
}

describe('all six models through the AWS SDK and the local endpoint server', () => {
  it('serves every model folder', () => {
    expect(models.sort()).toEqual([
      'breast-cancer-svm',
      'diabetes-gbm',
      'diabetes-onset-rf',
      'lung-nodule-cnn',
      'pbc-attention',
      'pbc-gru',
    ]);
  });

  it.each(models)('%s reproduces its golden cases', async (id) => {
    const golden = JSON.parse(readFileSync(path.join(MODELS_DIR, id, 'golden.json'), 'utf8')) as Golden;
    const manifest = registry.get(id);
    if (!manifest) throw new Error(`no manifest for ${id}`);
    const names = golden.inputs ?? [golden.input ?? 'x'];
    const cases = golden.cases.slice(0, 20);
    const invoker = createInvoker({ client, endpointName: (m) => m.id, binaryThreshold: 0 });
    const inputs: Tensor[] = names.map((name) => {
      const values = cases.flatMap((c) => flat(c[name] ?? null));
      const spec = manifest.serving.inputs.find((t) => t.name === name);
      return {
        name,
        datatype: spec?.datatype ?? 'FP32',
        shape: [cases.length, ...shapeOf(cases[0]?.[name] ?? null)],
        data: fromNumbers(name, spec?.datatype ?? 'FP32', values),
      };
    });
    const outputs = await invoker.invokeTensors(manifest, inputs, { outputs: [golden.output] });
    const out = outputs.find((t) => t.name === golden.output);
    if (!out) throw new Error(`no output ${golden.output}`);
    const got = toNumbers(out.data);
    const expected = cases.flatMap((c) => flat(c.expected));
    expect(got).toHaveLength(expected.length);
    expected.forEach((e, i) => {
      expect(Math.abs((got[i] ?? Number.NaN) - e)).toBeLessThanOrEqual(1e-4 * Math.max(1, Math.abs(e)));
    });
    expect(server.stats(id).requests).toBeGreaterThanOrEqual(1);
  });
});
