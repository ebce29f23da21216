/**
 * resource-event: SQS FIFO → the pipeline. One queue record is one resource event; each
 * record succeeds or fails alone (`batchItemFailures`), failed records are redelivered after
 * the visibility timeout and dead-lettered after the queue's maxReceiveCount.
 */
import middy from '@middy/core';
import type { Context } from 'aws-lambda';
import { parseResourceEvent, SqsEventSchema, type SqsEvent } from '../../shared/events/resource-event.js';
import { logInvocation, parseEvent } from '../../shared/middleware.js';
import { processResourceEvent, type PipelinePorts } from '../../shared/pipeline.js';
import { processSqsBatch, type BatchResponse } from '../../shared/sqs-batch.js';
import { createPipelinePorts } from '../../shared/ports.js';
import { loadConfig } from '../../shared/config.js';
import { createLogger, type Logger } from '../../shared/log.js';

/** Builds the handler around a port factory, called once per cold start. */
export function createResourceEventHandler(logger: Logger, getPorts: () => Promise<PipelinePorts>) {
  let ports: Promise<PipelinePorts> | undefined;

  const resourceEventHandler = async (event: SqsEvent, _context: Context): Promise<BatchResponse> => {
    const p = await (ports ??= getPorts());
    return processSqsBatch(
      event.Records,
      async (record) => {
        const started = Date.now();
        const message = parseResourceEvent(record.body);
        const result = await processResourceEvent(p, message);
        logger.info('event processed', {
          messageId: record.messageId,
          focus: result.focus,
          ignored: result.ignored,
          focusFrom: result.focusFrom,
          written: result.outcomes.filter((o) => o.outcome === 'written').length,
          unchanged: result.outcomes.filter((o) => o.outcome === 'unchanged').length,
          insufficient: result.outcomes.filter((o) => o.outcome === 'insufficient-data').length,
          ms: Date.now() - started,
        });
      },
      logger,
    );
  };

  return middy<SqsEvent, BatchResponse>(resourceEventHandler)
    .use(parseEvent(SqsEventSchema))
    .use(logInvocation(logger));
}

const logger = createLogger({ base: { fn: 'resource-event' } });
export const handler = createResourceEventHandler(logger, () => createPipelinePorts(loadConfig(), logger));
