/**
 * `node:http` front of the FHIR router: routing under the base path, body limits and JSON
 * parsing, request checks the router does not make, fault injection, and FHIR response
 * headers. Every failure is an OperationOutcome with its HTTP status.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { OperationOutcomeError, allOk, getStatus, normalizeOperationOutcome } from '@medplum/core';
import type { FhirRepository, FhirRequest, FhirRouter, HttpMethod } from '@medplum/fhir-router';
import type { Bundle, OperationOutcome, Resource } from '@medplum/fhirtypes';
import {
  decorateBatchResponse,
  decorateHistory,
  decorateSearchset,
  etagOf,
  lastModifiedOf,
  versionedUrl,
} from './decorate.js';
import { leanSteps, runLeanTransaction } from './transaction.js';
import { isKnownResourceType } from './validate.js';

export interface FaultOptions {
  /** Fraction (0..1) of write requests (POST/PUT/PATCH/DELETE, not `_search`) answered 503. */
  readonly writeFailureRate?: number;
  /** The next N write requests are answered 503, before the rate applies. */
  readonly failNextWrites?: number;
}

/** A raw handler tried before the FHIR router; returns true when it answered the request. */
export type HttpMiddleware = (
  req: IncomingMessage,
  res: ServerResponse,
  ctx: { readonly path: string; readonly url: URL; readonly baseUrl: string },
) => boolean | Promise<boolean>;

export interface HttpContext {
  readonly router: FhirRouter;
  readonly repo: FhirRepository;
  readonly basePath: string;
  readonly maxBodyBytes: number;
  readonly defaultCount: number;
  readonly maxCount: number;
  readonly baseUrl: () => string;
  readonly capability: () => Resource;
  readonly middlewares: readonly HttpMiddleware[];
  readonly fault: { rate: number; failNext: number; random: () => number };
}

const FHIR_JSON = 'application/fhir+json; charset=utf-8';
const METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE']);
const WRITE_METHODS = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly outcome: OperationOutcome,
    readonly headers: Record<string, string> = {},
  ) {
    super(outcome.issue[0]?.details?.text ?? String(status));
  }
}

type IssueCode = NonNullable<OperationOutcome['issue']>[number]['code'];

function outcome(severity: 'error' | 'information', code: IssueCode, text: string): OperationOutcome {
  return { resourceType: 'OperationOutcome', issue: [{ severity, code, details: { text } }] };
}

function send(
  res: ServerResponse,
  status: number,
  body: Resource | undefined,
  headers: Record<string, string> = {},
  head = false,
): void {
  const payload = body ? JSON.stringify(body) : '';
  res.writeHead(status, {
    ...(body ? { 'Content-Type': FHIR_JSON, 'Content-Length': String(Buffer.byteLength(payload)) } : {}),
    ...headers,
  });
  res.end(head ? undefined : payload);
}

/** Reads the body up to `limit` bytes; past it, drains what the client still sends and throws 413. */
function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const tooLarge = (): HttpError =>
      new HttpError(413, outcome('error', 'too-costly', `Request body exceeds ${limit} bytes`), {
        Connection: 'close',
      });
    const declared = Number(req.headers['content-length'] ?? NaN);
    const chunks: Buffer[] = [];
    let size = 0;
    let over = declared > limit;
    const hardCap = limit + 64 * 1024 * 1024;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > hardCap) {
        req.destroy();
        return;
      }
      if (size > limit) over = true;
      if (!over) chunks.push(chunk);
    });
    req.on('end', () => {
      if (over) reject(tooLarge());
      else resolve(Buffer.concat(chunks));
    });
    req.on('error', reject);
    req.on('close', () => {
      if (!req.complete)
        reject(new HttpError(400, outcome('error', 'incomplete', 'Request body was cut off')));
    });
  });
}

function parseJson(buffer: Buffer): unknown {
  if (buffer.length === 0) return undefined;
  try {
    return JSON.parse(buffer.toString('utf8')) as unknown;
  } catch (err) {
    throw new HttpError(400, outcome('error', 'structure', `Invalid JSON: ${(err as Error).message}`));
  }
}

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

/** Shape checks on a batch/transaction bundle so that the router never meets a malformed entry. */
function checkBundle(body: unknown): void {
  if (!isObject(body) || body.resourceType !== 'Bundle') {
    throw new HttpError(400, outcome('error', 'invalid', 'Expected a Bundle of type batch or transaction'));
  }
  if (body.type !== 'batch' && body.type !== 'transaction') {
    throw new HttpError(400, outcome('error', 'invalid', `Unsupported Bundle.type: ${String(body.type)}`));
  }
  if (body.entry !== undefined && !Array.isArray(body.entry)) {
    throw new HttpError(400, outcome('error', 'structure', 'Bundle.entry must be an array'));
  }
  (body.entry ?? []).forEach((entry: unknown, i: number) => {
    const where = `Bundle.entry[${i}]`;
    if (!isObject(entry) || !isObject(entry.request)) {
      throw new HttpError(400, outcome('error', 'structure', `${where}.request is required`));
    }
    if (typeof entry.request.method !== 'string' || typeof entry.request.url !== 'string') {
      throw new HttpError(400, outcome('error', 'structure', `${where}.request needs a method and a url`));
    }
    if (entry.resource !== undefined && !isObject(entry.resource)) {
      throw new HttpError(400, outcome('error', 'structure', `${where}.resource must be an object`));
    }
  });
}

