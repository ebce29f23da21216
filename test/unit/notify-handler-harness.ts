/**
 * What the notify handler's tests (notify-handler*.test.ts) share: the handler on in-memory
 * state and a catch-up source the test controls, behind a mocked SQSClient (aws-sdk-client-mock;
 * each test file resets it in `afterEach`), the sample events, and readers of what was queued.
 */
import { readFileSync } from 'node:fs';
import { SendMessageBatchCommand, SQSClient } from '@aws-sdk/client-sqs';
import type { APIGatewayProxyStructuredResultV2, Context } from 'aws-lambda';
import { mockClient } from 'aws-sdk-client-mock';
import { createNotifyHandler } from '../../functions/notify/handler.js';
import { createLogger, type Logger } from '../../shared/log.js';
import { createInMemoryAuthStore, signBody } from '../../shared/notify/auth.js';
import { buildNotificationBundle, type BundleEventInput } from '../../shared/notify/bundle.js';
import type { CatchUpSource } from '../../shared/notify/catch-up.js';
import { createSqsEventQueue } from '../../shared/notify/queue.js';
import type { NotifyPorts } from '../../shared/notify/request.js';
import { createInMemoryStateStore } from '../../shared/notify/state.js';

const SECRET = 'notify-demo-secret-0123456789abcdef';
export const QUEUE_URL = 'https://sqs.us-east-1.amazonaws.com/000000000000/resource-events.fifo';
const SUB = 'http://127.0.0.1:8080/fhir/Subscription/obs-labs';
const context = { awsRequestId: 'req-1', functionName: 'notify' } as Context;
export const sqsMock = mockClient(SQSClient);

export function loadEvent(name: string): Record<string, unknown> {
  return JSON.parse(
    readFileSync(new URL(`../../events/notify/${name}.json`, import.meta.url), 'utf8'),
  ) as Record<string, unknown>;
}

export function httpEvent(
  body: string | undefined,
  headers: Record<string, string> = {},
  subscriptionId?: string,
) {
  return {
    version: '2.0',
    headers: {
      'content-type': 'application/fhir+json',
      'x-signature': signBody(SECRET, body ?? ''),
      ...headers,
    },
    ...(subscriptionId ? { pathParameters: { subscriptionId } } : {}),
    ...(body === undefined ? {} : { body }),
    isBase64Encoded: false,
  };
}

export function events(type: 'event-notification' | 'heartbeat', list: BundleEventInput[], since?: number) {
  return JSON.stringify(
    buildNotificationBundle({
      subscription: SUB,
      type,
      events: list,
      eventsSinceSubscriptionStart: since ?? Math.max(0, ...list.map((e) => e.eventNumber)),
    }),
  );
}

export interface Harness {
  handler: ReturnType<typeof createNotifyHandler>;
  state: ReturnType<typeof createInMemoryStateStore>;
  lines: string[];
  catchUpCalls: string[];
}

export function harness(catchUp: Partial<CatchUpSource> = {}): Harness {
  const lines: string[] = [];
  const logger: Logger = createLogger({ level: 'debug', sink: (l) => lines.push(l) });
  const state = createInMemoryStateStore();
  const catchUpCalls: string[] = [];
  const ports: NotifyPorts = {
    queue: createSqsEventQueue({
      client: new SQSClient({ region: 'us-east-1' }),
      queueUrl: QUEUE_URL,
      sleep: () => Promise.resolve(),
    }),
    state,
    registry: createInMemoryAuthStore([
      {
        id: 'obs-labs',
        hmac: { secret: SECRET },
        resourceTypes: { Observation: { category: 'laboratory' } },
      },
      { id: 'legacy-obs', hmac: { secret: SECRET } },
    ]),
    catchUp: {
      events: (id, since, until) => {
        catchUpCalls.push(`$events ${id} ${since}..${until}`);
        return catchUp.events ? catchUp.events(id, since, until) : Promise.reject(new Error('no $events'));
      },
      search: (type, params, max) => {
        catchUpCalls.push(`search ${type} ${params.map(([k, v]) => `${k}=${v}`).join('&')}`);
        return catchUp.search ? catchUp.search(type, params, max) : Promise.resolve([]);
      },
    },
    verify: {},
    options: { maxBodyBytes: 4096 },
    logger,
  };
  return { handler: createNotifyHandler(logger, () => Promise.resolve(ports)), state, lines, catchUpCalls };
}

export function accept() {
  sqsMock.on(SendMessageBatchCommand).callsFake((input: { Entries: { Id: string }[] }) => ({
    Successful: input.Entries.map((e) => ({ Id: e.Id, MessageId: `m-${e.Id}`, MD5OfMessageBody: '' })),
    Failed: [],
  }));
}

export type Entry = { MessageBody: string; MessageGroupId: string; MessageDeduplicationId: string };
export function sent(): Entry[] {
  return sqsMock
    .commandCalls(SendMessageBatchCommand)
    .flatMap((c) => (c.args[0].input.Entries ?? []) as Entry[]);
}
export const bodies = () => sent().map((e) => JSON.parse(e.MessageBody) as Record<string, unknown>);

export async function call(
  h: Harness,
  event: unknown,
): Promise<APIGatewayProxyStructuredResultV2 & { json: unknown }> {
  const res = await h.handler(event as never, context);
  return { ...res, json: res.body ? JSON.parse(res.body) : undefined };
}
