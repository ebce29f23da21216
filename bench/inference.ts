/**
 * The inference path, measured end to end for every model under `models/` that has an ONNX
 * file when the benchmark runs, each figure beside its comparison from the same run:
 *
 * - perRow vs batched: rows/s through the invoker, the real AWS SDK and the local endpoint
 *   server (one `predict` per row, awaited one after the other, vs one `predict` over all rows,
 *   split by the invoker and run 4 calls at a time). Per-row is measured twice: against the
 *   server's default dynamic batching (2 ms max queue delay, which a lone request waits out) and
 *   against a server without it (the fairer, faster per-row figure; the ratio uses it).
 * - codec: KServe JSON vs the binary extension, encode (client) + decode (server) of the
 *   request at batch 1024.
 * - http vs in-process: one InvokeEndpoint call through the SDK (binary codec, keep-alive
 *   agent) vs `session.run` on the same tensors in this process (measured in alternation), at batch min(1024, the model's
 *   max batch size); for models whose max is below 1024, also `predict` of 1024 rows (split by
 *   the invoker) vs one in-process `session.run` of 1024 rows.
 * - python: the same batch with scikit-learn / PyTorch in Debian's python3 (bench/python_peer.py
 *   says exactly what it loads and times) vs in-process onnxruntime-node and the HTTP path.
 *
 * Run alone: `npx tsx bench/inference.ts` prints the JSON.
 */
import { SageMakerRuntimeClient } from '@aws-sdk/client-sagemaker-runtime';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import * as ort from 'onnxruntime-node';
import { startEndpointServer, type EndpointServer } from '../local/sagemaker/server.js';
import { decodeRequest, encodeRequest } from '../shared/inference/codec.js';
import { buildInputs, createInvoker, type Invoker, type InvokerRow } from '../shared/inference/invoker.js';
import type { ModelManifest } from '../shared/inference/manifest.js';
import { loadRegistry } from '../shared/inference/registry.js';
import type { Tensor } from '../shared/inference/tensor.js';
import { machineInfo } from './machine.js';

export interface InferenceBenchOptions {
  /** Default: the repository's `models/`. */
  modelsDir?: string;
  /** Rows sent one per call for the per-row figure. Default 200. */
  perRowRows?: number;
  /** Rows in one `predict` for the batched figure. Default 8192 (2048 for images). */
  batchedRows?: number;
  /** Least time per measured figure, in ms. Default 400. */
  minMs?: number;
  /** The Python for the peers, or false to skip them. Default `/usr/bin/python3`. */
  python?: string | false;
}

const BATCH = 1024;
const round = (v: number, digits = 3): number => Number(v.toPrecision(digits + 1));

/** Median ms of `fn` over repeats (after one warm-up), at least `minMs` of work and 3 repeats. */
async function measure(fn: () => unknown, minMs: number, maxReps = 200): Promise<number> {
  await fn();
  const samples: number[] = [];
  const start = performance.now();
  while (samples.length < 3 || (performance.now() - start < minMs && samples.length < maxReps)) {
    const t0 = performance.now();
    await fn();
    samples.push(performance.now() - t0);
  }
  samples.sort((a, b) => a - b);
  return samples[Math.floor(samples.length / 2)] ?? Number.NaN;
}

/**
 * Medians of two alternatives measured in alternation (a, b, a, b, …), so that load drifting on
 * a shared machine weighs on both alike: the fair way to take their ratio.
 */
async function measurePair(
  a: () => unknown,
  b: () => unknown,
  minMs: number,
  maxReps = 100,
): Promise<[number, number]> {
  await a();
  await b();
  const sa: number[] = [];
  const sb: number[] = [];
  const start = performance.now();
  while (sa.length < 5 || (performance.now() - start < 2 * minMs && sa.length < maxReps)) {
    let t0 = performance.now();
    await a();
    sa.push(performance.now() - t0);
    t0 = performance.now();
    await b();
    sb.push(performance.now() - t0);
  }
  const median = (xs: number[]): number => xs.sort((x, y) => x - y)[Math.floor(xs.length / 2)] ?? Number.NaN;
  return [median(sa), median(sb)];
}

