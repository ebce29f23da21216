/**
 * partner-api: API Gateway HTTP API (payload v2) → CDS Hooks 2.0 services and REST
 * `$predict` for partner apps. All logic is in `shared/partner`; this file builds it once
 * per cold start and hands each event to it.
 */
import middy from '@middy/core';
import type { APIGatewayProxyEventV2, APIGatewayProxyStructuredResultV2, Context } from 'aws-lambda';
import { loadConfig } from '../../shared/config.js';
import { createLogger, type Logger } from '../../shared/log.js';
import { logInvocation } from '../../shared/middleware.js';
import { createPartnerApiFromConfig, type PartnerApi } from '../../shared/partner/index.js';

/** Builds the handler around an API factory, called once per cold start. */
export function createPartnerApiHandler(logger: Logger, getApi: () => Promise<PartnerApi>) {
  let api: Promise<PartnerApi> | undefined;

  const partnerApiHandler = async (
    event: APIGatewayProxyEventV2,
    _context: Context,
  ): Promise<APIGatewayProxyStructuredResultV2> => {
    // A failed start (bad configuration) is retried on the next event rather than cached.
    api ??= getApi().catch((err: unknown) => {
      api = undefined;
      throw err;
    });
    return (await api).handle(event);
  };

  return middy<APIGatewayProxyEventV2, APIGatewayProxyStructuredResultV2>(partnerApiHandler).use(
    logInvocation(logger),
  );
}

const logger = createLogger({ base: { fn: 'partner-api' } });
export const handler = createPartnerApiHandler(logger, () =>
  createPartnerApiFromConfig(loadConfig(), logger),
);
