import { SendMessageBatchCommand, SQSClient } from '@aws-sdk/client-sqs';
import type { Observation } from '@medplum/fhirtypes';
import { mockClient } from 'aws-sdk-client-mock';
import { afterEach, describe, expect, it } from 'vitest';
import { MAX_CARRIED_RESOURCE_BYTES, parseResourceEvent } from '../../shared/events/resource-event.js';
import { buildMessage, createSqsEventQueue, type MessageInput } from '../../shared/notify/queue.js';

const QUEUE_URL = 'https://sqs.us-east-1.amazonaws.com/000000000000/resource-events.fifo';
const sqsMock = mockClient(SQSClient);

afterEach(() => {
  sqsMock.reset();
});

/** An Observation whose JSON is about `bytes` long (a long note: the size, not the content, matters). */
function observation(id: string, bytes: number, versionId = '1'): Observation {
  const base: Observation = {
    resourceType: 'Observation',
    id,
    meta: { versionId },
    status: 'final',
    code: { coding: [{ system: 'http://loinc.org', code: '2345-7' }] },
    subject: { reference: 'Patient/p-1' },
  };
  const pad = Math.max(0, bytes - Buffer.byteLength(JSON.stringify(base)) - 20);
  return { ...base, note: [{ text: 'x'.repeat(pad) }] };
}

const input = (resource: Observation, overrides: Partial<MessageInput> = {}): MessageInput => ({
  subscription: 'Subscription/s',
  focus: `Observation/${resource.id ?? ''}`,
  versionId: '1',
  patient: 'Patient/p-1',
  eventNumber: 7,
  timestamp: '2026-03-01T10:00:00Z',
  resource: resource as unknown as MessageInput['resource'],
  ...overrides,
});

describe('queue messages carrying the focus', () => {
  it('carries a focus resource up to the size limit, and it reads back through the message schema', () => {
    const small = observation('o-1', MAX_CARRIED_RESOURCE_BYTES - 100);
    const { body } = buildMessage(input(small));
    expect(body.resource).toEqual(small);
    expect(parseResourceEvent(JSON.stringify(body)).resource).toEqual(small);
  });

  it('carries only the reference for a larger resource, another version or another resource', () => {
    const big = observation('o-2', MAX_CARRIED_RESOURCE_BYTES + 100);
    expect(buildMessage(input(big)).body).not.toHaveProperty('resource');
    const other = observation('o-3', 500, '2');
    expect(buildMessage(input(other)).body).not.toHaveProperty('resource');
    const elsewhere = buildMessage(input(observation('o-4', 500), { focus: 'Observation/o-5' }));
    expect(elsewhere.body).not.toHaveProperty('resource');
  });

  it('keeps the deduplication id of the event whether or not the resource travels', () => {
    const o = observation('o-6', 500);
    const { resource: _dropped, ...withoutResource } = input(o);
    expect(buildMessage(input(o)).deduplicationId).toBe(buildMessage(withoutResource).deduplicationId);
  });
});

describe('SQS event queue batches', () => {
  it('cuts batches at 10 entries and at 256 KiB of bodies, keeping the order', async () => {
    sqsMock.on(SendMessageBatchCommand).callsFake((req: { Entries: { Id: string }[] }) => ({
      Successful: req.Entries.map((e) => ({ Id: e.Id, MessageId: `m-${e.Id}`, MD5OfMessageBody: '' })),
      Failed: [],
    }));
    const queue = createSqsEventQueue({
      client: new SQSClient({ region: 'us-east-1' }),
      queueUrl: QUEUE_URL,
    });
    const large = Array.from({ length: 9 }, (_, i) =>
      buildMessage(input(observation(`big-${i}`, MAX_CARRIED_RESOURCE_BYTES - 1000), { eventNumber: i + 1 })),
    );
    const small = Array.from({ length: 12 }, (_, i) =>
      buildMessage(input(observation(`small-${i}`, 300), { eventNumber: i + 10 })),
    );
    await queue.send([...large, ...small]);
    const batches = sqsMock.commandCalls(SendMessageBatchCommand).map((c) => c.args[0].input.Entries ?? []);
    for (const b of batches) {
      expect(b.length).toBeLessThanOrEqual(10);
      expect(b.reduce((n, e) => n + Buffer.byteLength(e.MessageBody ?? ''), 0)).toBeLessThanOrEqual(
        256 * 1024,
      );
    }
    const focuses = batches.flat().map((e) => (JSON.parse(e.MessageBody ?? '{}') as { focus: string }).focus);
    expect(focuses).toEqual([...large, ...small].map((m) => m.body.focus));
    // Four 63 KiB bodies fit in 256 KiB, a fifth does not; then ten entries at most.
    expect(batches.map((b) => b.length)).toEqual([4, 4, 10, 3]);
  });
});
