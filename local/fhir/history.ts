/** A resource's version history as the embedded repository keeps it, and its `_history` Bundle. */
import type { WithId } from '@medplum/core';
import type { ReadHistoryOptions } from '@medplum/fhir-router';
import type { Bundle, BundleEntry, Resource } from '@medplum/fhirtypes';

/** One version: the resource as written, or the marker a delete left. */
export type Version = { readonly resource: WithId<Resource> } | { readonly deleted: WithId<Resource> };

/** Version lists by type, then id; an emptied list is dropped. */
export class VersionLists {
  private readonly byType = new Map<string, Map<string, Version[]>>();

  get(type: string, id: string): Version[] | undefined {
    return this.byType.get(type)?.get(id);
  }

  set(type: string, id: string, list: Version[]): void {
    let byId = this.byType.get(type);
    if (!byId) this.byType.set(type, (byId = new Map<string, Version[]>()));
    byId.set(id, list);
  }

  /** Keeps the first `length` versions (a rollback). */
  truncate(type: string, id: string, length: number): void {
    const list = this.get(type, id);
    if (!list) return;
    list.length = length;
    if (length === 0) this.byType.get(type)?.delete(id);
  }

  clear(): void {
    this.byType.clear();
  }
}

export const versionOf = (v: Version): WithId<Resource> => ('resource' in v ? v.resource : v.deleted);

/** A deep copy (what the repository hands out: callers may change it). */
export const clone = <T>(value: T): T => JSON.parse(JSON.stringify(value)) as T;

/** The `history` Bundle of `versions` (oldest first), newest first, paged by `_offset` and `_count`. */
export function historyBundle<T extends Resource>(
  resourceType: string,
  id: string,
  versions: readonly Version[],
  options?: ReadHistoryOptions,
): Bundle<WithId<T>> {
  const newestFirst = [...versions].reverse();
  const offset = options?.offset ?? 0;
  const page = newestFirst.slice(offset, options?.limit === undefined ? undefined : offset + options.limit);
  const entry: BundleEntry<WithId<T>>[] = page.map((v) => {
    const vid = versionOf(v).meta?.versionId ?? '';
    return {
      ...('resource' in v ? { resource: clone(v.resource) as WithId<T> } : {}),
      request: {
        method: 'resource' in v ? (vid === '1' ? 'POST' : 'PUT') : 'DELETE',
        url: `${resourceType}/${id}`,
      },
      response: { status: 'resource' in v ? (vid === '1' ? '201' : '200') : '204', etag: `W/"${vid}"` },
    };
  });
  return {
    resourceType: 'Bundle',
    type: 'history',
    total: versions.length,
    ...(entry.length ? { entry } : {}),
  };
}