/** A seeded generator (mulberry32), so every run sends the same rows. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The shape of one row (without batch) with dynamic dims filled in (a sequence's T = steps). */
function rowShape(m: ModelManifest): number[] {
  const spec = m.serving.inputs.find((t) => t.name === m.input.tensor);
  const steps = m.input.kind === 'sequence' ? m.input.steps : 1;
  return (spec?.dims ?? []).map((d, i) => (d >= 0 ? d : i === 0 ? steps : 1));
}

function makeRows(m: ModelManifest, n: number): InvokerRow[] {
  const random = prng(42);
  const shape = rowShape(m);
  const width = shape.reduce((a, b) => a * b, 1);
  return Array.from({ length: n }, () => {
    const values = new Float32Array(width);
    for (let i = 0; i < width; i++) values[i] = m.input.kind === 'image' ? random() : 4 * random() - 1;
    return m.input.kind === 'sequence'
      ? { values, shape, mask: new Float32Array(shape[0] ?? 0).fill(1) }
      : { values, shape };
  });
}

function toOrt(t: Tensor): ort.Tensor {
  return new ort.Tensor('float32', t.data as Float32Array, t.shape);
}

interface Servers {
  batching: EndpointServer;
  plain: EndpointServer;
  client: SageMakerRuntimeClient;
  plainClient: SageMakerRuntimeClient;
}

async function benchModel(
  m: ModelManifest,
  modelsDir: string,
  s: Servers,
  opts: Required<Omit<InferenceBenchOptions, 'python' | 'modelsDir'>>,
) {
  const json = createInvoker({ client: s.client, circuitBreaker: false });
  const binary = createInvoker({ client: s.client, circuitBreaker: false, binaryThreshold: 0 });
  const plainInvoker = createInvoker({ client: s.plainClient, circuitBreaker: false });
  const isImage = m.input.kind === 'image';
  const nBatched = isImage ? Math.min(opts.batchedRows, 2048) : opts.batchedRows;
  const rows = makeRows(m, Math.max(nBatched, BATCH, opts.perRowRows));

  // Per row vs batched, through client + SDK + server.
  const perRow = async (inv: Invoker): Promise<number> => {
    const few = rows.slice(0, opts.perRowRows);
    await inv.predict(m, [few[0] as InvokerRow]);
    const t0 = performance.now();
    for (const r of few) await inv.predict(m, [r]);
    return few.length / ((performance.now() - t0) / 1000);
  };
  const perRowPlain = await perRow(plainInvoker);
  const perRowBatching = await perRow(json);
  const all = rows.slice(0, nBatched);
  const batchedMs = await measure(() => json.predict(m, all), opts.minMs, 20);
  const batched = nBatched / (batchedMs / 1000);

  // Codec at batch 1024.
  const inputs1024 = buildInputs(m, rows.slice(0, BATCH));
  const outputs = [m.output.tensor];
  const codec = async (bin: boolean): Promise<number> =>
    measure(
      () => {
        const { body, contentType } = encodeRequest(inputs1024, outputs, { binary: bin });
        decodeRequest(body, contentType);
      },
      opts.minMs,
      isImage && !bin ? 5 : 200,
    );
  const jsonMs = await codec(false);
  const binaryMs = await codec(true);

  // HTTP path vs in-process session.run at min(1024, maxBatchSize).
  const session = await ort.InferenceSession.create(join(modelsDir, m.id, '1', 'model.onnx'));
  const b = Math.min(BATCH, m.serving.maxBatchSize);
  const inputsB = buildInputs(m, rows.slice(0, b));
  const feedsOf = (ts: Tensor[]) => Object.fromEntries(ts.map((t) => [t.name, toOrt(t)]));
  const feedsB = feedsOf(inputsB);
  const [inProcessMs, httpMs] = await measurePair(
    () => session.run(feedsB),
    () => binary.invokeTensors(m, inputsB),
    opts.minMs,
  );
  const http: Record<string, unknown> = {
    batch: b,
    inProcessMs: round(inProcessMs),
    httpBinaryMs: round(httpMs),
    ratio: round(httpMs / inProcessMs),
  };
  let inProcess1024Ms = inProcessMs;
  if (b < BATCH) {
    const feeds1024 = feedsOf(inputs1024);
    const rows1024 = rows.slice(0, BATCH);
    const [inProc, predict1024] = await measurePair(
      () => session.run(feeds1024),
      () => binary.predict(m, rows1024),
      opts.minMs,
    );
    inProcess1024Ms = inProc;
    http.at1024 = {
      note: `predict of 1024 rows split into ${Math.ceil(BATCH / b)} calls of ${b} (4 in flight) vs one in-process session.run of 1024 rows`,
      inProcessMs: round(inProcess1024Ms),
      httpBinaryMs: round(predict1024),
      ratio: round(predict1024 / inProcess1024Ms),
    };
  }
  await session.release();
  return {
    result: {
      family: m.family,
      inputKind: m.input.kind,
      rowShape: rowShape(m),
      maxBatchSize: m.serving.maxBatchSize,
      throughput: {
        perRowRowsPerSec: round(perRowPlain),
        perRowWithDynamicBatchingRowsPerSec: round(perRowBatching),
        batchedRowsPerSec: round(batched),
        batchedRows: nBatched,
        ratio: round(batched / perRowPlain),
        ratioVsPerRowWithDynamicBatching: round(batched / perRowBatching),
      },
      codecAt1024: {
        jsonMs: round(jsonMs),
        binaryMs: round(binaryMs),
        ratio: round(jsonMs / binaryMs),
        requestBytes: {
          json: encodeRequest(inputs1024, outputs, { binary: false }).body.length,
          binary: encodeRequest(inputs1024, outputs, { binary: true }).body.length,
        },
      },
      httpVsInProcess: http,
    },
    inProcess1024Ms,
    httpAt1024Ms: (http.at1024 as { httpBinaryMs?: number } | undefined)?.httpBinaryMs ?? httpMs,
  };
}

