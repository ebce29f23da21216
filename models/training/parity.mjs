// Numeric parity of every exported model: runs each `<root>/models/*/1/model.onnx` in
// onnxruntime-node on the cases of its `golden.json` and compares with the reference
// (sklearn/torch float64) outputs. Fails when any |got - expected| > 1e-4 × max(1, |expected|).
//
//   node models/training/parity.mjs [ROOT]     (ROOT defaults to the repository)
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as ort from 'onnxruntime-node';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const RELATIVE_TOLERANCE = 1e-4;

/** Folders under `<root>/models` that hold a golden.json. */
export function modelDirs(root) {
  const models = path.join(root, 'models');
  if (!fs.existsSync(models)) return [];
  return fs
    .readdirSync(models, { withFileTypes: true })
    .filter((d) => d.isDirectory() && fs.existsSync(path.join(models, d.name, 'golden.json')))
    .map((d) => path.join(models, d.name))
    .sort();
}

/** The input tensor names of a golden file: `inputs` (several tensors) or `input` (one). */
export function goldenInputNames(golden) {
  if (Array.isArray(golden.inputs) && golden.inputs.length > 0) return golden.inputs;
  if (typeof golden.input === 'string') return [golden.input];
  throw new Error('golden.json names no input tensor (`input` or `inputs`)');
}

/** A case's value for one input: the key named like the tensor, or `x` for a single input. */
export function caseInput(c, name, names) {
  if (c[name] !== undefined) return c[name];
  if (names.length === 1 && c.x !== undefined) return c.x;
  throw new Error(`case ${c.rowId} has no value for input "${name}"`);
}

const shapeOf = (v) => (Array.isArray(v) ? [v.length, ...shapeOf(v[0])] : []);

/**
 * Batches one input over the cases: a case's value is one input row (any nesting: it is
 * flattened, and the tensor shape is [cases, ...shape of the first case's row]); JSON `null`
 * stands for a missing value and is sent as NaN.
 */
export function batchInput(cases, name, names, where = 'golden.json') {
  const rowShape = shapeOf(caseInput(cases[0], name, names));
  const rowSize = rowShape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(cases.length * rowSize);
  cases.forEach((c, i) => {
    const flat = [caseInput(c, name, names)].flat(Infinity);
    if (flat.length !== rowSize) {
      throw new Error(`${where}: case ${i} has ${flat.length} values for "${name}", expected ${rowSize}`);
    }
    data.set(
      flat.map((v) => (v === null ? Number.NaN : v)),
      i * rowSize,
    );
  });
  return new ort.Tensor('float32', data, [cases.length, ...rowShape]);
}

/**
 * Checks one model folder. Returns { model, cases, maxAbsError, maxRelError, failures }.
 * The golden file names its input tensor(s) (`input`, or `inputs` for several, each case then
 * carrying one value per name, see batchInput); `expected` is a number or an array of the
 * output row.
 */
export async function checkModel(dir) {
  const golden = JSON.parse(fs.readFileSync(path.join(dir, 'golden.json'), 'utf8'));
  const cases = golden.cases;
  if (!Array.isArray(cases) || cases.length === 0) throw new Error(`${dir}/golden.json: no cases`);
  const names = goldenInputNames(golden);
  const feeds = Object.fromEntries(
    names.map((name) => [name, batchInput(cases, name, names, `${dir}/golden.json`)]),
  );
  const session = await ort.InferenceSession.create(path.join(dir, '1', 'model.onnx'));
  try {
    const out = await session.run(feeds);
    const tensor = out[golden.output];
    if (!tensor) throw new Error(`${dir}: model has no output "${golden.output}"`);
    const got = Array.from(tensor.data, Number);
    const outSize = got.length / cases.length;
    let maxAbsError = 0;
    let maxRelError = 0;
    const failures = [];
    cases.forEach((c, i) => {
      const expected = [c.expected].flat(Infinity);
      if (expected.length !== outSize) {
        failures.push({
          rowId: c.rowId,
          reason: `expected ${expected.length} values, model gave ${outSize}`,
        });
        return;
      }
      expected.forEach((e, j) => {
        const g = got[i * outSize + j];
        const err = Math.abs(g - e);
        const rel = err / Math.max(1, Math.abs(e));
        maxAbsError = Math.max(maxAbsError, err);
        maxRelError = Math.max(maxRelError, rel);
        if (!(rel <= RELATIVE_TOLERANCE)) failures.push({ rowId: c.rowId, index: j, got: g, expected: e });
      });
    });
    return { model: golden.model, cases: cases.length, maxAbsError, maxRelError, failures };
  } finally {
    await session.release();
  }
}

/** Checks every model under `<root>/models`; prints one line each; returns true when all pass. */
export async function checkAll(root = REPO_ROOT, log = console.log) {
  const dirs = modelDirs(root);
  if (dirs.length === 0) {
    log(`[parity] no models/*/golden.json under ${root}`);
    return false;
  }
  let ok = true;
  for (const dir of dirs) {
    const r = await checkModel(dir);
    const pass = r.failures.length === 0;
    ok &&= pass;
    log(
      `[parity] ${r.model}: ${r.cases} cases, max |err| ${r.maxAbsError.toExponential(2)}, ` +
        `max relative ${r.maxRelError.toExponential(2)} (limit ${RELATIVE_TOLERANCE}) ${pass ? 'ok' : 'FAILED'}`,
    );
    for (const f of r.failures.slice(0, 5)) log(`[parity]   ${JSON.stringify(f)}`);
  }
  return ok;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const ok = await checkAll(process.argv[2] ? path.resolve(process.argv[2]) : REPO_ROOT);
  process.exit(ok ? 0 : 1);
}
