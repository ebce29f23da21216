/** What tests and benchmarks set and read on the local endpoint server: faults and counters. */
import type { SageMakerErrorCode } from './errors.js';

export interface Fault {
  /** Added before every request of the endpoint is handled. */
  latencyMs?: number;
  /** Share of requests (0..1) answered with `errorType`. */
  errorRate?: number;
  /** The error to answer. Default `InternalFailure`. */
  errorType?: SageMakerErrorCode;
  /** The next N requests fail with `errorType` (counted down), before `errorRate` applies. */
  failNext?: number;
}

export interface EndpointStats {
  /** Requests that reached `/endpoints/{name}/invocations`. */
  requests: number;
  /** Per request, the attempt number from `amz-sdk-request: attempt=N; max=M` (0 without the header). */
  attempts: number[];
  /** `session.run` calls for this endpoint's models. */
  sessionRuns: number;
  /** Requests that shared their `session.run` with at least one other (dynamic batching). */
  mergedRequests: number;
  /** Per `session.run`, how many requests it served. */
  requestsPerRun: number[];
  /** Error answers by code. */
  errors: Record<string, number>;
}
