/**
 * Every model folder under models/: the ONNX graph reproduces its golden cases (the
 * training framework's float64 outputs) in onnxruntime-node, the manifest parses, and
 * config.pbtxt agrees with the manifest's serving section. Generic over folders, so a new
 * model is covered by adding `models/<id>/`.
 */
import fs from 'node:fs';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseManifest, type ModelManifest } from '../../shared/inference/manifest.js';

const MODELS = path.resolve(import.meta.dirname, '..', '..', 'models');
const RELATIVE_TOLERANCE = 1e-4;

/** `null` in an input is a missing value: it is sent as NaN (in-graph imputers replace it). */
type Nested = number | null | Nested[];
/** One value per input tensor: under the tensor's name, or `x` for a single-input model. */
type GoldenCase = { rowId: number | string; expected: Nested } & Record<string, unknown>;
interface Golden {
  model: string;
  /** The input tensor, or `inputs` for several (a sequence model's `x` and `mask`). */
  input?: string;
  inputs?: string[];
  output: string;
  cases: GoldenCase[];
}

const modelIds = fs
  .readdirSync(MODELS, { withFileTypes: true })
  .filter((d) => d.isDirectory() && fs.existsSync(path.join(MODELS, d.name, 'manifest.json')))
  .map((d) => d.name)
  .sort();

function flatten(v: Nested): number[] {
  return Array.isArray(v) ? v.flatMap(flatten) : [v ?? Number.NaN];
}
function shapeOf(v: Nested): number[] {
  if (!Array.isArray(v)) return [];
  const first = v[0];
  return first === undefined ? [0] : [v.length, ...shapeOf(first)];
}

function inputNames(g: Golden): string[] {
  if (g.inputs && g.inputs.length > 0) return g.inputs;
  if (g.input) return [g.input];
  throw new Error(`${g.model}: golden.json names no input tensor`);
}
function caseInput(c: GoldenCase, name: string, names: string[]): Nested {
  const v = c[name] ?? (names.length === 1 ? c['x'] : undefined);
  if (v === undefined) throw new Error(`case ${String(c.rowId)}: no value for input "${name}"`);
  return v as Nested;
}
/** One tensor per input name, batching the given cases (`null` → NaN). */
function feeds(g: Golden, cases: GoldenCase[]): Record<string, ort.Tensor> {
  const names = inputNames(g);
  const first = cases[0];
  if (!first) throw new Error(`${g.model}: no cases`);
  return Object.fromEntries(
    names.map((name) => {
      const rowShape = shapeOf(caseInput(first, name, names));
      const rowSize = rowShape.reduce((a, b) => a * b, 1);
      const data = new Float32Array(cases.length * rowSize);
      cases.forEach((c, i) => {
        const flat = flatten(caseInput(c, name, names));
        expect(flat.length, `case ${String(c.rowId)} input ${name} size`).toBe(rowSize);
        data.set(flat, i * rowSize);
      });
      return [name, new ort.Tensor('float32', data, [cases.length, ...rowShape])];
    }),
  );
}

interface PbtxtTensor {
  name: string;
  dataType: string;
  dims: number[];
}
/** The few fields of a Triton config.pbtxt this project writes. */
function parsePbtxt(text: string): {
  name: string | undefined;
  backend: string | undefined;
  maxBatchSize: number;
  inputs: PbtxtTensor[];
  outputs: PbtxtTensor[];
  kinds: string[];
} {
  const block = (key: string): PbtxtTensor[] => {
    const m = new RegExp(`^${key}\\s*\\[([\\s\\S]*?)^\\]`, 'm').exec(text);
    if (!m?.[1]) return [];
    return [...m[1].matchAll(/\{([^}]*)\}/g)].map((t) => {
      const body = t[1] ?? '';
      return {
        name: /name:\s*"([^"]+)"/.exec(body)?.[1] ?? '',
        dataType: /data_type:\s*(\w+)/.exec(body)?.[1] ?? '',
        dims: (/dims:\s*\[([^\]]*)\]/.exec(body)?.[1] ?? '')
          .split(',')
          .map((s) => s.trim())
          .filter(Boolean)
          .map(Number),
      };
    });
  };
  return {
    name: /^name:\s*"([^"]+)"/m.exec(text)?.[1],
    backend: /^backend:\s*"([^"]+)"/m.exec(text)?.[1],
    maxBatchSize: Number(/^max_batch_size:\s*(\d+)/m.exec(text)?.[1]),
    inputs: block('input'),
    outputs: block('output'),
    kinds: [...text.matchAll(/kind:\s*(KIND_\w+)/g)].map((k) => k[1] ?? ''),
  };
}

it('finds at least one model folder', () => {
  expect(modelIds.length).toBeGreaterThan(0);
});

