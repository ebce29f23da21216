/**
 * What the notify handler refuses or cannot finish (SQS mocked): SQS failures answered 5xx,
 * bad signatures 401, malformed or oversize bodies 400/413, and no patient data in the logs.
 */
import { SendMessageBatchCommand } from '@aws-sdk/client-sqs';
import { afterEach, describe, expect, it } from 'vitest';
import {
  accept,
  call,
  events,
  harness,
  httpEvent,
  loadEvent,
  sent,
  sqsMock,
} from './notify-handler-harness.js';

afterEach(() => {
  sqsMock.reset();
});

describe('notify handler: refusals', () => {
  it('answers 5xx when SQS fails, records nothing, and queues on the retry', async () => {
    const h = harness();
    sqsMock.on(SendMessageBatchCommand).rejects(new Error('ServiceUnavailable'));
    const failed = await call(h, loadEvent('event-id-only'));
    expect(failed.statusCode).toBe(503);
    expect(failed.headers?.['retry-after']).toBe('5');
    expect(h.state.items.size).toBe(0);
    sqsMock.reset();
    accept();
    expect((await call(h, loadEvent('event-id-only'))).statusCode).toBe(200);
    expect(sent()).toHaveLength(1);
  });

  it('retries entries SQS failed on its side, and gives up with 503 on a sender fault', async () => {
    const h = harness();
    sqsMock
      .on(SendMessageBatchCommand)
      .resolvesOnce({ Successful: [], Failed: [{ Id: '0', SenderFault: false, Code: 'InternalError' }] })
      .resolvesOnce({ Successful: [{ Id: '0', MessageId: 'm', MD5OfMessageBody: '' }], Failed: [] });
    expect((await call(h, loadEvent('event-id-only'))).statusCode).toBe(200);
    expect(sqsMock.commandCalls(SendMessageBatchCommand)).toHaveLength(2);
    sqsMock.reset();
    sqsMock
      .on(SendMessageBatchCommand)
      .resolves({ Successful: [], Failed: [{ Id: '0', SenderFault: true, Code: 'InvalidParameterValue' }] });
    expect((await call(h, loadEvent('event-full-resource'))).statusCode).toBe(503);
  });

  it('answers 401 for a forged, missing or unknown-subscription signature, saying nothing else', async () => {
    accept();
    const h = harness();
    const forged = await call(h, loadEvent('forged-signature'));
    const body = events('event-notification', [{ eventNumber: 1, focus: 'Observation/a' }]);
    const missing = await call(h, httpEvent(body, { 'x-signature': '' }));
    const unknown = await call(h, httpEvent(body.replace('Subscription/obs-labs', 'Subscription/nobody')));
    const mismatch = await call(h, httpEvent(body, {}, 'legacy-obs'));
    for (const res of [forged, missing, unknown, mismatch]) {
      expect(res.statusCode).toBe(401);
      expect(res.json).toEqual({
        resourceType: 'OperationOutcome',
        issue: [{ severity: 'error', code: 'login', diagnostics: 'authentication required' }],
      });
    }
    expect(sqsMock.commandCalls(SendMessageBatchCommand)).toHaveLength(0);
    expect(h.state.items.size).toBe(0);
  });

  it('answers 400 naming the failing path, and 413 over the size limit', async () => {
    accept();
    const h = harness();
    const bad = await call(h, loadEvent('malformed'));
    expect(bad.statusCode).toBe(400);
    expect(bad.json).toMatchObject({
      issue: [{ code: 'invalid', expression: ['Bundle.entry[0].resource.parameter[5].part[0].valueString'] }],
    });
    const notJson = await call(h, httpEvent('{"resourceType":', {}, 'obs-labs'));
    expect(notJson.statusCode).toBe(400);
    const big = await call(
      h,
      httpEvent(JSON.stringify({ resourceType: 'Observation', id: 'x', note: 'x'.repeat(5000) })),
    );
    expect(big.statusCode).toBe(413);
    expect(sqsMock.commandCalls(SendMessageBatchCommand)).toHaveLength(0);
  });

  it('keeps patient data out of the logs', async () => {
    accept();
    const h = harness();
    const body = JSON.stringify({
      resourceType: 'Observation',
      id: 'o-1',
      status: 'final',
      subject: { reference: 'Patient/p-1', display: 'Jane Doe' },
      valueQuantity: { value: 187, unit: 'mg/dL' },
    });
    await call(h, httpEvent(body, {}, 'legacy-obs'));
    const log = h.lines.join('\n');
    expect(log).toContain('notification processed');
    expect(log).not.toMatch(/Jane|187|mg\/dL/);
  });
});