function checkPaging(query: URLSearchParams): void {
  for (const name of ['_count', '_offset']) {
    const v = query.get(name);
    if (v !== null && !/^\d+$/.test(v)) {
      throw new HttpError(400, outcome('error', 'invalid', `${name} must be a non-negative integer`));
    }
  }
}

function isFaulted(ctx: HttpContext): boolean {
  if (ctx.fault.failNext > 0) {
    ctx.fault.failNext--;
    return true;
  }
  return ctx.fault.rate > 0 && ctx.fault.random() < ctx.fault.rate;
}

/** Runs router calls one at a time: a transaction's pre-search and its writes see one state. */
function serialiser(): <T>(fn: () => Promise<T>) => Promise<T> {
  let tail: Promise<unknown> = Promise.resolve();
  return <T>(fn: () => Promise<T>): Promise<T> => {
    const run = tail.then(fn, fn);
    tail = run.catch(() => undefined);
    return run;
  };
}

export function createRequestHandler(ctx: HttpContext): (req: IncomingMessage, res: ServerResponse) => void {
  const serial = serialiser();
  return (req, res) => {
    handle(ctx, serial, req, res).catch((err: unknown) => {
      if (res.headersSent) {
        res.destroy();
        return;
      }
      if (err instanceof HttpError) {
        send(res, err.status, err.outcome, err.headers);
      } else if (err instanceof OperationOutcomeError) {
        send(res, getStatus(err.outcome), err.outcome);
      } else {
        send(res, 500, outcome('error', 'exception', `Internal error: ${(err as Error).message}`));
      }
    });
  };
}

async function handle(
  ctx: HttpContext,
  serial: ReturnType<typeof serialiser>,
  req: IncomingMessage,
  res: ServerResponse,
): Promise<void> {
  const url = new URL(req.url ?? '/', 'http://localhost');
  const base = ctx.basePath;
  if (url.pathname !== base && !url.pathname.startsWith(base + '/')) {
    throw new HttpError(404, outcome('error', 'not-found', `Not found: the FHIR base is ${base}`));
  }
  const path = url.pathname.slice(base.length).replace(/^\/+/, '').replace(/\/+$/, '');
  const method = req.method ?? 'GET';
  if (!METHODS.has(method)) {
    throw new HttpError(405, outcome('error', 'not-supported', `Method ${method} not allowed`), {
      Allow: [...METHODS].join(', '),
    });
  }
  for (const middleware of ctx.middlewares) {
    if (await middleware(req, res, { path, url, baseUrl: ctx.baseUrl() })) return;
  }
  const head = method === 'HEAD';
  const routeMethod = (head ? 'GET' : method) as HttpMethod;

  if (path === 'metadata') {
    if (routeMethod !== 'GET')
      throw new HttpError(405, outcome('error', 'not-supported', 'metadata is read-only'));
    send(res, 200, ctx.capability(), {}, head);
    return;
  }

  const route = ctx.router.find(routeMethod, path);
  if (!route) {
    const allowed = [...METHODS].filter((m) => m !== 'HEAD' && ctx.router.find(m as HttpMethod, path));
    if (allowed.length > 0) {
      throw new HttpError(
        405,
        outcome('error', 'not-supported', `${method} not allowed on ${path || 'the base'}`),
        {
          Allow: allowed.join(', '),
        },
      );
    }
    throw new HttpError(404, outcome('error', 'not-found', `Unknown route: ${method} ${url.pathname}`));
  }
  const resourceType = route.params.resourceType;
  if (resourceType !== undefined && !isKnownResourceType(resourceType)) {
    throw new HttpError(404, outcome('error', 'not-found', `Unknown resource type: ${resourceType}`));
  }
  const interaction = route.data?.interaction;
  const isSearchPost = method === 'POST' && path.endsWith('/_search');

  if (WRITE_METHODS.has(method) && !isSearchPost && isFaulted(ctx)) {
    throw new HttpError(503, outcome('error', 'transient', 'Injected fault: service unavailable'), {
      'Retry-After': '1',
    });
  }

  let body: unknown;
  let query = new URLSearchParams(url.search);
  if (method === 'POST' || method === 'PUT' || method === 'PATCH') {
    const raw = await readBody(req, ctx.maxBodyBytes);
    const type = (req.headers['content-type'] ?? '').split(';')[0]?.trim().toLowerCase() ?? '';
    if (isSearchPost && type === 'application/x-www-form-urlencoded') {
      for (const [k, v] of new URLSearchParams(raw.toString('utf8'))) query.append(k, v);
      body = Object.fromEntries(query);
    } else {
      if (type && !type.includes('json')) {
        throw new HttpError(415, outcome('error', 'not-supported', `Unsupported Content-Type: ${type}`));
      }
      body = parseJson(raw);
    }
    if (interaction === 'batch') checkBundle(body);
    else if (method === 'PATCH' && !Array.isArray(body)) {
      throw new HttpError(400, outcome('error', 'structure', 'PATCH body must be a JSON Patch array'));
    } else if ((method === 'POST' && !isSearchPost) || method === 'PUT') {
      if (!isObject(body))
        throw new HttpError(400, outcome('error', 'structure', 'Body must be a FHIR resource'));
    }
  }

  const isSearch = interaction === 'search-type' || interaction === 'search-system';
  let count = 0;
  let offset = 0;
  if (isSearch) {
    checkPaging(query);
    count = Math.min(Number(query.get('_count') ?? ctx.defaultCount), ctx.maxCount);
    offset = Number(query.get('_offset') ?? 0);
    query = new URLSearchParams(query);
    query.set('_count', String(count));
    if (isSearchPost) body = Object.fromEntries(query);
  }
  const search = query.toString();
  const request: FhirRequest = {
    method: routeMethod,
    url: isSearchPost ? path : path + (search ? `?${search}` : ''),
    pathname: '',
    params: {},
    query: {},
    body,
    headers: req.headers,
    config: { transactions: true },
  };
  const lean = interaction === 'batch' ? leanSteps(body) : undefined;
  const [result, resource] = await serial(() =>
    lean
      ? runLeanTransaction(ctx.repo, body as Bundle, lean).then(
          (bundle): [OperationOutcome, Resource] => [allOk, bundle],
          (err: unknown): [OperationOutcome] => [normalizeOperationOutcome(err)],
        )
      : ctx.router.handleRequest(request, ctx.repo),
  );
  let status = getStatus(normalizeOperationOutcome(result));
  // Update as create (a PUT that made version 1) is a 201, as for POST.
  if (interaction === 'update' && status === 200 && resource?.meta?.versionId === '1') status = 201;
  if (status >= 400 || !resource) {
    send(res, status, result, {}, head);
    return;
  }
  respond(ctx, req, res, {
    status,
    resource,
    result,
    interaction,
    path,
    query,
    count,
    offset,
    head,
    requestBody: body,
  });
}

