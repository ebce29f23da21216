/**
 * Small middy middlewares shared by the functions. Each is a factory returning
 * `{ before, after, onError }` with named inner functions, so stack traces read well.
 */
import type { MiddlewareObj } from '@middy/core';
import type { z } from 'zod';
import { errorFields, type Logger } from './log.js';

export class EventShapeError extends Error {
  override name = 'EventShapeError';
  readonly path: string;
  constructor(path: string) {
    super(`event does not match the expected shape at ${path}`);
    this.path = path;
  }
}

/** Replaces `request.event` with the zod-parsed event; a mismatch names the failing path only. */
export function parseEvent(schema: z.ZodType): MiddlewareObj {
  return {
    name: 'parseEvent',
    before: function parseEventBefore(request) {
      const parsed = schema.safeParse(request.event);
      if (!parsed.success) {
        const first = parsed.error.issues[0];
        throw new EventShapeError(first?.path.join('.') || '(root)');
      }
      request.event = parsed.data;
    },
  };
}

/** Logs the invocation's start, end and duration with the request id, never the event. */
export function logInvocation(logger: Logger): MiddlewareObj {
  let started = 0;
  return {
    name: 'logInvocation',
    before: function logInvocationBefore(request) {
      started = Date.now();
      logger.debug('invocation start', { requestId: request.context.awsRequestId });
    },
    after: function logInvocationAfter(request) {
      logger.info('invocation end', { requestId: request.context.awsRequestId, ms: Date.now() - started });
    },
    onError: function logInvocationError(request) {
      logger.error('invocation failed', {
        requestId: request.context.awsRequestId,
        ms: Date.now() - started,
        ...errorFields(request.error),
      });
    },
  };
}
