/**
 * One notify request, from the HTTP event to the response: body limit (413), identify the
 * subscription (the `{subscriptionId}` path parameter, else the bundle's `subscription`
 * parameter), authenticate the sender against that subscription's credentials (401, the same
 * answer for every failure), parse (400 naming the failing path), process, answer 200 only
 * once every message is in the queue (503 otherwise, so the sender retries).
 */
import type { APIGatewayProxyStructuredResultV2 } from 'aws-lambda';
import {
  NotificationShapeError,
  NotifyHttpEventSchema,
  parseInbound,
  peekSubscription,
  type NotifyHttpEvent,
} from '../events/notification.js';
import {
  badRequest,
  errorResponse,
  HttpError,
  jsonResponse,
  parseJsonBody,
  payloadTooLarge,
  unauthorized,
} from '../http.js';
import { errorFields } from '../log.js';
import { SenderAuthError, verifySender, type SubscriptionAuthStore, type VerifyOptions } from './auth.js';
import { processNotification, type ProcessPorts } from './process.js';
import { QueueSendError } from './queue.js';
import { StateConflictError } from './state.js';

export interface NotifyOptions {
  /** Largest body accepted, in bytes. Default 1 MiB. */
  readonly maxBodyBytes?: number;
  /** Header carrying the HMAC signature. Default `x-signature`. */
  readonly signatureHeader?: string;
  /** Deepest JSON accepted. Default 64. */
  readonly maxJsonDepth?: number;
}

export interface NotifyPorts extends ProcessPorts {
  readonly registry: SubscriptionAuthStore;
  /** JWT verification settings: the notify URL as `aud`, the JWKS cache. */
  readonly verify: VerifyOptions;
  readonly options?: NotifyOptions;
}

export const DEFAULT_MAX_BODY_BYTES = 1024 * 1024;

function headerOf(event: NotifyHttpEvent, name: string): string | undefined {
  const wanted = name.toLowerCase();
  for (const [k, v] of Object.entries(event.headers ?? {})) if (k.toLowerCase() === wanted) return v;
  return undefined;
}

function rawBody(event: NotifyHttpEvent, limit: number): Buffer {
  const raw = event.body ?? '';
  const bytes = event.isBase64Encoded ? Buffer.from(raw, 'base64') : Buffer.from(raw, 'utf8');
  if (bytes.length > limit) throw payloadTooLarge(limit);
  return bytes;
}

const transient = (message: string): HttpError =>
  new HttpError(503, 'transient', message, { headers: { 'retry-after': '5' } });

function accepted(queued: number): APIGatewayProxyStructuredResultV2 {
  return jsonResponse(
    200,
    {
      resourceType: 'OperationOutcome',
      issue: [{ severity: 'information', code: 'informational', diagnostics: `accepted; ${queued} queued` }],
    },
    {},
    'application/fhir+json',
  );
}

/** Handles one request; never throws (every failure is an OperationOutcome response). */
export async function handleNotifyRequest(
  ports: NotifyPorts,
  event: unknown,
): Promise<APIGatewayProxyStructuredResultV2> {
  const started = Date.now();
  const opts = ports.options ?? {};
  let subscription: string | undefined;
  try {
    const parsedEvent = NotifyHttpEventSchema.safeParse(event);
    if (!parsedEvent.success) throw badRequest('not an HTTP request event');
    const http = parsedEvent.data;
    const body = rawBody(http, opts.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES);

    // Parse (without judging the shape yet) to find whose credentials to check.
    const text = body.toString('utf8');
    let json: unknown;
    let jsonError: HttpError | undefined;
    try {
      json = text.trim() === '' ? undefined : parseJsonBody(text, opts.maxJsonDepth ?? 64);
    } catch (err) {
      jsonError = err instanceof HttpError ? err : badRequest('body is not valid JSON');
    }
    const fromPath = http.pathParameters?.subscriptionId;
    const fromBody = json === undefined ? undefined : peekSubscription(json)?.id;
    const id = fromPath ?? fromBody;
    if (!id) throw new SenderAuthError('unknown-subscription');
    if (fromPath && fromBody && fromPath !== fromBody) throw new SenderAuthError('unknown-subscription');
    subscription = `Subscription/${id}`;

    const reg = await ports.registry.get(id);
    const signature = headerOf(http, opts.signatureHeader ?? 'x-signature');
    const authorization = headerOf(http, 'authorization');
    const method = await verifySender(
      reg,
      {
        rawBody: body,
        ...(signature === undefined ? {} : { signature }),
        ...(authorization === undefined ? {} : { authorization }),
      },
      ports.verify,
    );
    if (!reg) throw new SenderAuthError('unknown-subscription');
    if (jsonError) throw jsonError;

    const inbound = parseInbound(json);
    const result = await processNotification(ports, reg, inbound);
    ports.logger.info('notification processed', {
      subscription,
      kind: result.kind,
      auth: method,
      queued: result.queued,
      duplicates: result.duplicates,
      ignored: result.ignored,
      caughtUp: result.caughtUp,
      catchUp: result.catchUpMethod,
      openGap: result.openGap,
      ms: Date.now() - started,
    });
    return accepted(result.queued);
  } catch (err) {
    return errorAnswer(ports, err, subscription, started);
  }
}

function errorAnswer(
  ports: NotifyPorts,
  err: unknown,
  subscription: string | undefined,
  started: number,
): APIGatewayProxyStructuredResultV2 {
  const ms = Date.now() - started;
  const fields = { ...(subscription ? { subscription } : {}), ms };
  if (err instanceof SenderAuthError) {
    ports.logger.warn('sender refused', { ...fields, reason: err.code });
    return errorResponse(unauthorized());
  }
  if (err instanceof NotificationShapeError) {
    ports.logger.warn('notification refused', {
      ...fields,
      location: err.location.replace(/\[(\d+)\]/g, '.$1'),
    });
    return errorResponse(badRequest(err.message, err.location));
  }
  if (err instanceof QueueSendError || err instanceof StateConflictError) {
    ports.logger.error('notification not accepted', { ...fields, ...errorFields(err) });
    return errorResponse(transient('not accepted, retry later'));
  }
  if (err instanceof HttpError) {
    ports.logger.warn('notification refused', { ...fields, status: err.status });
    return errorResponse(err);
  }
  ports.logger.error('notification failed', { ...fields, ...errorFields(err) });
  // Anything else (state store down, registry unavailable) is worth a retry by the sender.
  return errorResponse(transient('temporarily unavailable, retry later'));
}
