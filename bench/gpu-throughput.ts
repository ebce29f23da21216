/**
 * The GPU check of the six-models issue: CNN, RNN and attention throughput with onnxruntime on
 * CUDA at batch 1, 64 and 1024, beside the same batches on CPU in the same run, with the GPU's
 * name. Run it on a machine with an NVIDIA GPU and onnxruntime-node's CUDA binaries
 * (`npm rebuild onnxruntime-node` without `onnxruntime-node-install=skip`, which needs the
 * network), then copy the figures into the cards:
 *
 *   npx tsx bench/gpu-throughput.ts > gpu.json
 *
 * Without CUDA it says so and exits 2: the project never needs a GPU to train or test.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { MODELS_DIR } from '../local/stack.js';
import { machineInfo } from './machine.js';

const MODELS = ['lung-nodule-cnn', 'pbc-gru', 'pbc-attention'] as const;
const BATCHES = [1, 64, 1024] as const;
const STEPS = 16;

function gpuName(): string {
  try {
    return execFileSync('nvidia-smi', ['--query-gpu=name,driver_version', '--format=csv,noheader'], {
      encoding: 'utf8',
    }).trim();
  } catch {
    return 'unknown (nvidia-smi not found)';
  }
}

/** Inputs of one batch, shaped by the model's manifest (image [N,1,H,W]; sequence [N,T,F] + mask). */
function feeds(id: string, n: number): Record<string, ort.Tensor> {
  const manifest = JSON.parse(readFileSync(path.join(MODELS_DIR, id, 'manifest.json'), 'utf8')) as {
    input: { kind: string; size?: [number, number]; features?: unknown[] };
  };
  if (manifest.input.kind === 'image') {
    const [h, w] = manifest.input.size ?? [64, 64];
    return { x: new ort.Tensor('float32', new Float32Array(n * h * w).fill(0.3), [n, 1, h, w]) };
  }
  const f = manifest.input.features?.length ?? 13;
  return {
    x: new ort.Tensor('float32', new Float32Array(n * STEPS * f).fill(1), [n, STEPS, f]),
    mask: new ort.Tensor('float32', new Float32Array(n * STEPS).fill(1), [n, STEPS]),
  };
}

async function rowsPerSecond(session: ort.InferenceSession, input: Record<string, ort.Tensor>, n: number) {
  await session.run(input); // warm-up
  let runs = 0;
  const started = performance.now();
  while (performance.now() - started < 1000 || runs < 3) {
    await session.run(input);
    runs++;
  }
  return Math.round((runs * n * 1000) / (performance.now() - started));
}

async function main(): Promise<number> {
  const results: Record<string, unknown> = { machine: machineInfo(), gpu: gpuName() };
  for (const id of MODELS) {
    const file = path.join(MODELS_DIR, id, '1', 'model.onnx');
    let gpu: ort.InferenceSession;
    try {
      gpu = await ort.InferenceSession.create(file, { executionProviders: ['cuda'] });
    } catch (err) {
      process.stderr.write(
        `CUDA execution provider unavailable (${err instanceof Error ? err.message : String(err)}); GPU figures not measured.\n`,
      );
      return 2;
    }
    const cpu = await ort.InferenceSession.create(file, { executionProviders: ['cpu'] });
    const rows: Record<string, unknown> = {};
    for (const n of BATCHES) {
      const input = feeds(id, n);
      const g = await rowsPerSecond(gpu, input, n);
      const c = await rowsPerSecond(cpu, input, n);
      rows[`batch${n}`] = {
        cudaRowsPerSecond: g,
        cpuRowsPerSecond: c,
        ratio: Math.round((g / c) * 100) / 100,
      };
    }
    results[id] = rows;
  }
  process.stdout.write(JSON.stringify(results, null, 2) + '\n');
  return 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`gpu-throughput failed: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
