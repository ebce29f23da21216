/**
 * What makes the embedded stack live: the Subscriptions that send the FHIR server's writes to
 * the notify function, and the event source mapping that feeds the queue to resource-event.
 */
import type { Subscription } from '@medplum/fhirtypes';
import { createResourceEventHandler } from '../functions/resource-event/handler.js';
import type { FhirGateway } from '../shared/fhir/gateway.js';
import type { ModelManifest } from '../shared/inference/manifest.js';
import type { Logger } from '../shared/log.js';
import { createPipelinePorts } from '../shared/ports.js';
import { WRITTEN_BY_TAG } from '../shared/reports/index.js';
import { TOPIC_BASE } from './fhir/subscriptions.js';
import { startPoller, type Poller } from './queue.js';
import { SUBSCRIPTION_IDS, type RunningStack } from './stack.js';

const BACKPORT = 'http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition';

/** What a notification carries: the focus reference only, or the focus resource too. */
export type PayloadContent = 'id-only' | 'full-resource';

function subscription(
  id: string,
  topic: string,
  filter: string,
  endpoint: string,
  content: PayloadContent,
): Subscription {
  return {
    resourceType: 'Subscription',
    id,
    status: 'requested',
    reason: 'fhir-analytics: run the models whose inputs changed',
    criteria: topic,
    _criteria: { extension: [{ url: `${BACKPORT}/backport-filter-criteria`, valueString: filter }] },
    channel: {
      type: 'rest-hook',
      endpoint,
      payload: 'application/fhir+json',
      _payload: { extension: [{ url: `${BACKPORT}/backport-payload-content`, valueCode: content }] },
      extension: [{ url: `${BACKPORT}/backport-heartbeat-period`, valueUnsignedInt: 60 }],
    },
  } as Subscription;
}

/**
 * The Subscriptions this system needs, for the given models: Observations with a trigger code
 * of some model, ImagingStudies of a trigger modality. Both exclude the system's own writes by
 * their tag, so it never triggers itself.
 */
export function subscriptionsFor(
  models: readonly ModelManifest[],
  notifyUrl: string,
  content: PayloadContent = 'id-only',
): Subscription[] {
  const codes = new Set<string>();
  const modalities = new Set<string>();
  for (const m of models) {
    for (const t of m.triggers) {
      if (t.resourceType === 'Observation') for (const c of t.codes) codes.add(`${c.system}|${c.code}`);
      else modalities.add(t.modality);
    }
  }
  const notOwn = `_tag:not=${WRITTEN_BY_TAG.system}|${WRITTEN_BY_TAG.code}`;
  const out: Subscription[] = [];
  if (codes.size) {
    out.push(
      subscription(
        SUBSCRIPTION_IDS.observations,
        `${TOPIC_BASE}/observation-write`,
        `Observation?code=${[...codes].join(',')}&${notOwn}`,
        notifyUrl,
        content,
      ),
    );
  }
  if (modalities.size) {
    out.push(
      subscription(
        SUBSCRIPTION_IDS.imaging,
        `${TOPIC_BASE}/imagingstudy-write`,
        `ImagingStudy?modality=${[...modalities].join(',')}&${notOwn}`,
        notifyUrl,
        content,
      ),
    );
  }
  return out;
}

/**
 * Writes the Subscriptions (PUT, so a restart reuses them) and waits for their handshakes.
 * `content`: `id-only` (the default, the demo's: the consumer reads the focus) or `full-resource`
 * (the focus travels in the notification and, when small, in the queue message).
 */
export async function registerSubscriptions(
  stack: RunningStack,
  fhir: FhirGateway,
  models: readonly ModelManifest[],
  content: PayloadContent = 'id-only',
): Promise<string[]> {
  const subs = subscriptionsFor(models, `${stack.gateway.url}/notify`, content);
  await fhir.transaction({
    resourceType: 'Bundle',
    type: 'transaction',
    entry: subs.map((s) => ({ resource: s, request: { method: 'PUT', url: `Subscription/${s.id ?? ''}` } })),
  });
  await stack.subscriptions?.flush();
  const statuses: string[] = [];
  for (const s of subs) {
    const current = await fhir.read<Subscription>('Subscription', s.id ?? '');
    statuses.push(`${s.id ?? ''}:${current?.status ?? 'missing'}`);
  }
  return statuses;
}

/** Lambda's SQS event source mapping, locally: the queue feeds the real resource-event handler. */
export function startEventConsumer(stack: RunningStack, logger: Logger, concurrency = 2): Poller {
  const handler = createResourceEventHandler(logger, () =>
    createPipelinePorts(stack.functionsConfig, logger),
  );
  return startPoller({
    client: stack.queues.client,
    queueUrl: stack.queues.queueUrl,
    queueArn: stack.queues.queueArn,
    handler: (event, context) => handler(event as never, context),
    concurrency,
  });
}