describe.each(modelIds)('models/%s', (id) => {
  const dir = path.join(MODELS, id);
  let manifest: ModelManifest;
  let golden: Golden;
  let session: ort.InferenceSession;

  beforeAll(async () => {
    manifest = parseManifest(
      JSON.parse(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8')),
      `${id}/manifest.json`,
    );
    golden = JSON.parse(fs.readFileSync(path.join(dir, 'golden.json'), 'utf8')) as Golden;
    session = await ort.InferenceSession.create(path.join(dir, '1', 'model.onnx'));
  });
  afterAll(async () => {
    await session.release();
  });

  it('has a manifest whose id is the folder name, a model card and a golden set naming the serving tensors', () => {
    expect(manifest.id).toBe(id);
    expect(manifest.notForClinicalUse).toBe(true);
    expect(fs.readFileSync(path.join(dir, 'card.md'), 'utf8')).toMatch(/not for clinical use/i);
    expect(golden.model).toBe(id);
    expect(manifest.serving.inputs.map((t) => t.name)).toEqual(expect.arrayContaining(inputNames(golden)));
    expect(manifest.serving.outputs.map((t) => t.name)).toContain(golden.output);
    expect(session.inputNames).toEqual(manifest.serving.inputs.map((t) => t.name));
    expect(session.outputNames).toEqual(expect.arrayContaining(manifest.serving.outputs.map((t) => t.name)));
    expect(golden.cases.length).toBeGreaterThanOrEqual(20);
  });

  it('config.pbtxt names the same model, tensors and max batch size as the manifest', () => {
    const cfg = parsePbtxt(fs.readFileSync(path.join(dir, 'config.pbtxt'), 'utf8'));
    const triton = (ts: ModelManifest['serving']['inputs']) =>
      ts.map((t) => ({ name: t.name, dataType: `TYPE_${t.datatype}`, dims: t.dims }));
    expect(cfg.name).toBe(manifest.serving.tritonModelName);
    expect(cfg.backend).toBe('onnxruntime');
    expect(cfg.maxBatchSize).toBe(manifest.serving.maxBatchSize);
    expect(cfg.inputs).toEqual(triton(manifest.serving.inputs));
    expect(cfg.outputs).toEqual(triton(manifest.serving.outputs));
    expect(cfg.kinds.length).toBeGreaterThan(0);
    if (manifest.family === 'gbm' || manifest.family === 'rf') expect(cfg.kinds).toEqual(['KIND_CPU']);
  });

  it('onnxruntime reproduces every golden case within 1e-4 × max(1, |expected|)', async () => {
    const cases = golden.cases;
    if (!cases[0]) throw new Error(`${id}: golden.json has no cases`);
    const out = await session.run(feeds(golden, cases));
    const tensor = out[golden.output];
    if (!tensor) throw new Error(`${id}: no output ${golden.output}`);
    expect(tensor.dims[0]).toBe(cases.length);
    const got = Array.from(tensor.data as Float32Array, Number);
    const outSize = got.length / cases.length;
    const bad: string[] = [];
    let compared = 0;
    cases.forEach((c, i) => {
      const expected = flatten(c.expected);
      expect(expected.length, `case ${String(c.rowId)} output size`).toBe(outSize);
      expected.forEach((e, j) => {
        const g = got[i * outSize + j] ?? Number.NaN;
        compared += 1;
        if (!(Math.abs(g - e) <= RELATIVE_TOLERANCE * Math.max(1, Math.abs(e)))) {
          bad.push(`row ${String(c.rowId)}[${j}]: got ${g}, expected ${e}`);
        }
      });
    });
    expect(bad).toEqual([]);
    expect(compared).toBe(cases.length * outSize);
  });

  it('runs a batch of one and a batch of many alike (dynamic batch axis)', async () => {
    const first = golden.cases[0];
    const second = golden.cases[1];
    if (!first || !second) throw new Error(`${id}: need two golden cases`);
    const one = await session.run(feeds(golden, [first]));
    const two = await session.run(feeds(golden, [first, second]));
    const a = Array.from(one[golden.output]?.data as Float32Array, Number);
    const b = Array.from(two[golden.output]?.data as Float32Array, Number);
    // Alike to float32 rounding, not bit for bit: onnxruntime's tree ensembles with more than
    // `parallel_tree` trees sum a single row's trees in per-thread blocks (merged in lock
    // order) but a small batch row by row, so the last bits of the sum can differ.
    expect(a.length).toBeGreaterThan(0);
    const drift = b
      .slice(0, a.length)
      .map((v, j) => Math.abs(v - (a[j] ?? Number.NaN)) / Math.max(1, Math.abs(v)));
    expect(drift.every((d) => d <= 1e-6)).toBe(true);
    expect(a[0]).toBeCloseTo(flatten(first.expected)[0] ?? Number.NaN, 2);
  });

  it('sequence models: dropping the leading empty steps changes nothing (dynamic T, newest last)', async () => {
    if (manifest.input.kind !== 'sequence') return;
    const { tensor, maskTensor } = manifest.input;
    const names = inputNames(golden);
    const bad: string[] = [];
    for (const c of golden.cases) {
      const x = caseInput(c, tensor, names);
      const mask = flatten(caseInput(c, maskTensor, names));
      const start = mask.findIndex((v) => v > 0);
      expect(start, `case ${String(c.rowId)} has a real step`).toBeGreaterThanOrEqual(0);
      if (!Array.isArray(x)) throw new Error(`case ${String(c.rowId)}: ${tensor} is not a sequence`);
      const trimmed: GoldenCase = { ...c, [tensor]: x.slice(start), [maskTensor]: mask.slice(start) };
      const out = await session.run(feeds(golden, [trimmed]));
      const g = Number(out[manifest.output.tensor]?.data[0]);
      const e = flatten(c.expected)[0] ?? Number.NaN;
      if (!(Math.abs(g - e) <= RELATIVE_TOLERANCE * Math.max(1, Math.abs(e)))) {
        bad.push(`row ${String(c.rowId)} with T=${mask.length - start}: got ${g}, expected ${e}`);
      }
    }
    expect(bad).toEqual([]);
  });
});
