/**
 * The HTTP path of one model against in-process `session.run` (bench/inference.ts), with the
 * floors measured round-robin in the same run, so that a reader sees how much of the gap is
 * this project's code and how much is the AWS SDK and loopback HTTP, which any server pays:
 *
 * - `inProcess`: `session.run` in this process with the server's session options
 *   (`createSession`), tensor creation and reading the outputs included, as the server does;
 * - `sdk`: one InvokeEndpoint through the functions' own client (shared/inference/client.ts)
 *   and the invoker with the binary codec: encode, SigV4, HTTP, the server (decode, checks,
 *   dynamic batcher, `session.run`, encode), decode;
 * - `bareToServer`: the same body POSTed with node:http (encode + POST + decode, no SDK);
 * - `bareToEcho`: that POST to a server that only reads the body and answers one of the
 *   response's size (loopback HTTP alone);
 * - `sdkToEcho`: InvokeEndpoint through the same client to that echo server: the SDK's own
 *   cost (middleware, SigV4 with the SHA-256 of the body, retries bookkeeping) plus loopback.
 *
 * `floorRatio` = (inProcess + sdkToEcho) / inProcess: what a server that added nothing to
 * `session.run` would score through the SDK on this machine. Where it is above a target, the
 * target cannot be met by any server code; `oursMs` = sdk − inProcess − sdkToEcho is what is
 * left to this project (the invoker's encode/decode, the server's decode, checks and encode).
 *
 * Each record carries the 1-minute load average when it was taken: on the shared 2-core machine
 * the ratios move with it.
 *
 * For a model whose max batch size is below 1024 (the CNN: 256; 1024 CT crops are also 16 MB,
 * over SageMaker's 6 MB), 1024 rows go as `predict` (split into calls of the max batch) with
 * 1 and 4 calls in flight, against in-process `session.run` of the same 1024 rows, stacked into
 * tensors as `predict` stacks them, both ways: one run of 1024 and four runs of 256 one after the
 * other. The ratio is taken against the faster of the two, the stricter comparison. Calls in
 * flight cannot hide their HTTP work behind a run here: onnxruntime-node runs a session on the
 * calling thread, and the server shares the event loop with the client, so the floor of every
 * call adds up (`at1024.floorRatio`).
 */
import { InvokeEndpointCommand, type SageMakerRuntimeClient } from '@aws-sdk/client-sagemaker-runtime';
import { createHash } from 'node:crypto';
import type { Agent } from 'node:http';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { createSession } from '../local/sagemaker/models.js';
import type { EndpointServer } from '../local/sagemaker/server.js';
import { decodeResponse, encodeRequest } from '../shared/inference/codec.js';
import { buildInputs, createInvoker, type InvokerRow } from '../shared/inference/invoker.js';
import type { ModelManifest } from '../shared/inference/manifest.js';
import type { Tensor } from '../shared/inference/tensor.js';
import { measure, measureRound, post } from './inference-support.js';

export const BATCH = 1024;
export const round = (v: number, digits = 3): number => Number(v.toPrecision(digits + 1));

export interface Floors {
  /** The endpoint server. */
  server: EndpointServer;
  /** The functions' client, pointed at the endpoint server. */
  client: SageMakerRuntimeClient;
  /** An HTTP server that reads the body and answers `echo.responseBytes` bytes. */
  echo: { url: string };
  /** The functions' client, pointed at the echo server. */
  echoClient: SageMakerRuntimeClient;
  /** node:http keep-alive agent for the bare POSTs. */
  agent: Agent;
  setEchoBytes: (n: number) => void;
}

function toOrt(t: Tensor): ort.Tensor {
  return new ort.Tensor('float32', t.data as Float32Array, t.shape);
}

/** What the server does around `session.run`: ort tensors from the request's, the run, the outputs read. */
async function runInProcess(session: ort.InferenceSession, inputs: readonly Tensor[]): Promise<number> {
  const result = await session.run(Object.fromEntries(inputs.map((t) => [t.name, toOrt(t)])));
  let n = 0;
  for (const name of session.outputNames) n += result[name]?.data.length ?? 0;
  return n;
}

export interface HttpResult {
  record: Record<string, unknown>;
  /** In-process ms for 1024 rows (the faster way where there are two). */
  inProcess1024Ms: number;
  /** HTTP path ms for 1024 rows (one call, or the split `predict` with 4 in flight). */
  http1024Ms: number;
}

