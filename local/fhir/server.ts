/**
 * The embedded FHIR R4 server: `@medplum/fhir-router` over an {@link IndexedRepository}, behind
 * `node:http` on loopback, mounted at `/fhir` (default http://127.0.0.1:8080/fhir).
 *
 * Conditional references (`Practitioner?identifier=…`) in written resources, transactions
 * included, are resolved to the one matching resource; none matching is a 400 and several a 412,
 * each an OperationOutcome naming the reference. Transactions are atomic; those of creates and
 * updates by id take a lean path with the router's results (transaction.ts).
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { FhirRouter } from '@medplum/fhir-router';
import type { CapabilityStatement } from '@medplum/fhirtypes';
import { buildCapabilityStatement } from './capability.js';
import type { FaultOptions, HttpContext, HttpMiddleware } from './http.js';
import { createRequestHandler } from './http.js';
import type { ChangeListener, IndexedRepositoryOptions } from './indexed-repository.js';
import { IndexedRepository } from './indexed-repository.js';

export type { ChangeEvent, ChangeListener, IndexedRepositoryOptions } from './indexed-repository.js';
export type { FaultOptions, HttpMiddleware } from './http.js';
export { IndexedRepository } from './indexed-repository.js';

export interface FhirServerOptions {
  /** Default 8080; 0 picks a free port. */
  port?: number;
  /** Default 127.0.0.1; only loopback addresses are accepted. */
  host?: string;
  /** Default `/fhir`. */
  basePath?: string;
  /** Largest request body accepted, in bytes; larger ones get 413. Default 16 MiB. */
  maxBodyBytes?: number;
  /** Page size when a search has no `_count` (default 20), and the largest `_count` honoured (default 1000). */
  defaultPageSize?: number;
  maxPageSize?: number;
  /** Resource validation on write (default `basic`), see {@link IndexedRepositoryOptions}. */
  validation?: IndexedRepositoryOptions['validation'];
  /** A repository to serve (e.g. one preloaded in-process); a new one by default. */
  repo?: IndexedRepository;
}

export interface RunningFhirServer {
  /** e.g. `http://127.0.0.1:8080/fhir`, no trailing slash. */
  readonly baseUrl: string;
  readonly repo: IndexedRepository;
  readonly router: FhirRouter;
  /** Called after each committed create/update/delete, writes inside transactions included. */
  onChange(listener: ChangeListener): () => void;
  /** Makes write requests fail with 503 (an OperationOutcome, `Retry-After: 1`); `undefined` clears. */
  setFault(fault: FaultOptions | undefined): void;
  /** Adds a raw HTTP handler tried, in order, before the FHIR router (for `$export` and the like). */
  use(middleware: HttpMiddleware): void;
  close(): Promise<void>;
}

const LOOPBACK = /^(127(\.\d{1,3}){3}|::1|localhost)$/;

export async function startFhirServer(opts: FhirServerOptions = {}): Promise<RunningFhirServer> {
  const host = opts.host ?? '127.0.0.1';
  if (!LOOPBACK.test(host)) throw new Error(`The embedded FHIR server binds loopback only, not ${host}`);
  const basePath = '/' + (opts.basePath ?? '/fhir').replace(/^\/+|\/+$/g, '');
  const repo = opts.repo ?? new IndexedRepository({ validation: opts.validation ?? 'basic' });
  const router = new FhirRouter();
  const middlewares: HttpMiddleware[] = [];
  const startedAt = new Date().toISOString();
  let baseUrl = '';
  let capability: CapabilityStatement | undefined;

  const ctx: HttpContext = {
    router,
    repo,
    basePath,
    maxBodyBytes: opts.maxBodyBytes ?? 16 * 1024 * 1024,
    defaultCount: opts.defaultPageSize ?? 20,
    maxCount: opts.maxPageSize ?? 1000,
    baseUrl: () => baseUrl,
    capability: () => (capability ??= buildCapabilityStatement(baseUrl, startedAt)),
    middlewares,
    fault: { rate: 0, failNext: 0, random: Math.random },
  };
  const server = createServer(createRequestHandler(ctx));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 8080, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  baseUrl = `http://${host.includes(':') ? `[${host}]` : host}:${port}${basePath}`;

  return {
    baseUrl,
    repo,
    router,
    onChange: (listener) => repo.onChange(listener),
    setFault: (fault) => {
      ctx.fault.rate = fault?.writeFailureRate ?? 0;
      ctx.fault.failNext = fault?.failNextWrites ?? 0;
    },
    use: (middleware) => {
      middlewares.push(middleware);
    },
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((err) => {
          if (err) reject(err);
          else resolve();
        });
        server.closeAllConnections();
      }),
  };
}
