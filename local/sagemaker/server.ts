/**
 * The local SageMaker-runtime endpoint server: `POST /endpoints/{name}/invocations` with the
 * SageMaker error contract (PROTOCOLS.md) in front of a Triton-like KServe v2 model server
 * over onnxruntime-node. One endpoint per model (name = prefix + model id), and optionally
 * one multi-model endpoint whose `X-Amzn-SageMaker-Target-Model` names the model.
 *
 * For tests and benchmarks: per-endpoint fault injection (`setFault`) and counters
 * (`stats`: requests, the SDK's `amz-sdk-request` attempt numbers, session runs).
 */
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { CodecError, decodeRequest, encodeError, encodeResponse } from '../../shared/inference/codec.js';
import type { Tensor } from '../../shared/inference/tensor.js';
import { BufferPool } from '../../shared/inference/buffer-pool.js';
import { readBody } from './body.js';
import { errorFields, silentLogger, type Logger } from '../../shared/log.js';
import { DynamicBatcher, type DynamicBatchingOptions } from './batcher.js';
import { MAX_PAYLOAD_BYTES, SageMakerError, STATUS } from './errors.js';
import { ModelStore, TritonError, type LoadedModel } from './models.js';
import type { EndpointStats, Fault } from './stats.js';

export { MAX_PAYLOAD_BYTES, type SageMakerErrorCode } from './errors.js';
export type { EndpointStats, Fault } from './stats.js';

export interface EndpointServerOptions {
  modelsDir: string;
  /** Default 8081; 0 picks a free port. */
  port?: number;
  /** Default 127.0.0.1. */
  host?: string;
  /** The name of the multi-model endpoint (e.g. `fhir-analytics`); none by default. */
  multiModelEndpointName?: string;
  /** Endpoint name = prefix + model id. Default ''. */
  endpointPrefix?: string;
  logger?: Logger;
  /** Source of randomness for `errorRate` (tests make it deterministic). */
  random?: () => number;
  /** Dynamic batching per endpoint and model, one `session.run` at a time as one Triton model
   * instance: what arrives while a run is in flight merges into the next one. Default: as the
   * model's config.pbtxt says (`dynamic_batching {}`: no queue delay, so a lone request never
   * waits); these options override its delay and preferred batch size; false turns batching
   * (and the one-run-at-a-time queue) off. */
  dynamicBatching?: DynamicBatchingOptions | false;
  region?: string;
  accountId?: string;
}

export interface EndpointServer {
  /** `http://host:port`, the SDK client's `endpoint`. */
  readonly url: string;
  readonly port: number;
  close(): Promise<void>;
  /** Sets (or with undefined clears) the fault of one endpoint. */
  setFault(endpoint: string, fault: Fault | undefined): void;
  /** A snapshot of one endpoint's counters. */
  stats(endpoint: string): EndpointStats;
  /** Clears the counters of one endpoint, or of all. */
  resetStats(endpoint?: string): void;
  /** TCP connections accepted since the start (a keep-alive client opens one per socket it keeps). */
  connections(): number;
}

