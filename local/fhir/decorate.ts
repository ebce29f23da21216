/**
 * What a real FHIR server adds to the router's answers: paging links and `fullUrl`s on search
 * and history bundles, versioned locations and ETags on batch/transaction responses, and the
 * HTTP headers (ETag, Last-Modified, Location, Content-Location) of a resource response.
 */
import type { Bundle, BundleEntry, Resource } from '@medplum/fhirtypes';

/** `W/"<versionId>"`, or undefined when the resource has no version. */
export function etagOf(resource: Resource | undefined): string | undefined {
  const vid = resource?.meta?.versionId;
  return vid ? `W/"${vid}"` : undefined;
}

/** The RFC 7231 date of `meta.lastUpdated`, or undefined. */
export function lastModifiedOf(resource: Resource | undefined): string | undefined {
  const at = resource?.meta?.lastUpdated;
  if (!at) return undefined;
  const date = new Date(at);
  return Number.isNaN(date.getTime()) ? undefined : date.toUTCString();
}

/** `<base>/Type/id/_history/vid` (or without the history part when there is no version). */
export function versionedUrl(baseUrl: string, resource: Resource): string | undefined {
  if (!resource.id) return undefined;
  const vid = resource.meta?.versionId;
  return `${baseUrl}/${resource.resourceType}/${resource.id}${vid ? `/_history/${vid}` : ''}`;
}

/**
 * Adds `self`, `first`, `previous` and `next` links (absolute, under the base) and each entry's
 * `fullUrl` and `search.mode` to a searchset. `query` is the effective query, `_count` included.
 */
export function decorateSearchset(
  bundle: Bundle,
  baseUrl: string,
  path: string,
  query: URLSearchParams,
  count: number,
  offset: number,
): void {
  const link = (o: number): string => {
    const q = new URLSearchParams(query);
    q.set('_count', String(count));
    if (o > 0) q.set('_offset', String(o));
    else q.delete('_offset');
    return `${baseUrl}/${path}?${q.toString()}`;
  };
  const links: NonNullable<Bundle['link']> = [{ relation: 'self', url: link(offset) }];
  links.push({ relation: 'first', url: link(0) });
  if (count > 0 && offset > 0) links.push({ relation: 'previous', url: link(Math.max(0, offset - count)) });
  if (count > 0 && bundle.total !== undefined && offset + count < bundle.total) {
    links.push({ relation: 'next', url: link(offset + count) });
  }
  bundle.link = links;
  for (const entry of bundle.entry ?? []) {
    const r = entry.resource;
    if (r?.id) entry.fullUrl = `${baseUrl}/${r.resourceType}/${r.id}`;
    entry.search = { mode: 'match' };
  }
}

/** Adds `fullUrl`s and a `self` link to a history bundle. */
export function decorateHistory(bundle: Bundle, baseUrl: string, path: string): void {
  bundle.link = [{ relation: 'self', url: `${baseUrl}/${path}` }];
  for (const entry of bundle.entry ?? []) {
    const url = entry.request?.url;
    if (url) entry.fullUrl = `${baseUrl}/${url}`;
    const r = entry.resource;
    if (r && entry.response) entry.response.lastModified = r.meta?.lastUpdated;
  }
}

/** Versioned `location`, `etag`, `lastModified` and `fullUrl` on batch/transaction response entries. */
export function decorateBatchResponse(bundle: Bundle, baseUrl: string, request?: unknown): void {
  const requested = (request as Bundle | undefined)?.entry;
  (bundle.entry ?? []).forEach((entry, i) => {
    // Update as create (a PUT that made version 1) is a 201.
    const method = requested?.[i]?.request?.method;
    if (method === 'PUT' && entry.response?.status === '200' && entry.resource?.meta?.versionId === '1') {
      entry.response.status = '201';
    }
    decorateEntry(entry, baseUrl);
  });
}

function decorateEntry(entry: BundleEntry, baseUrl: string): void {
  const r = entry.resource;
  const response = entry.response;
  if (!r?.id || !response) return;
  entry.fullUrl = `${baseUrl}/${r.resourceType}/${r.id}`;
  const etag = etagOf(r);
  if (etag) response.etag = etag;
  if (r.meta?.lastUpdated) response.lastModified = r.meta.lastUpdated;
  if (response.location) {
    const vid = r.meta?.versionId;
    response.location = `${r.resourceType}/${r.id}${vid ? `/_history/${vid}` : ''}`;
  }
}
