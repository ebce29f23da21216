/**
 * notify: FHIR Subscription notifications (R4 Backport bundles and legacy rest-hook posts)
 * arriving over API Gateway → authenticated per subscription → one SQS FIFO message per event,
 * with event-number dedupe and gap catch-up. All logic is in `shared/notify`.
 *
 * Routes: `POST /notify` (bundles name their subscription) and `POST /notify/{subscriptionId}`
 * (legacy rest-hook posts, which do not; also accepted for bundles, which must then agree).
 */
import middy from '@middy/core';
import type { APIGatewayProxyEventV2, APIGatewayProxyStructuredResultV2, Context } from 'aws-lambda';
import { loadConfig } from '../../shared/config.js';
import { errorResponse } from '../../shared/http.js';
import { createLogger, errorFields, type Logger } from '../../shared/log.js';
import { logInvocation } from '../../shared/middleware.js';
import { createNotifyPorts } from '../../shared/notify/ports.js';
import { handleNotifyRequest, type NotifyPorts } from '../../shared/notify/request.js';

/** Builds the handler around a port factory, called once per cold start. */
export function createNotifyHandler(logger: Logger, getPorts: () => Promise<NotifyPorts>) {
  let ports: Promise<NotifyPorts> | undefined;

  const notifyHandler = async (
    event: APIGatewayProxyEventV2,
    _context: Context,
  ): Promise<APIGatewayProxyStructuredResultV2> => {
    // A failed start (bad configuration) is retried on the next event rather than cached.
    ports ??= Promise.resolve()
      .then(getPorts)
      .catch((err: unknown) => {
        ports = undefined;
        throw err;
      });
    let p: NotifyPorts;
    try {
      p = await ports;
    } catch (err) {
      logger.error('notify start failed', errorFields(err));
      return errorResponse(err);
    }
    return handleNotifyRequest(p, event);
  };

  return middy<APIGatewayProxyEventV2, APIGatewayProxyStructuredResultV2>(notifyHandler).use(
    logInvocation(logger),
  );
}

const logger = createLogger({ base: { fn: 'notify' } });
export const handler = createNotifyHandler(logger, () => createNotifyPorts(loadConfig(), logger));
