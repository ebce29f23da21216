import { readFileSync } from 'node:fs';
import type { Context } from 'aws-lambda';
import type { Resource } from '@medplum/fhirtypes';
import { describe, expect, it } from 'vitest';
import { createResourceEventHandler } from '../../functions/resource-event/handler.js';
import { createLogger } from '../../shared/log.js';
import type { PipelinePorts } from '../../shared/pipeline.js';

const context = { awsRequestId: 'req-1', functionName: 'resource-event' } as Context;

function loadEvent(name: string): unknown {
  return JSON.parse(readFileSync(new URL(`../../events/resource-event/${name}`, import.meta.url), 'utf8'));
}

function capture() {
  const lines: string[] = [];
  return { lines, logger: createLogger({ level: 'debug', sink: (l) => lines.push(l) }) };
}

/** Ports whose FHIR server holds nothing (every focus is gone) unless `store` says otherwise. */
function ports(
  logger: ReturnType<typeof createLogger>,
  store: Record<string, Resource> = {},
  failReads = false,
): PipelinePorts {
  return {
    fhir: {
      read: (type, id) =>
        failReads
          ? Promise.reject(new Error('unavailable'))
          : Promise.resolve(store[`${type}/${id}`] as never),
      searchAll: () => Promise.resolve([]),
      transaction: () => Promise.reject(new Error('not expected')),
    },
    inference: { predict: () => Promise.reject(new Error('not expected')) },
    models: { all: () => [], matching: () => [] },
    extractor: () => {
      throw new Error('not expected');
    },
    buildReport: () => {
      throw new Error('not expected');
    },
    isOwnWrite: () => false,
    logger,
  };
}

describe('resource-event handler', () => {
  it('fails only the records that are not JSON or not events, and acknowledges a gone focus', async () => {
    const { lines, logger } = capture();
    const handler = createResourceEventHandler(logger, () => Promise.resolve(ports(logger)));
    const result = await handler(loadEvent('mixed-bad-records.json') as never, context);
    expect(result.batchItemFailures).toEqual([
      { itemIdentifier: 'bad-0001-not-json' },
      { itemIdentifier: 'bad-0002-not-an-event' },
    ]);
    const failed = lines
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((l) => l.msg === 'record failed');
    expect(failed.map((l) => l.reason)).toEqual(['not-json', 'not-a-resource-event']);
    const processed = lines
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .find((l) => l.msg === 'event processed');
    expect(processed).toMatchObject({ focus: 'Observation/does-not-exist', ignored: 'focus-gone' });
  });

  it('never logs the content of a bad record', async () => {
    const { lines, logger } = capture();
    const handler = createResourceEventHandler(logger, () => Promise.resolve(ports(logger)));
    await handler(loadEvent('mixed-bad-records.json') as never, context);
    const all = lines.join('\n');
    expect(all).not.toContain('Example');
    expect(all).not.toContain('this is not JSON');
  });

  it('fails a record for redelivery when the FHIR server is down, and the later records of its group too', async () => {
    const { logger } = capture();
    const handler = createResourceEventHandler(logger, () => Promise.resolve(ports(logger, {}, true)));
    const body = (focus: string): string =>
      JSON.stringify({ v: 1, focus, action: 'create', timestamp: '2026-11-29T00:00:00Z' });
    const record = (id: string, group: string, focus: string) => ({
      messageId: id,
      body: body(focus),
      attributes: { ApproximateReceiveCount: '1', MessageGroupId: group },
    });
    const result = await handler(
      {
        Records: [record('m1', 'Patient/a', 'Observation/1'), record('m2', 'Patient/a', 'Observation/2')],
      },
      context,
    );
    expect(result.batchItemFailures).toEqual([{ itemIdentifier: 'm1' }, { itemIdentifier: 'm2' }]);
  });

  it('rejects an event that is not an SQS event at all, naming the path', async () => {
    const { logger } = capture();
    const handler = createResourceEventHandler(logger, () => Promise.resolve(ports(logger)));
    await expect(handler({ Records: 'nope' } as never, context)).rejects.toThrow(/Records/);
  });
});