export async function benchHttpPath(
  m: ModelManifest,
  modelsDir: string,
  rows: readonly InvokerRow[],
  f: Floors,
  minMs: number,
): Promise<HttpResult> {
  const binary = createInvoker({ client: f.client, circuitBreaker: false, binaryThreshold: 0 });
  const outputs = [m.output.tensor];
  const session = await createSession(join(modelsDir, m.id, '1', 'model.onnx'));
  const b = Math.min(BATCH, m.serving.maxBatchSize);
  const inputsB = buildInputs(m, rows.slice(0, b));
  const url = `${f.server.url}/endpoints/${encodeURIComponent(m.id)}/invocations`;
  const encoded = () => encodeRequest(inputsB, outputs, { binary: true });
  const sample = encoded();
  const answer = await post(f.agent, url, sample.body, sample.contentType);
  f.setEchoBytes(answer.body.length);
  // SigV4 signs the SHA-256 of the body: a cost of every signed call that grows with the body.
  const sha256Ms = await measure(() => createHash('sha256').update(sample.body).digest('hex'), minMs / 4);
  const {
    medians: [inProcessMs = 0, sdkMs = 0, bareServerMs = 0, echoMs = 0, sdkEchoMs = 0],
    reps,
  } = await measureRound(
    [
      () => runInProcess(session, inputsB),
      () => binary.invokeTensors(m, inputsB),
      async () => {
        const { body, contentType } = encoded();
        const res = await post(f.agent, url, body, contentType);
        decodeResponse(res.body, res.contentType);
      },
      () => post(f.agent, f.echo.url, sample.body, sample.contentType),
      () =>
        f.echoClient.send(
          new InvokeEndpointCommand({
            EndpointName: m.id,
            Body: sample.body,
            ContentType: sample.contentType,
          }),
        ),
    ],
    minMs,
  );
  const record: Record<string, unknown> = {
    loadAvg1mAfter: round(loadavg()[0] ?? Number.NaN),
    batch: b,
    requestBytes: sample.body.length,
    responseBytes: answer.body.length,
    reps,
    inProcessMs: round(inProcessMs),
    httpBinaryMs: round(sdkMs),
    ratio: round(sdkMs / inProcessMs),
    floors: {
      floorRatio: round((inProcessMs + sdkEchoMs) / inProcessMs),
      bareFloorRatio: round((inProcessMs + echoMs) / inProcessMs),
      sdkToEchoMs: round(sdkEchoMs),
      bareHttpToEchoMs: round(echoMs),
      bareHttpToServerMs: round(bareServerMs),
      bareHttpToServerRatio: round(bareServerMs / inProcessMs),
      sigV4BodySha256Ms: round(sha256Ms),
      note: 'floorRatio = (inProcess + SDK to a no-op echo server) / inProcess: the best a server adding nothing to session.run scores through the SDK; bareFloorRatio the same without the SDK (node:http POST); bareHttpToServer = node:http POST of the same body to the endpoint server (encode + POST + decode, no SDK)',
    },
    where: {
      modelMs: round(inProcessMs),
      loopbackHttpMs: round(echoMs),
      sdkOwnMs: round(sdkEchoMs - echoMs),
      oursMs: round(sdkMs - inProcessMs - sdkEchoMs),
      note: 'differences of round-robin medians: sdkOwn = SDK to echo − bare POST to echo (SigV4 incl. the body SHA-256, middleware); ours = SDK path − in-process − SDK to echo (invoker encode/decode, server decode, checks, batcher, encode)',
    },
  };
  let inProcess1024Ms = inProcessMs;
  let http1024Ms = sdkMs;
  if (b < BATCH) {
    const rows1024 = rows.slice(0, BATCH);
    const calls = Math.ceil(BATCH / b);
    const mb = (sample.body.length * calls) / 1e6;
    // Both sides start from the same rows: predict stacks them into tensors, so the in-process
    // runs do too (buildInputs, as the invoker calls it).
    const parts = Array.from({ length: calls }, (_, i) => rows1024.slice(i * b, (i + 1) * b));
    const sequential = createInvoker({
      client: f.client,
      circuitBreaker: false,
      binaryThreshold: 0,
      concurrency: 1,
    });
    const {
      medians: [oneRun = 0, runsOfB = 0, predict4 = 0, predict1 = 0],
      reps: reps1024,
    } = await measureRound(
      [
        () => runInProcess(session, buildInputs(m, rows1024)),
        async () => {
          for (const p of parts) await runInProcess(session, buildInputs(m, p));
        },
        () => binary.predict(m, rows1024),
        () => sequential.predict(m, rows1024),
      ],
      minMs,
      30,
    );
    inProcess1024Ms = Math.min(oneRun, runsOfB);
    http1024Ms = predict4;
    record.at1024 = {
      loadAvg1mAfter: round(loadavg()[0] ?? Number.NaN),
      note: `1024 rows (${mb.toFixed(1)} MB of binary request${mb > 6.29 ? ', over the 6 MB limit' : ''}): predict split into ${String(calls)} calls of ${String(b)} (the max batch size) with 4 and with 1 in flight, vs in-process session.run of the same rows stacked into tensors, in one run of 1024 and in ${String(calls)} runs of ${String(b)}; the ratio is against the faster. The endpoint server shares this process and its session.run holds the event loop, so calls in flight cannot overlap their HTTP work with a run: the SDK floor of every call adds up (floorRatio)`,
      reps: reps1024,
      inProcessOneRunMs: round(oneRun),
      inProcessRunsOfMaxBatchMs: round(runsOfB),
      httpBinary4InFlightMs: round(predict4),
      httpBinary1InFlightMs: round(predict1),
      ratio: round(predict4 / inProcess1024Ms),
      ratio1InFlight: round(predict1 / inProcess1024Ms),
      floorRatio: round((inProcess1024Ms + calls * sdkEchoMs) / inProcess1024Ms),
    };
  }
  await session.release();
  return { record, inProcess1024Ms, http1024Ms };
}
