/**
 * The embedded stack: every piece a real server on loopback, on the default ports of
 * ARCHITECTURE.md unless told otherwise (port 0 picks a free one, for tests).
 */
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startFhirServer, type RunningFhirServer } from './fhir/server.js';
import { startEndpointServer } from './sagemaker/server.js';
import { startLocalQueues, type LocalQueues } from './queue.js';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const MODELS_DIR = path.join(ROOT, 'models');

export const DEFAULT_PORTS = {
  fhir: 8080,
  sagemaker: 8081,
  dicomweb: 8082,
  functions: 8083,
  queue: 8084,
} as const;

export interface StackOptions {
  /** Use this FHIR server instead of starting the embedded one. */
  fhirBaseUrl?: string;
  fhirPort?: number;
  sagemakerPort?: number;
  queuePort?: number;
  modelsDir?: string;
  /** Seconds before an unacknowledged queue message is delivered again. Default 5. */
  visibilityTimeoutSeconds?: number;
  /** Receives before a message is dead-lettered. Default 3. */
  maxReceiveCount?: number;
}

export type RunningEndpointServer = Awaited<ReturnType<typeof startEndpointServer>>;

export interface RunningStack {
  /** The FHIR server in use; `server` is set when it is the embedded one. */
  readonly fhir: { readonly baseUrl: string; readonly server?: RunningFhirServer };
  readonly sagemaker: RunningEndpointServer;
  readonly queues: LocalQueues;
  readonly modelsDir: string;
  close(): Promise<void>;
}

export async function startStack(opts: StackOptions = {}): Promise<RunningStack> {
  const modelsDir = opts.modelsDir ?? MODELS_DIR;
  const started: { close: () => Promise<void> }[] = [];
  try {
    let fhir: RunningStack['fhir'];
    if (opts.fhirBaseUrl) {
      fhir = { baseUrl: opts.fhirBaseUrl.replace(/\/+$/, '') };
    } else {
      const server = await startFhirServer({ port: opts.fhirPort ?? DEFAULT_PORTS.fhir, host: '127.0.0.1' });
      started.push(server);
      fhir = { baseUrl: server.baseUrl, server };
    }
    const sagemaker = await startEndpointServer({
      modelsDir,
      port: opts.sagemakerPort ?? DEFAULT_PORTS.sagemaker,
      host: '127.0.0.1',
    });
    started.push(sagemaker);
    const queues = await startLocalQueues({
      port: opts.queuePort ?? DEFAULT_PORTS.queue,
      visibilityTimeoutSeconds: opts.visibilityTimeoutSeconds ?? 5,
      maxReceiveCount: opts.maxReceiveCount ?? 3,
    });
    started.push({ close: () => queues.stop() });
    return {
      fhir,
      sagemaker,
      queues,
      modelsDir,
      close: async () => {
        for (const s of started.reverse()) await s.close();
      },
    };
  } catch (err) {
    for (const s of started.reverse()) await s.close().catch(() => undefined);
    throw err;
  }
}
