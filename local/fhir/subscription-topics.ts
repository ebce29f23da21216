/**
 * The embedded server's SubscriptionTopics and the reading of R4 backport Subscriptions.
 *
 * R4 has no SubscriptionTopic resource: the Subscriptions R5 Backport IG names a topic by its
 * canonical URL in `Subscription.criteria` and narrows it with `backport-filter-criteria`
 * extensions on `Subscription._criteria` (search-style strings, ANDed). The topics this server
 * can raise events for are a fixed table here, {@link TOPICS}; each lists the resource type,
 * the interactions that trigger it and the filter parameters a subscriber may use. Filters are
 * evaluated with Medplum's `matchesSearchRequest`, the predicate the repository's search uses,
 * so `Observation?code=http://loinc.org|2345-7` selects on a notification exactly what it
 * selects on a search.
 */
import type { Filter, SearchRequest } from '@medplum/core';
import { matchesSearchRequest, parseSearchRequest } from '@medplum/core';
import type { Extension, Resource, ResourceType, Subscription } from '@medplum/fhirtypes';

export const BACKPORT = 'http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition';
export const EXT = {
  filterCriteria: `${BACKPORT}/backport-filter-criteria`,
  payloadContent: `${BACKPORT}/backport-payload-content`,
  heartbeatPeriod: `${BACKPORT}/backport-heartbeat-period`,
  timeout: `${BACKPORT}/backport-timeout`,
  maxCount: `${BACKPORT}/backport-max-count`,
} as const;

export const TOPIC_BASE = 'http://fhir-analytics.example/SubscriptionTopic';

export type TriggerInteraction = 'create' | 'update' | 'delete';
export type PayloadContent = 'empty' | 'id-only' | 'full-resource';
export const PAYLOAD_CONTENTS: readonly PayloadContent[] = ['empty', 'id-only', 'full-resource'];

export interface TopicDefinition {
  readonly url: string;
  readonly title: string;
  readonly resourceType: ResourceType;
  readonly interactions: readonly TriggerInteraction[];
  /** Search parameters allowed in filter criteria (any modifier), besides {@link COMMON_FILTERS}. */
  readonly filters: readonly string[];
}

/** Filter parameters every topic accepts: `_tag:not=…` lets a subscriber skip its own writes. */
export const COMMON_FILTERS: readonly string[] = ['_tag', '_security', '_profile'];

export const TOPICS: readonly TopicDefinition[] = [
  {
    url: `${TOPIC_BASE}/observation-write`,
    title: 'Observation created or updated',
    resourceType: 'Observation',
    interactions: ['create', 'update'],
    filters: ['code', 'category', 'patient', 'subject', 'status'],
  },
  {
    url: `${TOPIC_BASE}/imagingstudy-write`,
    title: 'ImagingStudy created or updated',
    resourceType: 'ImagingStudy',
    interactions: ['create', 'update'],
    filters: ['modality', 'patient', 'subject', 'status'],
  },
];

export function findTopic(url: string | undefined): TopicDefinition | undefined {
  // A canonical may carry a version (`url|1.0`); the table has one version of each.
  const bare = url?.split('|')[0];
  return TOPICS.find((t) => t.url === bare);
}

/** What the server acts on, read from one Subscription. */
export interface SubscriptionConfig {
  readonly topic: TopicDefinition;
  readonly filters: readonly SearchRequest[];
  readonly endpoint: string;
  /** `channel.header` lines, split at the first colon. */
  readonly headers: readonly (readonly [string, string])[];
  readonly contentType: string;
  readonly content: PayloadContent;
  /** Seconds; undefined: no heartbeats. */
  readonly heartbeatPeriod?: number;
  /** Seconds per delivery attempt; undefined: the installation's default. */
  readonly timeout?: number;
  readonly maxCount?: number;
}

export class SubscriptionConfigError extends Error {
  override name = 'SubscriptionConfigError';
}

function extensionValue(extensions: readonly Extension[] | undefined, url: string): Extension | undefined {
  return extensions?.find((e) => e.url === url);
}

type Channel = Subscription['channel'] & {
  _payload?: { extension?: Extension[] };
};
type WithCriteriaExt = Subscription & { _criteria?: { extension?: Extension[] } };

function positive(ext: Extension | undefined, what: string): number | undefined {
  if (!ext) return undefined;
  const v = ext.valueUnsignedInt ?? ext.valuePositiveInt ?? ext.valueInteger ?? ext.valueDecimal;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < 0) {
    throw new SubscriptionConfigError(`${what} must be a non-negative number`);
  }
  return v === 0 ? undefined : v;
}

