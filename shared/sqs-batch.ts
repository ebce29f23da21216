/**
 * Partial batch responses for SQS-triggered functions, as Lambda's event source mapping
 * expects them (`ReportBatchItemFailures`). For FIFO queues, once a record of a message group
 * fails, the group's later records are failed too, unprocessed, so that order is kept.
 */
import type { SqsRecord } from './events/resource-event.js';
import { errorFields, type Logger } from './log.js';

export interface BatchResponse {
  batchItemFailures: { itemIdentifier: string }[];
}

export async function processSqsBatch(
  records: readonly SqsRecord[],
  processRecord: (record: SqsRecord) => Promise<void>,
  logger: Logger,
): Promise<BatchResponse> {
  const failures: { itemIdentifier: string }[] = [];
  const failedGroups = new Set<string>();
  for (const record of records) {
    const group = record.attributes?.MessageGroupId;
    if (group !== undefined && failedGroups.has(group)) {
      failures.push({ itemIdentifier: record.messageId });
      continue;
    }
    try {
      await processRecord(record);
    } catch (err) {
      failures.push({ itemIdentifier: record.messageId });
      if (group !== undefined) failedGroups.add(group);
      logger.warn('record failed', {
        messageId: record.messageId,
        receiveCount: record.attributes?.ApproximateReceiveCount,
        ...errorFields(err),
        ...reasonFields(err),
      });
    }
  }
  return { batchItemFailures: failures };
}

/** Machine-readable reason fields some of our errors carry (`reason`, `path`): never values. */
function reasonFields(err: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (typeof err === 'object' && err !== null) {
    const { reason, path } = err as { reason?: unknown; path?: unknown };
    if (typeof reason === 'string') out.reason = reason;
    if (typeof path === 'string') out.path = path;
  }
  return out;
}
