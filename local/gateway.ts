/**
 * The local functions gateway (default 127.0.0.1:8083): turns HTTP requests into API Gateway
 * HTTP API (payload v2) events, invokes the real handlers, and writes their results back, as
 * API Gateway does. Routes are `METHOD /path/{param}` patterns; `{proxy+}` matches the rest.
 */
import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { APIGatewayProxyEventV2, APIGatewayProxyStructuredResultV2, Context } from 'aws-lambda';

export type HttpHandler = (
  event: APIGatewayProxyEventV2,
  context: Context,
) => Promise<APIGatewayProxyStructuredResultV2>;

export interface Route {
  /** e.g. `POST /notify`, `GET /cds-services`, `POST /cds-services/{id}`, `ANY /v1/{proxy+}`. */
  readonly route: string;
  readonly handler: HttpHandler;
  /** Function name for the context. */
  readonly functionName: string;
}

export interface GatewayOptions {
  port?: number;
  host?: string;
  routes: readonly Route[];
  /** Largest body read, in bytes (API Gateway's limit is 10 MB). Default 10 MiB. */
  maxBodyBytes?: number;
}

export interface RunningGateway {
  readonly url: string;
  close(): Promise<void>;
}

interface CompiledRoute extends Route {
  readonly method: string;
  readonly pattern: RegExp;
  readonly names: readonly string[];
}

function compile(route: Route): CompiledRoute {
  const [method = 'ANY', path = '/'] = route.route.split(' ');
  const names: string[] = [];
  const source = path
    .split('/')
    .map((part) => {
      const m = /^\{(\w+)(\+)?\}$/.exec(part);
      if (!m) return part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
      names.push(m[1] ?? '');
      return m[2] ? '(.+)' : '([^/]+)';
    })
    .join('/');
  return { ...route, method, pattern: new RegExp(`^${source}$`), names };
}

async function readBody(req: IncomingMessage, limit: number): Promise<Buffer | 'too-large'> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > limit) return 'too-large';
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

function toEvent(
  req: IncomingMessage,
  url: URL,
  route: CompiledRoute,
  params: Record<string, string>,
  body: Buffer,
): APIGatewayProxyEventV2 {
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(req.headers))
    if (v !== undefined) headers[k] = Array.isArray(v) ? v.join(',') : v;
  const query: Record<string, string> = {};
  for (const [k, v] of url.searchParams) query[k] = query[k] === undefined ? v : `${query[k]},${v}`;
  const textual = /json|text|x-www-form-urlencoded/.test(headers['content-type'] ?? 'application/json');
  const now = new Date();
  return {
    version: '2.0',
    routeKey: route.route,
    rawPath: url.pathname,
    rawQueryString: url.search.slice(1),
    headers,
    queryStringParameters: Object.keys(query).length ? query : undefined,
    pathParameters: Object.keys(params).length ? params : undefined,
    requestContext: {
      accountId: '000000000000',
      apiId: 'local',
      domainName: url.host,
      domainPrefix: 'local',
      http: {
        method: req.method ?? 'GET',
        path: url.pathname,
        protocol: 'HTTP/1.1',
        sourceIp: req.socket.remoteAddress ?? '127.0.0.1',
        userAgent: headers['user-agent'] ?? '',
      },
      requestId: randomUUID(),
      routeKey: route.route,
      stage: '$default',
      time: now.toUTCString(),
      timeEpoch: now.getTime(),
    },
    body: body.length ? (textual ? body.toString('utf8') : body.toString('base64')) : undefined,
    isBase64Encoded: body.length > 0 && !textual,
  };
}

function send(res: ServerResponse, status: number, body: string, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': 'application/json', ...headers });
  res.end(body);
}

export async function startFunctionsGateway(opts: GatewayOptions): Promise<RunningGateway> {
  const routes = opts.routes.map(compile);
  const maxBody = opts.maxBodyBytes ?? 10 * 1024 * 1024;
  let base = '';
  const server = createServer((req, res) => {
    void (async () => {
      const url = new URL(req.url ?? '/', base);
      const method = req.method ?? 'GET';
      let matched: { route: CompiledRoute; params: Record<string, string> } | undefined;
      for (const route of routes) {
        if (route.method !== 'ANY' && route.method !== method) continue;
        const m = route.pattern.exec(url.pathname);
        if (!m) continue;
        const params: Record<string, string> = {};
        route.names.forEach((n, i) => (params[n] = decodeURIComponent(m[i + 1] ?? '')));
        matched = { route, params };
        break;
      }
      if (!matched) {
        send(res, 404, JSON.stringify({ message: 'Not Found' }));
        return;
      }
      const body = await readBody(req, maxBody);
      if (body === 'too-large') {
        send(res, 413, JSON.stringify({ message: 'Request Entity Too Large' }));
        return;
      }
      const event = toEvent(req, url, matched.route, matched.params, body);
      const context = {
        awsRequestId: event.requestContext.requestId,
        functionName: matched.route.functionName,
        getRemainingTimeInMillis: () => 30_000,
      } as Context;
      try {
        const result = await matched.route.handler(event, context);
        const headers: Record<string, string> = {};
        for (const [k, v] of Object.entries(result.headers ?? {})) headers[k] = String(v);
        const payload =
          result.isBase64Encoded && result.body ? Buffer.from(result.body, 'base64') : (result.body ?? '');
        res.writeHead(result.statusCode ?? 200, headers);
        res.end(payload);
      } catch {
        // API Gateway answers a function error with a bare 500.
        send(res, 500, JSON.stringify({ message: 'Internal Server Error' }));
      }
    })();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 8083, opts.host ?? '127.0.0.1', resolve);
  });
  const { port } = server.address() as AddressInfo;
  base = `http://${opts.host ?? '127.0.0.1'}:${port}`;
  return {
    url: base,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => {
          resolve();
        });
      }),
  };
}