/** Parses one filter-criteria string (`Observation?code=…`, or `code=…` for the topic's type). */
function parseFilter(topic: TopicDefinition, criteria: string): SearchRequest {
  const text = criteria.trim();
  const query = text.includes('?') ? text : `${topic.resourceType}?${text}`;
  const type = query.slice(0, query.indexOf('?'));
  if (type !== topic.resourceType) {
    throw new SubscriptionConfigError(
      `Filter criteria '${text}' is on ${type}; topic ${topic.url} is on ${topic.resourceType}`,
    );
  }
  let request: SearchRequest;
  try {
    request = parseSearchRequest(query);
  } catch (err) {
    throw new SubscriptionConfigError(`Invalid filter criteria '${text}': ${(err as Error).message}`);
  }
  const allowed = new Set([...topic.filters, ...COMMON_FILTERS]);
  const filters: Filter[] = request.filters ?? [];
  for (const f of filters) {
    if (!allowed.has(f.code)) {
      throw new SubscriptionConfigError(
        `Filter parameter '${f.code}' is not defined for topic ${topic.url} (allowed: ${[...allowed].join(', ')})`,
      );
    }
  }
  const extra = [
    request.sortRules?.length ? '_sort' : undefined,
    request.count !== undefined ? '_count' : undefined,
    request.include?.length ? '_include' : undefined,
  ].filter(Boolean);
  if (extra.length > 0) {
    throw new SubscriptionConfigError(`Filter criteria may not use ${extra.join(', ')}`);
  }
  return { resourceType: topic.resourceType, filters };
}

/**
 * Reads a backport Subscription. Throws {@link SubscriptionConfigError} with a message fit for
 * `Subscription.error` when the server cannot honour it.
 */
export function readSubscription(subscription: Subscription): SubscriptionConfig {
  // Typed as required, but a stored Subscription only passed basic validation.
  const criteria = (subscription.criteria as string | undefined) ?? '';
  const topic = findTopic(criteria);
  if (!topic) {
    throw new SubscriptionConfigError(
      `Unknown topic '${criteria}' (supported: ${TOPICS.map((t) => t.url).join(', ')})`,
    );
  }
  const criteriaExt = (subscription as WithCriteriaExt)._criteria?.extension ?? [];
  const filters = criteriaExt
    .filter((e) => e.url === EXT.filterCriteria)
    .map((e) => {
      if (typeof e.valueString !== 'string' || !e.valueString.trim()) {
        throw new SubscriptionConfigError('backport-filter-criteria needs a valueString');
      }
      return parseFilter(topic, e.valueString);
    });

  const channel = subscription.channel as Channel | undefined;
  if (channel?.type !== 'rest-hook') {
    throw new SubscriptionConfigError(
      `Unsupported channel type '${channel?.type ?? ''}' (supported: rest-hook)`,
    );
  }
  let endpoint: URL;
  try {
    endpoint = new URL(channel.endpoint ?? '');
  } catch {
    throw new SubscriptionConfigError('channel.endpoint must be an absolute http(s) URL');
  }
  if (endpoint.protocol !== 'http:' && endpoint.protocol !== 'https:') {
    throw new SubscriptionConfigError('channel.endpoint must be an absolute http(s) URL');
  }
  const headers = (channel.header ?? []).map((line): [string, string] => {
    const at = line.indexOf(':');
    const name = at > 0 ? line.slice(0, at).trim() : '';
    if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(name)) {
      throw new SubscriptionConfigError('channel.header entries must be "Name: value"');
    }
    return [name, line.slice(at + 1).trim()];
  });

  // The content code sits on `channel._payload` in R4; on `channel` is accepted too.
  const contentExt =
    extensionValue(channel._payload?.extension, EXT.payloadContent) ??
    extensionValue(channel.extension, EXT.payloadContent);
  const code = contentExt?.valueCode;
  let content: PayloadContent;
  if (code === undefined) content = channel.payload ? 'id-only' : 'empty';
  else if ((PAYLOAD_CONTENTS as readonly string[]).includes(code)) content = code as PayloadContent;
  else throw new SubscriptionConfigError(`Unsupported payload content '${code}'`);

  const contentType = channel.payload ?? 'application/fhir+json';
  if (!/json/i.test(contentType)) {
    throw new SubscriptionConfigError(`Unsupported channel.payload '${contentType}' (JSON only)`);
  }
  const heartbeatPeriod = positive(
    extensionValue(channel.extension, EXT.heartbeatPeriod),
    'heartbeat period',
  );
  const timeout = positive(extensionValue(channel.extension, EXT.timeout), 'timeout');
  const maxCount = positive(extensionValue(channel.extension, EXT.maxCount), 'max count');
  return {
    topic,
    filters,
    endpoint: endpoint.toString(),
    headers,
    contentType,
    content,
    ...(heartbeatPeriod !== undefined ? { heartbeatPeriod } : {}),
    ...(timeout !== undefined ? { timeout } : {}),
    ...(maxCount !== undefined ? { maxCount } : {}),
  };
}

/** True when a committed write of `resource` is an event of the subscription's topic and filters. */
export function matchesTopic(
  config: SubscriptionConfig,
  interaction: TriggerInteraction,
  resource: Resource,
): boolean {
  const { topic } = config;
  if (resource.resourceType !== topic.resourceType || !topic.interactions.includes(interaction)) return false;
  return config.filters.every((f) => matchesSearchRequest(resource, f));
}

/** The parts of a Subscription whose change means a new handshake (not `status` or `error`). */
export function configKey(subscription: Subscription): string {
  const s = subscription as WithCriteriaExt;
  return JSON.stringify([s.criteria, s._criteria, s.channel]);
}
