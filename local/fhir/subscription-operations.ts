/**
 * `$status` and `$events` for topic-based Subscriptions, as a raw HTTP middleware in front of the
 * FHIR router (the router has no operation hooks of ours):
 * - `GET|POST [base]/Subscription/{id}/$status`, and `[base]/Subscription/$status?id=a,b` (all
 *   when no id): a `searchset` Bundle of SubscriptionStatus Parameters, type `query-status`.
 * - `GET|POST [base]/Subscription/{id}/$events?eventsSinceNumber=&eventsUntilNumber=&content=`:
 *   a `history` Bundle shaped like a notification, type `query-event`, with the stored events in
 *   the range (both bounds inclusive), `content` defaulting to the subscription's own.
 * POST takes the same parameters as a `Parameters` body or a form-encoded body.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { randomUUID } from 'node:crypto';
import type { Bundle, OperationOutcome, Parameters, Resource } from '@medplum/fhirtypes';
import type { HttpMiddleware } from './http.js';
import type { NotificationType, StatusInput, StoredEvent } from './subscription-bundles.js';
import { notificationBundle, statusParameters } from './subscription-bundles.js';
import type { PayloadContent } from './subscription-topics.js';
import { PAYLOAD_CONTENTS } from './subscription-topics.js';

/** What the operations read of one subscription. */
export interface SubscriptionView {
  status(type: NotificationType): StatusInput;
  readonly content: PayloadContent;
  readonly events: readonly StoredEvent[];
}

export interface SubscriptionRegistry {
  get(id: string): SubscriptionView | undefined;
  ids(): string[];
  readonly closed: boolean;
  now(): Date;
}

const FHIR_JSON = 'application/fhir+json; charset=utf-8';
const INSTANCE = /^Subscription\/([A-Za-z0-9\-.]{1,64})\/\$(status|events)$/;
const MAX_BODY = 1024 * 1024;

class OperationError extends Error {
  constructor(
    readonly status: number,
    readonly code: 'invalid' | 'not-found' | 'not-supported' | 'too-costly',
    message: string,
  ) {
    super(message);
  }
}

function send(res: ServerResponse, status: number, body: Resource, head: boolean): void {
  const payload = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': FHIR_JSON, 'Content-Length': String(Buffer.byteLength(payload)) });
  res.end(head ? undefined : payload);
}

function outcome(code: string, text: string): OperationOutcome {
  return {
    resourceType: 'OperationOutcome',
    issue: [{ severity: 'error', code: code as 'invalid', details: { text } }],
  };
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY) throw new OperationError(413, 'too-costly', 'Request body too large');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** Query parameters plus, for POST, those of a Parameters or form body. */
async function operationParams(req: IncomingMessage, url: URL): Promise<URLSearchParams> {
  const params = new URLSearchParams(url.search);
  if (req.method !== 'POST') return params;
  const text = await readBody(req);
  if (!text.trim()) return params;
  const type = (req.headers['content-type'] ?? '').split(';')[0]?.trim().toLowerCase() ?? '';
  if (type === 'application/x-www-form-urlencoded') {
    for (const [k, v] of new URLSearchParams(text)) params.append(k, v);
    return params;
  }
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new OperationError(400, 'invalid', 'Body must be a Parameters resource');
  }
  const parameters = body as Partial<Parameters> | null;
  if (parameters?.resourceType !== 'Parameters') {
    throw new OperationError(400, 'invalid', 'Body must be a Parameters resource');
  }
  for (const p of parameters.parameter ?? []) {
    const value =
      p.valueString ?? p.valueCode ?? p.valueId ?? p.valueInteger ?? p.valueUnsignedInt ?? p.valuePositiveInt;
    if (p.name && value !== undefined) params.append(p.name, String(value));
  }
  return params;
}

function eventNumber(params: URLSearchParams, name: string): number | undefined {
  const v = params.get(name);
  if (v === null || v === '') return undefined;
  if (!/^\d{1,15}$/.test(v))
    throw new OperationError(400, 'invalid', `${name} must be a non-negative integer`);
  return Number(v);
}

function statusBundle(registry: SubscriptionRegistry, ids: readonly string[], baseUrl: string): Bundle {
  const entry = ids.map((id) => {
    const view = registry.get(id);
    if (!view) throw new OperationError(404, 'not-found', `Subscription/${id} is not known`);
    const params = statusParameters(view.status('query-status'), [], view.content);
    return {
      fullUrl: `urn:uuid:${params.id ?? randomUUID()}`,
      resource: params,
      search: { mode: 'match' as const },
    };
  });
  return {
    resourceType: 'Bundle',
    id: randomUUID(),
    type: 'searchset',
    timestamp: registry.now().toISOString(),
    total: entry.length,
    link: [{ relation: 'self', url: `${baseUrl}/Subscription/$status` }],
    entry,
  };
}

function eventsBundle(view: SubscriptionView, params: URLSearchParams, baseUrl: string, now: Date): Bundle {
  const since = eventNumber(params, 'eventsSinceNumber') ?? 0;
  const until = eventNumber(params, 'eventsUntilNumber') ?? Number.MAX_SAFE_INTEGER;
  const requested = params.get('content');
  if (requested !== null && !(PAYLOAD_CONTENTS as readonly string[]).includes(requested)) {
    throw new OperationError(400, 'invalid', `content must be one of ${PAYLOAD_CONTENTS.join(', ')}`);
  }
  const content = (requested as PayloadContent | null) ?? view.content;
  const events = view.events.filter((e) => e.number >= since && e.number <= until);
  return notificationBundle(baseUrl, view.status('query-event'), events, content, now.toISOString());
}

/** The middleware; it answers nothing once the registry is closed. */
export function subscriptionOperations(registry: SubscriptionRegistry): HttpMiddleware {
  return async (req, res, { path, url, baseUrl }) => {
    if (registry.closed) return false;
    const instance = INSTANCE.exec(path);
    if (!instance && path !== 'Subscription/$status') return false;
    const method = req.method ?? 'GET';
    const head = method === 'HEAD';
    try {
      if (method !== 'GET' && method !== 'POST' && !head) {
        throw new OperationError(
          405,
          'not-supported',
          `${method} not allowed on $${instance?.[2] ?? 'status'}`,
        );
      }
      const params = await operationParams(req, url);
      if (!instance) {
        const ids = params
          .getAll('id')
          .flatMap((v) => v.split(','))
          .map((v) => v.trim().replace(/^Subscription\//, ''))
          .filter(Boolean);
        send(res, 200, statusBundle(registry, ids.length ? ids : registry.ids(), baseUrl), head);
        return true;
      }
      const [, id = '', operation] = instance;
      const view = registry.get(id);
      if (!view) throw new OperationError(404, 'not-found', `Subscription/${id} is not known`);
      const body =
        operation === 'status'
          ? statusBundle(registry, [id], baseUrl)
          : eventsBundle(view, params, baseUrl, registry.now());
      send(res, 200, body, head);
    } catch (err) {
      if (res.headersSent) res.destroy();
      else if (err instanceof OperationError) send(res, err.status, outcome(err.code, err.message), head);
      else send(res, 500, outcome('exception', `Internal error: ${(err as Error).message}`), head);
    }
    return true;
  };
}
