/**
 * The model side of the local endpoint server: a Triton-style model repository
 * (`<modelsDir>/<id>/config.pbtxt`, `<id>/<version>/model.onnx`) served with
 * onnxruntime-node sessions, loaded on first use. Requests are checked the way Triton
 * checks them, and failures carry Triton's status (400 for a bad request, 500 otherwise)
 * and a message in Triton's words.
 */
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { manifestInputProblem } from '../../shared/inference/input-checks.js';
import { parseManifest, type ModelManifest } from '../../shared/inference/manifest.js';
import type { Tensor, TensorDataType } from '../../shared/inference/tensor.js';
import { readModelConfig, type ModelDynamicBatching } from './model-config.js';

/** An error as Triton would answer it: `{"error": message}` with this HTTP status. */
export class TritonError extends Error {
  override name = 'TritonError';
  constructor(
    readonly status: 400 | 500,
    message: string,
  ) {
    super(message);
  }
}

interface TensorMeta {
  name: string;
  /** Undefined for a type this server cannot carry (strings, float16, maps, sequences). */
  datatype: TensorDataType | undefined;
  /** -1 for a symbolic or unknown dimension. */
  shape: number[];
}

export interface LoadedModel {
  readonly id: string;
  readonly version: string;
  /** From config.pbtxt (or the manifest); undefined when neither says. */
  readonly maxBatchSize: number | undefined;
  /** config.pbtxt's `dynamic_batching`; undefined when the config has none. */
  readonly dynamicBatching: ModelDynamicBatching | undefined;
  readonly inputs: readonly TensorMeta[];
  readonly outputs: readonly TensorMeta[];
  /** `<id>/manifest.json` when there is a valid one: NaN and sequence-length checks. */
  readonly manifest: ModelManifest | undefined;
  /** Validates like Triton (and the manifest's checks); throws a TritonError 400. */
  validate(inputs: readonly Tensor[], outputs: readonly string[] | undefined): void;
  /** The outputs this server can return (tensor outputs), in graph order. */
  readonly outputNames: readonly string[];
  /** One `session.run` over already validated inputs. */
  execute(inputs: readonly Tensor[], fetches: readonly string[]): Promise<Tensor[]>;
  /** Validates, runs the session, returns the requested (default: all tensor) outputs. */
  run(
    inputs: readonly Tensor[],
    outputs: readonly string[] | undefined,
    onRun?: () => void,
  ): Promise<Tensor[]>;
  release(): Promise<void>;
}

const ORT_TO_KSERVE: Partial<Record<string, TensorDataType>> = {
  float32: 'FP32',
  float64: 'FP64',
  int32: 'INT32',
  int64: 'INT64',
  bool: 'BOOL',
};
const KSERVE_TO_ORT = {
  FP32: 'float32',
  FP64: 'float64',
  INT32: 'int32',
  INT64: 'int64',
  BOOL: 'bool',
} as const;

/**
 * The session options of every model this server loads, and of the benchmark's in-process
 * figure (through `createSession`), so both sides run the same: every graph optimisation,
 * sequential execution, one intra-op thread per physical core (onnxruntime's defaults, as
 * Triton's onnxruntime backend uses them), and intra-op threads that sleep between runs instead
 * of spin-waiting for the next one. Here the HTTP work of every request shares the cores with
 * those threads: measured on the 2-core machine (load 12), spinning threads took the event
 * loop's CPU and one InvokeEndpoint of GBM at batch 1024 took 10–20 ms instead of 1.5–2.2 ms,
 * while `session.run` alone took the same either way (0.48–0.52 ms). In-process under load 13:
 * the CNN runs faster without spinning (p50 71 vs 99–115 ms at batch 256), GBM the same
 * (0.41 ms), the GRU, whose loop wakes the threads once per step, much slower (p50 30 vs 1.3 ms).
 */
export const SESSION_OPTIONS: Readonly<ort.InferenceSession.SessionOptions> = Object.freeze({
  graphOptimizationLevel: 'all',
  executionMode: 'sequential',
  extra: { session: { intra_op: { allow_spinning: '0' } } },
});

