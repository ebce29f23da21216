/**
 * The SageMaker-runtime client of every function, and the one the inference benchmark
 * measures, so that its figures hold in AWS:
 * - keep-alive agents (HTTPS in AWS, HTTP for the local endpoint server): a warm Lambda
 *   reuses its sockets (and TLS sessions), no connection setup per call;
 * - a connection timeout, so that an unreachable endpoint fails fast and the SDK retries;
 * - SigV4 signing and standard retries (3 attempts) as the SDK does them; the invoker adds
 *   no retries of its own and bounds each call, retries included, with its time limit.
 *
 * With a loopback `endpoint` (the local endpoint server) it signs with placeholder credentials,
 * which that server does not check; otherwise (AWS, a VPC endpoint URL included) the default
 * provider chain supplies the function's role.
 */
import { SageMakerRuntimeClient, type SageMakerRuntimeClientConfig } from '@aws-sdk/client-sagemaker-runtime';
import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';

export interface SageMakerClientOptions {
  region: string;
  /** The local endpoint server's URL; unset in AWS. */
  endpoint?: string;
  /** Sockets per endpoint host. Default 50 (the SDK's). */
  maxSockets?: number;
  /** Limit for opening a connection, in ms. Default 3000. */
  connectionTimeoutMs?: number;
  /** Attempts per call, the first included. Default 3 (the SDK's standard mode). */
  maxAttempts?: number;
  /** Overrides the credentials (default: placeholders for a loopback `endpoint`, else the provider chain). */
  credentials?: SageMakerRuntimeClientConfig['credentials'];
}

export const LOCAL_CREDENTIALS = { accessKeyId: 'local', secretAccessKey: 'local' } as const;

/** Whether a URL points at this machine (127.0.0.0/8, ::1, localhost). */
export function isLoopbackUrl(url: string): boolean {
  let host: string;
  try {
    host = new URL(url).hostname;
  } catch {
    return false;
  }
  return host === 'localhost' || host === '[::1]' || /^127(\.\d{1,3}){3}$/.test(host);
}

export function createSageMakerClient(opts: SageMakerClientOptions): SageMakerRuntimeClient {
  const agent = { keepAlive: true, maxSockets: opts.maxSockets ?? 50 };
  const local = opts.endpoint !== undefined && isLoopbackUrl(opts.endpoint);
  const credentials = opts.credentials ?? (local ? LOCAL_CREDENTIALS : undefined);
  return new SageMakerRuntimeClient({
    region: opts.region,
    ...(opts.endpoint ? { endpoint: opts.endpoint } : {}),
    ...(credentials ? { credentials } : {}),
    ...(opts.maxAttempts !== undefined ? { maxAttempts: opts.maxAttempts } : {}),
    requestHandler: {
      httpAgent: new HttpAgent(agent),
      httpsAgent: new HttpsAgent(agent),
      connectionTimeout: opts.connectionTimeoutMs ?? 3000,
    },
  });
}