function pythonPeers(python: string, models: ModelManifest[], minMs: number): Record<string, unknown> {
  const script = fileURLToPath(new URL('./python_peer.py', import.meta.url));
  if (!existsSync(python)) return { skipped: `${python} not found` };
  const req = {
    batch: BATCH,
    minSeconds: minMs / 1000,
    models: models.map((m) => ({ id: m.id, family: m.family, rowShape: rowShape(m) })),
  };
  const res = spawnSync(python, [script], {
    input: JSON.stringify(req),
    encoding: 'utf8',
    maxBuffer: 1 << 24,
  });
  if (res.status !== 0)
    return { skipped: `python_peer.py failed: ${(res.stderr || res.error?.message || '').slice(-500)}` };
  return JSON.parse(res.stdout) as Record<string, unknown>;
}

export async function benchInference(opts: InferenceBenchOptions = {}): Promise<Record<string, unknown>> {
  const modelsDir = opts.modelsDir ?? fileURLToPath(new URL('../models', import.meta.url));
  const settings = {
    perRowRows: opts.perRowRows ?? 200,
    batchedRows: opts.batchedRows ?? 8192,
    minMs: opts.minMs ?? 400,
  };
  const registry = await loadRegistry(modelsDir);
  const models = registry.all().filter((m) => existsSync(join(modelsDir, m.id, '1', 'model.onnx')));
  const missing = registry
    .all()
    .filter((m) => !models.includes(m))
    .map((m) => m.id);

  const agent = () => new Agent({ keepAlive: true, maxSockets: 16 });
  const sdk = (url: string) =>
    new SageMakerRuntimeClient({
      endpoint: url,
      region: 'us-east-1',
      credentials: { accessKeyId: 'bench', secretAccessKey: 'bench' },
      requestHandler: new NodeHttpHandler({ httpAgent: agent() }),
    });
  const batching = await startEndpointServer({ modelsDir, port: 0 });
  const plain = await startEndpointServer({ modelsDir, port: 0, dynamicBatching: false });
  const pingAgent = agent();
  const ping = () =>
    new Promise<void>((resolve, reject) => {
      request(`${batching.url}/ping`, { agent: pingAgent }, (res) => {
        res.resume();
        res.on('end', resolve);
      })
        .on('error', reject)
        .end();
    });
  const pingMs = await measure(ping, settings.minMs);
  pingAgent.destroy();
  const loadBefore = loadavg();
  const servers: Servers = { batching, plain, client: sdk(batching.url), plainClient: sdk(plain.url) };
  const results: Record<string, unknown> = {};
  const inProcess: Record<string, { inProcess1024Ms: number; httpAt1024Ms: number }> = {};
  try {
    for (const m of models) {
      process.stderr.write(`bench inference: ${m.id}\n`);
      const r = await benchModel(m, modelsDir, servers, settings);
      results[m.id] = r.result;
      inProcess[m.id] = { inProcess1024Ms: r.inProcess1024Ms, httpAt1024Ms: r.httpAt1024Ms };
    }
  } finally {
    servers.client.destroy();
    servers.plainClient.destroy();
    await batching.close();
    await plain.close();
  }

  let python: Record<string, unknown> = { skipped: 'disabled' };
  if (opts.python !== false) {
    process.stderr.write('bench inference: python peers\n');
    python = pythonPeers(opts.python ?? '/usr/bin/python3', models, settings.minMs);
    const peers = (python.models ?? {}) as Record<
      string,
      { batchedMs?: number; perRowMs?: number } | undefined
    >;
    for (const m of models) {
      const peer = peers[m.id];
      const own = inProcess[m.id];
      const entry = results[m.id] as Record<string, unknown>;
      if (!peer?.batchedMs || !own) {
        entry.python = peer ?? { skipped: 'no result' };
        continue;
      }
      entry.python = {
        ...peer,
        batch: BATCH,
        onnxInProcessMs: round(own.inProcess1024Ms),
        onnxHttpMs: round(own.httpAt1024Ms),
        pythonOverOnnxInProcess: round(peer.batchedMs / own.inProcess1024Ms),
        pythonOverHttpPath: round(peer.batchedMs / own.httpAt1024Ms),
      };
    }
  }

  const targets = Object.fromEntries(
    Object.entries(results).map(([id, r]) => {
      const x = r as {
        inputKind: string;
        family: string;
        throughput: { ratio: number };
        codecAt1024: { ratio: number };
        httpVsInProcess: { ratio: number };
      };
      const httpLimit = x.family === 'cnn' ? 1.1 : x.inputKind === 'tabular' ? 1.5 : undefined;
      return [
        id,
        {
          batchedOver20xPerRow: x.inputKind === 'tabular' ? x.throughput.ratio >= 20 : 'n/a (not tabular)',
          binaryOver3xJson: x.codecAt1024.ratio >= 3,
          httpWithinLimit:
            httpLimit === undefined
              ? 'n/a (no target for sequence models)'
              : {
                  limit: httpLimit,
                  ratio: x.httpVsInProcess.ratio,
                  met: x.httpVsInProcess.ratio <= httpLimit,
                },
        },
      ];
    }),
  );

  return {
    machine: machineInfo(),
    ortVersion: ort.env.versions.common,
    settings: {
      ...settings,
      batch: BATCH,
      serverDynamicBatching: 'default: 2 ms max queue delay',
      httpAgent: 'keep-alive, 16 sockets',
    },
    load: {
      note: 'os.loadavg() before and after: other work on this machine skews every figure',
      before: loadBefore.map((v) => round(v)),
      after: loadavg().map((v) => round(v)),
    },
    httpFloor: { pingRoundTripMs: round(pingMs), note: 'bare GET /ping over a keep-alive agent' },
    modelsSkipped: missing,
    models: results,
    python: { python: python.python, sklearn: python.sklearn, torch: python.torch, skipped: python.skipped },
    targets,
  };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  benchInference()
    .then((r) => {
      process.stdout.write(JSON.stringify(r, null, 2) + '\n');
    })
    .catch((err: unknown) => {
      process.stderr.write(
        `bench failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
      );
      process.exit(1);
    });
}
