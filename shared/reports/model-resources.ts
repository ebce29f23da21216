/**
 * The model version's own entries of a report transaction (its Device and its model card): the
 * same in every report of that version. Once the server has them, a caller that holds their
 * ids can send a report without them: the references point at the stored resources, which is
 * what the server would have stored anyway, and the two conditional creates (and the card's
 * bytes) leave the hot path.
 *
 * The cache is per process (per Lambda container): it is right in AWS too, as long as nobody
 * deletes a model's Device or card, which only a new model version replaces.
 */
import type { Bundle, BundleEntry, Device, DocumentReference } from '@medplum/fhirtypes';
import { FhirGatewayError } from '../fhir/errors.js';
import type { FhirGateway } from '../fhir/gateway.js';
import { MODEL_DEVICE_SYSTEM } from './labels.js';
import { MODEL_CARD_SYSTEM } from './model-card.js';

const identifiedBy = (entry: BundleEntry, system: string): boolean =>
  ((entry.resource as { identifier?: { system?: string }[] } | undefined)?.identifier ?? []).some(
    (i) => i.system === system,
  );

/** The model Device or the model card of a report transaction. */
export function isModelEntry(entry: BundleEntry, systems: { device?: string; card?: string } = {}): boolean {
  const type = entry.resource?.resourceType;
  if (type === 'Device') return identifiedBy(entry, systems.device ?? MODEL_DEVICE_SYSTEM);
  if (type === 'DocumentReference') return identifiedBy(entry, systems.card ?? MODEL_CARD_SYSTEM);
  return false;
}

/** `Type/id` of what the server stored for a request entry: from `location`, else the returned resource. */
export function storedReference(request: BundleEntry, response: BundleEntry | undefined): string | undefined {
  const type = request.resource?.resourceType;
  if (!type) return undefined;
  const match = new RegExp(`(?:^|/)${type}/([A-Za-z0-9\\-.]{1,64})(?:/|$)`).exec(
    response?.response?.location ?? '',
  );
  const id = match?.[1] ?? response?.resource?.id;
  return id ? `${type}/${id}` : undefined;
}

/**
 * Replaces, in place, every string of `value` that is a key of `stored` (a `urn:uuid:` fullUrl)
 * by the stored resource's reference; returns `value`.
 */
export function replaceReferences<T>(value: T, stored: ReadonlyMap<string, string>): T {
  const walk = (v: unknown): unknown => {
    if (typeof v === 'string') return stored.get(v) ?? v;
    if (Array.isArray(v)) {
      for (let i = 0; i < v.length; i++) v[i] = walk(v[i]);
    } else if (typeof v === 'object' && v !== null) {
      const o = v as Record<string, unknown>;
      for (const k of Object.keys(o)) o[k] = walk(o[k]);
    }
    return v;
  };
  return walk(value) as T;
}

/** A copy of the entries with every `urn:uuid:` of `stored` replaced by the stored resource's reference. */
export function pointAtStored(
  entries: readonly BundleEntry[],
  stored: ReadonlyMap<string, string>,
): BundleEntry[] {
  return replaceReferences(structuredClone(entries) as BundleEntry[], stored);
}

export interface ModelResourceCache {
  /**
   * Sends a report transaction: whole while its model entries are not known to be stored (they
   * are created by their conditional creates in the same transaction, and remembered from the
   * response), without them afterwards. Returns the bundle sent, with the response.
   */
  write(
    bundle: Bundle,
    send: (bundle: Bundle) => Promise<Bundle>,
  ): Promise<{ request: Bundle; response: Bundle }>;
  /** The model entries' `fullUrl` → stored reference known so far (for tests and logs). */
  readonly known: ReadonlyMap<string, string>;
}

/**
 * The stored resource a model entry stands for, when the server holds more than one with its
 * identifier (`Type/id`), or undefined when there is none.
 */
export type FindStoredModelEntry = (entry: BundleEntry) => Promise<string | undefined>;

/**
 * Looks a model entry up by its identifier and picks the match with the smallest id, so that
 * every container settles on the same one.
 */
export function findStoredModelEntry(fhir: Pick<FhirGateway, 'searchAll'>): FindStoredModelEntry {
  return async (entry) => {
    const resource = entry.resource;
    if (resource?.resourceType !== 'Device' && resource?.resourceType !== 'DocumentReference') {
      return undefined;
    }
    const id = resource.identifier?.[0];
    if (!id?.system || !id.value) return undefined;
    const found = await fhir.searchAll<Device | DocumentReference>(
      resource.resourceType,
      { identifier: `${id.system}|${id.value}`, _count: '20' },
      { maxResources: 20 },
    );
    const [first] = found
      .map((r) => r.id)
      .filter((x): x is string => Boolean(x))
      .sort();
    return first ? `${resource.resourceType}/${first}` : undefined;
  };
}

export function createModelResourceCache(
  opts: { findStored?: FindStoredModelEntry } = {},
): ModelResourceCache {
  const known = new Map<string, string>();
  const withoutModel = (bundle: Bundle, model: readonly BundleEntry[]): Bundle => ({
    ...bundle,
    entry: pointAtStored(
      (bundle.entry ?? []).filter((e) => !model.includes(e)),
      known,
    ),
  });
  return {
    known,
    async write(bundle, send) {
      const entries = bundle.entry ?? [];
      const model = entries.filter((e) => isModelEntry(e) && e.fullUrl);
      if (model.length > 0 && model.every((e) => known.has(e.fullUrl ?? ''))) {
        const request = withoutModel(bundle, model);
        return { request, response: await send(request) };
      }
      let response: Bundle;
      try {
        response = await send(bundle);
      } catch (err) {
        // Two containers meeting a new model version at once can both create its Device or card
        // (a conditional create is not atomic across requests on every server); from then on the
        // conditional create matches two and the server answers 412. Settle on one of each (the
        // same in every container) and send the report without the model's entries.
        if (
          !opts.findStored ||
          model.length === 0 ||
          !(err instanceof FhirGatewayError && err.status === 412)
        )
          throw err;
        for (const e of model) {
          const ref = await opts.findStored(e);
          if (!ref) throw err;
          known.set(e.fullUrl ?? '', ref);
        }
        const request = withoutModel(bundle, model);
        return { request, response: await send(request) };
      }
      const learned = new Map<string, string>();
      for (const e of model) {
        const ref = storedReference(e, response.entry?.[entries.indexOf(e)]);
        if (ref) learned.set(e.fullUrl ?? '', ref);
      }
      // Only a complete answer is kept: a half-known model still goes whole next time.
      if (learned.size === model.length) for (const [url, ref] of learned) known.set(url, ref);
      return { request: bundle, response };
    },
  };
}