const ENDPOINT_NAME = /^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$/;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function startEndpointServer(opts: EndpointServerOptions): Promise<EndpointServer> {
  const log = opts.logger ?? silentLogger;
  const prefix = opts.endpointPrefix ?? '';
  const region = opts.region ?? 'us-east-1';
  const account = opts.accountId ?? '000000000000';
  const random = opts.random ?? Math.random;
  const faults = new Map<string, Fault>();
  const counters = new Map<string, EndpointStats>();
  const statsOf = (endpoint: string): EndpointStats => {
    let s = counters.get(endpoint);
    if (!s) {
      s = { requests: 0, attempts: [], sessionRuns: 0, mergedRequests: 0, requestsPerRun: [], errors: {} };
      counters.set(endpoint, s);
    }
    return s;
  };
  const store = new ModelStore(opts.modelsDir);
  const bodies = new BufferPool();
  const batchers = new Map<string, { model: LoadedModel; batcher: DynamicBatcher }>();
  const countRun = (endpoint: string, requests: number): void => {
    const s = statsOf(endpoint);
    s.sessionRuns++;
    s.requestsPerRun.push(requests);
    if (requests > 1) s.mergedRequests += requests;
  };
  /** The batcher of an endpoint's model (a reloaded model gets a new one). */
  const batcherFor = (endpoint: string, model: LoadedModel): DynamicBatcher => {
    const key = `${endpoint}\u0000${model.id}`;
    const known = batchers.get(key);
    if (known?.model === model) return known.batcher;
    const batcher = new DynamicBatcher(model, opts.dynamicBatching || {}, (requests) => {
      countRun(endpoint, requests);
    });
    batchers.set(key, { model, batcher });
    return batcher;
  };
  const runModel = (endpoint: string, model: LoadedModel, inputs: Tensor[], outputs: string[] | undefined) =>
    opts.dynamicBatching === false
      ? model.run(inputs, outputs, () => {
          countRun(endpoint, 1);
        })
      : batcherFor(endpoint, model).submit(inputs, outputs);

  const logGroup = (endpoint: string): string => `/aws/sagemaker/Endpoints/${endpoint}`;

  function modelError(endpoint: string, status: number, original: string): SageMakerError {
    const kind = status >= 500 ? 'server' : 'client';
    return new SageMakerError(
      'ModelError',
      `Received ${kind} error (${status}) from primary with message "${original}". See https://${region}.console.aws.amazon.com/cloudwatch/home?region=${region}#logEventViewer:group=${logGroup(endpoint)} in account ${account} for more information.`,
      {
        OriginalStatusCode: status,
        OriginalMessage: original,
        LogStreamArn: `arn:aws:logs:${region}:${account}:log-group:${logGroup(endpoint)}`,
      },
    );
  }

  /** The model id an invocation is for, or a ValidationError. */
  function resolveModelId(endpoint: string, target: string | undefined): string {
    if (opts.multiModelEndpointName !== undefined && endpoint === opts.multiModelEndpointName) {
      if (!target) {
        throw new SageMakerError(
          'ValidationError',
          `Endpoint ${endpoint} is a multi-model endpoint; TargetModel is required.`,
        );
      }
      return target.replace(/\.tar\.gz$/, '');
    }
    if (target) {
      throw new SageMakerError(
        'ValidationError',
        `Endpoint ${endpoint} is not a multi-model endpoint and does not support the TargetModel header.`,
      );
    }
    if (!endpoint.startsWith(prefix)) {
      throw new SageMakerError('ValidationError', `Endpoint ${endpoint} of account ${account} not found.`);
    }
    return endpoint.slice(prefix.length);
  }

  async function invoke(endpoint: string, req: IncomingMessage, res: ServerResponse): Promise<void> {
    const stats = statsOf(endpoint);
    stats.requests++;
    const attempt = /attempt=(\d+)/.exec(String(req.headers['amz-sdk-request'] ?? ''))?.[1];
    stats.attempts.push(attempt === undefined ? 0 : Number(attempt));

    const { body, tooLarge, size, pooled } = await readBody(req, bodies);
    try {
      await answer(endpoint, req, res, body, tooLarge, size);
    } finally {
      // The run that read the body's tensors (views of it) is over, and the answer is its own buffer.
      if (pooled) bodies.release(body);
    }
  }

  async function answer(
    endpoint: string,
    req: IncomingMessage,
    res: ServerResponse,
    body: Uint8Array,
    tooLarge: boolean,
    size: number,
  ): Promise<void> {
    if (tooLarge) {
      throw new SageMakerError(
        'ValidationError',
        `Request body of ${size} bytes exceeds the maximum of ${MAX_PAYLOAD_BYTES} bytes.`,
      );
    }
    if (!ENDPOINT_NAME.test(endpoint)) {
      throw new SageMakerError(
        'ValidationError',
        `1 validation error detected: Value '${endpoint}' at 'endpointName' failed to satisfy constraint: Member must satisfy regular expression pattern: ^[a-zA-Z0-9](-*[a-zA-Z0-9])*`,
      );
    }
    const targetHeader = req.headers['x-amzn-sagemaker-target-model'];
    const target = Array.isArray(targetHeader) ? targetHeader[0] : targetHeader;
    const id = resolveModelId(endpoint, target);
    const model = await store.get(id).catch((err: unknown) => {
      if (err instanceof TritonError)
        throw modelError(endpoint, err.status, JSON.stringify({ error: err.message }));
      throw err;
    });
    if (!model) {
      throw target
        ? new SageMakerError('ValidationError', `Target model ${target} of endpoint ${endpoint} not found.`)
        : new SageMakerError('ValidationError', `Endpoint ${endpoint} of account ${account} not found.`);
    }

    const fault = faults.get(endpoint);
    if (fault) {
      if (fault.latencyMs) await sleep(fault.latencyMs);
      let fail = false;
      if (fault.failNext !== undefined && fault.failNext > 0) {
        fault.failNext--;
        fail = true;
      } else if (fault.errorRate !== undefined && random() < fault.errorRate) {
        fail = true;
      }
      if (fail) {
        const code = fault.errorType ?? 'InternalFailure';
        if (code === 'ModelError')
          throw modelError(endpoint, 500, JSON.stringify({ error: 'injected fault' }));
        throw new SageMakerError(code, `Injected ${code} for endpoint ${endpoint}.`);
      }
    }

    let outputs;
    try {
      const request = decodeRequest(body, req.headers['content-type'] ?? 'application/json');
      const tensors = await runModel(
        endpoint,
        model,
        request.inputs,
        request.outputs?.map((o) => o.name),
      );
      const binaryNames = new Set(request.outputs?.filter((o) => o.binary).map((o) => o.name));
      outputs = encodeResponse(tensors, {
        modelName: model.id,
        modelVersion: model.version,
        ...(request.id !== undefined ? { id: request.id } : {}),
        binary: request.outputs ? (name) => binaryNames.has(name) : request.binaryOutput,
      });
    } catch (err) {
      if (err instanceof CodecError)
        throw modelError(endpoint, 400, new TextDecoder().decode(encodeError(err.message).body));
      if (err instanceof TritonError)
        throw modelError(endpoint, err.status, new TextDecoder().decode(encodeError(err.message).body));
      throw err;
    }
    if (outputs.body.length > MAX_PAYLOAD_BYTES) {
      throw modelError(
        endpoint,
        500,
        JSON.stringify({ error: `response of ${outputs.body.length} bytes exceeds the payload limit` }),
      );
    }
    res.writeHead(200, {
      'Content-Type': outputs.contentType,
      'Content-Length': outputs.body.length,
      'x-Amzn-Invoked-Production-Variant': 'AllTraffic',
    });
    res.end(outputs.body);
  }

  function sendError(res: ServerResponse, err: SageMakerError, endpoint: string | undefined): void {
    if (endpoint !== undefined) {
      const s = statsOf(endpoint);
      s.errors[err.code] = (s.errors[err.code] ?? 0) + 1;
    }
    // ThrottlingException carries a lower-case `message`; the modelled errors `Message`.
    const payload =
      err.code === 'ThrottlingException' ? { message: err.message } : { Message: err.message, ...err.extra };
    const body = JSON.stringify(payload);
    if (res.headersSent) {
      res.destroy();
      return;
    }
    res.writeHead(STATUS[err.code], {
      'Content-Type': 'application/json',
      'Content-Length': Buffer.byteLength(body),
      'x-amzn-ErrorType': err.code,
    });
    res.end(body);
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    res.setHeader('x-amzn-RequestId', randomUUID());
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    if (path === '/ping' && (req.method === 'GET' || req.method === 'HEAD')) {
      res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': 0 });
      res.end();
      return;
    }
    const m = /^\/endpoints\/([^/]+)\/(invocations|async-invocations)$/.exec(path);
    if (!m || req.method !== 'POST') {
      req.resume();
      res.writeHead(404, {
        'Content-Type': 'application/json',
        'x-amzn-ErrorType': 'UnknownOperationException',
      });
      res.end(JSON.stringify({ Message: `No operation at ${req.method ?? 'GET'} ${path}` }));
      return;
    }
    let endpoint: string;
    try {
      endpoint = decodeURIComponent(m[1] ?? '');
    } catch {
      endpoint = m[1] ?? '';
    }
    const started = Date.now();
    try {
      if (m[2] === 'async-invocations') {
        req.resume();
        throw new SageMakerError(
          'ValidationError',
          'Asynchronous invocations are not supported by the local endpoint server.',
        );
      }
      await invoke(endpoint, req, res);
      log.debug('endpoint invocation', { endpoint, status: 200, ms: Date.now() - started });
    } catch (err) {
      const e =
        err instanceof SageMakerError
          ? err
          : new SageMakerError(
              'InternalFailure',
              'An internal error occurred while handling the invocation.',
            );
      if (!(err instanceof SageMakerError))
        log.error('endpoint server failure', { endpoint, ...errorFields(err) });
      log.debug('endpoint invocation', { endpoint, code: e.code, ms: Date.now() - started });
      sendError(res, e, endpoint);
    }
  }

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      log.error('endpoint server failure', errorFields(err));
      if (!res.headersSent) res.writeHead(500, { 'x-amzn-ErrorType': 'InternalFailure' });
      res.end();
    });
  });
  // Idle keep-alive sockets stay open a minute (Node's default is 5 s), so that a client's pooled
  // socket is not closed under it between calls a few seconds apart.
  server.keepAliveTimeout = 60_000;
  let connections = 0;
  server.on('connection', () => {
    connections++;
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 8081, opts.host ?? '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port, address } = server.address() as AddressInfo;
  const host = address.includes(':') ? `[${address}]` : address;

  return {
    url: `http://${host}:${port}`,
    port,
    close: async () => {
      await new Promise<void>((resolve) => {
        server.close(() => {
          resolve();
        });
        server.closeAllConnections();
      });
      await store.close();
    },
    setFault: (endpoint, fault) => {
      if (fault) faults.set(endpoint, { ...fault });
      else faults.delete(endpoint);
    },
    stats: (endpoint) => {
      const s = statsOf(endpoint);
      return {
        requests: s.requests,
        attempts: [...s.attempts],
        sessionRuns: s.sessionRuns,
        mergedRequests: s.mergedRequests,
        requestsPerRun: [...s.requestsPerRun],
        errors: { ...s.errors },
      };
    },
    connections: () => connections,
    resetStats: (endpoint) => {
      if (endpoint === undefined) counters.clear();
      else counters.delete(endpoint);
    },
  };
}