/** An onnxruntime session with this server's options. */
export function createSession(path: string): Promise<ort.InferenceSession> {
  return ort.InferenceSession.create(path, { ...SESSION_OPTIONS });
}

const MODEL_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

function meta(m: ort.InferenceSession.ValueMetadata): TensorMeta {
  if (!m.isTensor) return { name: m.name, datatype: undefined, shape: [] };
  return {
    name: m.name,
    datatype: ORT_TO_KSERVE[m.type],
    shape: m.shape.map((d) => (typeof d === 'number' && d >= 0 ? d : -1)),
  };
}

const fmt = (shape: readonly number[]): string => `[${shape.join(',')}]`;

async function exists(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isFile();
  } catch {
    return false;
  }
}

/** The highest numeric version folder holding a model.onnx. */
async function latestVersion(modelDir: string): Promise<string | undefined> {
  let names: string[];
  try {
    names = await readdir(modelDir);
  } catch {
    return undefined;
  }
  const versions = names.filter((n) => /^\d+$/.test(n)).sort((a, b) => Number(b) - Number(a));
  for (const v of versions) if (await exists(join(modelDir, v, 'model.onnx'))) return v;
  return undefined;
}

/** The model's manifest, or undefined when it has none or it does not parse. */
async function readManifest(modelDir: string): Promise<ModelManifest | undefined> {
  const file = join(modelDir, 'manifest.json');
  try {
    return parseManifest(JSON.parse(await readFile(file, 'utf8')), file);
  } catch {
    return undefined;
  }
}

function toOrt(t: Tensor): ort.Tensor {
  return new ort.Tensor(KSERVE_TO_ORT[t.datatype], t.data, t.shape);
}

function fromOrt(id: string, name: string, value: ort.OnnxValue): Tensor {
  const datatype = ORT_TO_KSERVE[value.type];
  if (datatype === undefined) {
    throw new TritonError(
      500,
      `output '${name}' of model '${id}' has type ${value.type}, which is not supported`,
    );
  }
  const shape = [...value.dims];
  // The binding copies every output into a fresh typed array per run: no copy is needed here.
  const src = value.data;
  if (
    src instanceof Float32Array ||
    src instanceof Float64Array ||
    src instanceof Int32Array ||
    src instanceof BigInt64Array ||
    src instanceof Uint8Array
  )
    return { name, datatype, shape, data: src };
  throw new TritonError(500, `output '${name}' of model '${id}' has no numeric data`);
}

function validate(
  model: Pick<LoadedModel, 'id' | 'inputs' | 'outputs' | 'maxBatchSize' | 'manifest'>,
  inputs: readonly Tensor[],
  outputs: readonly string[] | undefined,
): void {
  const { id } = model;
  for (const t of inputs) {
    if (!model.inputs.some((m) => m.name === t.name)) {
      throw new TritonError(400, `unexpected inference input '${t.name}' for model '${id}'`);
    }
  }
  if (inputs.length !== model.inputs.length) {
    throw new TritonError(
      400,
      `expected ${model.inputs.length} inputs but got ${inputs.length} inputs for model '${id}'`,
    );
  }
  let batch: number | undefined;
  for (const t of inputs) {
    const m = model.inputs.find((x) => x.name === t.name);
    if (!m) continue;
    if (m.datatype !== t.datatype) {
      throw new TritonError(
        400,
        `inference input '${t.name}' data-type is '${t.datatype}', but model '${id}' expects '${m.datatype ?? 'an unsupported type'}'`,
      );
    }
    const fits = m.shape.length === t.shape.length && m.shape.every((d, i) => d === -1 || d === t.shape[i]);
    if (!fits) {
      throw new TritonError(
        400,
        `unexpected shape for input '${t.name}' for model '${id}'. Expected ${fmt(m.shape)}, got ${fmt(t.shape)}`,
      );
    }
    const n = t.shape[0];
    if (batch !== undefined && n !== batch) {
      throw new TritonError(
        400,
        `inputs of model '${id}' disagree on the batch size (${batch} and ${n ?? 0})`,
      );
    }
    batch = n;
  }
  if (model.maxBatchSize !== undefined && model.maxBatchSize > 0 && batch !== undefined) {
    if (batch > model.maxBatchSize) {
      throw new TritonError(400, `inference request batch-size must be <= ${model.maxBatchSize} for '${id}'`);
    }
  }
  const problem = model.manifest ? manifestInputProblem(model.manifest, inputs) : undefined;
  if (problem !== undefined) throw new TritonError(400, problem);
  for (const name of outputs ?? []) {
    const m = model.outputs.find((o) => o.name === name);
    if (!m) throw new TritonError(400, `unexpected inference output '${name}' for model '${id}'`);
    if (m.datatype === undefined) {
      throw new TritonError(400, `output '${name}' of model '${id}' is not a tensor this server can return`);
    }
  }
}