function respond(
  ctx: HttpContext,
  req: IncomingMessage,
  res: ServerResponse,
  r: {
    status: number;
    resource: Resource;
    result: OperationOutcome;
    interaction: string | undefined;
    path: string;
    query: URLSearchParams;
    count: number;
    offset: number;
    head: boolean;
    requestBody: unknown;
  },
): void {
  const baseUrl = ctx.baseUrl();
  const { resource, interaction } = r;
  const headers: Record<string, string> = {};
  if (resource.resourceType === 'Bundle') {
    const bundle: Bundle = resource;
    if (bundle.type === 'searchset') {
      decorateSearchset(bundle, baseUrl, r.path.replace(/\/_search$/, ''), r.query, r.count, r.offset);
    } else if (bundle.type === 'history') decorateHistory(bundle, baseUrl, r.path);
    else if (bundle.type === 'batch-response' || bundle.type === 'transaction-response') {
      decorateBatchResponse(bundle, baseUrl, r.requestBody);
    }
  }
  if (interaction !== 'search-type' && interaction !== 'batch' && interaction !== 'history-instance') {
    const etag = etagOf(resource);
    const modified = lastModifiedOf(resource);
    const location = versionedUrl(baseUrl, resource);
    if (etag) headers.ETag = etag;
    if (modified) headers['Last-Modified'] = modified;
    if (location && (r.status === 201 || interaction === 'update')) headers.Location = location;
    else if (location && etag) headers['Content-Location'] = location;
  }
  const prefer = String(req.headers.prefer ?? '');
  const minimal = /return=minimal/.test(prefer);
  const type = resource.resourceType === 'Bundle' ? resource.type : undefined;
  if (minimal && (type === 'batch-response' || type === 'transaction-response')) {
    // A batch or transaction answers with its response Bundle; the preference applies to the
    // entries: each keeps its response (status, location, etag) without the stored resource.
    for (const entry of (resource as Bundle).entry ?? []) delete entry.resource;
    send(res, r.status, resource, headers, r.head);
  } else if (minimal && r.interaction !== 'search-type') {
    send(res, r.status, undefined, headers, r.head);
  } else if (/return=OperationOutcome/i.test(prefer)) {
    send(res, r.status, r.result, headers, r.head);
  } else {
    send(res, r.status, resource, headers, r.head);
  }
}