async function load(modelsDir: string, id: string): Promise<LoadedModel | undefined> {
  const dir = join(modelsDir, id);
  const version = await latestVersion(dir);
  if (version === undefined) return undefined;
  let session: ort.InferenceSession;
  try {
    session = await createSession(join(dir, version, 'model.onnx'));
  } catch (err) {
    throw new TritonError(500, `failed to load model '${id}': ${(err as Error).message}`);
  }
  const outputNames = session.outputMetadata
    .map(meta)
    .filter((o) => o.datatype !== undefined)
    .map((o) => o.name);
  const execute = async (inputs: readonly Tensor[], fetches: readonly string[]): Promise<Tensor[]> => {
    const feeds = Object.fromEntries(inputs.map((t) => [t.name, toOrt(t)]));
    let result: ort.InferenceSession.ReturnType;
    try {
      result = await session.run(feeds, [...fetches]);
    } catch (err) {
      throw new TritonError(500, `onnx runtime error: ${(err as Error).message.replace(/\s+/g, ' ').trim()}`);
    }
    return fetches.map((name) => {
      const value = result[name];
      if (value === undefined) throw new TritonError(500, `model '${id}' produced no output '${name}'`);
      return fromOrt(id, name, value);
    });
  };
  const config = await readModelConfig(dir);
  const model: LoadedModel = {
    id,
    version,
    maxBatchSize: config.maxBatchSize,
    dynamicBatching: config.dynamicBatching,
    inputs: session.inputMetadata.map(meta),
    outputs: session.outputMetadata.map(meta),
    manifest: await readManifest(dir),
    outputNames,
    validate: (inputs, outputs) => {
      validate(model, inputs, outputs);
    },
    execute,
    run: async (inputs, outputs, onRun) => {
      validate(model, inputs, outputs);
      onRun?.();
      return execute(inputs, outputs ?? outputNames);
    },
    release: () => session.release(),
  };
  return model;
}

/** Models of a repository folder, each loaded once on first use. */
export class ModelStore {
  private readonly loaded = new Map<string, Promise<LoadedModel | undefined>>();

  constructor(private readonly modelsDir: string) {}

  /** The model, or undefined when the repository has no such model (no `<id>/<n>/model.onnx`). */
  async get(id: string): Promise<LoadedModel | undefined> {
    if (!MODEL_ID.test(id)) return undefined;
    let p = this.loaded.get(id);
    if (!p) {
      p = load(this.modelsDir, id);
      this.loaded.set(id, p);
    }
    try {
      const model = await p;
      // A model that is not there yet may appear later (a training run writing it).
      if (!model) this.loaded.delete(id);
      return model;
    } catch (err) {
      this.loaded.delete(id);
      throw err;
    }
  }

  async close(): Promise<void> {
    const models = await Promise.allSettled([...this.loaded.values()]);
    this.loaded.clear();
    for (const m of models) if (m.status === 'fulfilled' && m.value) await m.value.release();
  }
}
