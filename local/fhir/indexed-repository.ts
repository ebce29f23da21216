/**
 * An in-memory FHIR repository for `@medplum/fhir-router` with search indexes, integer version
 * ids, atomic transactions (an undo log, rolled back when the callback throws) and change events.
 *
 * Searches on an indexed parameter (search-index.ts) start from posting lists; others scan the
 * type with Medplum's `matchesSearchRequest`. Results, order (insertion order, then `_sort` rule
 * by rule on the JSON of the values), `total`, `_offset` and `_count` are MemoryRepository's.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import type { SearchRequest, WithId } from '@medplum/core';
import {
  OperationOutcomeError,
  Operator,
  badRequest,
  generateId,
  gone,
  notFound,
  preconditionFailed,
  stringify,
  validateResource,
} from '@medplum/core';
import type { ReadHistoryOptions, RepositoryMode } from '@medplum/fhir-router';
import { FhirRepository, MemoryRepository } from '@medplum/fhir-router';
import type { Bundle, Reference, Resource } from '@medplum/fhirtypes';
import { ensureFhirDefinitions } from './definitions.js';
import { resolveConditionalReferences, validateBasic } from './validate.js';
import type { Entry } from './find.js';
import { findEntries } from './find.js';
import { VersionLists, clone, historyBundle, versionOf, type Version } from './history.js';
import { TypeIndex } from './postings.js';
import { extractForIndex, storedDates } from './search-index.js';

export interface ChangeEvent {
  readonly type: 'create' | 'update' | 'delete';
  /** The resource as stored (for `delete`, its last version). */
  readonly resource: WithId<Resource>;
  /** The version it replaced, for `update`. */
  readonly previous?: WithId<Resource>;
}
export type ChangeListener = (event: ChangeEvent) => unknown;

export interface IndexedRepositoryOptions {
  /** `basic` (default): a known resourceType and a valid id. `full`: Medplum's `validateResource` too. */
  readonly validation?: 'basic' | 'full';
}

interface Undo {
  readonly type: string;
  readonly id: string;
  readonly before: Entry | undefined;
  readonly historyLength: number;
}
interface TxContext {
  readonly undo: Undo[];
  readonly events: ChangeEvent[];
}

/** Runs a synchronous body as a promise: a throw becomes a rejection. */
function defer<T>(fn: () => T): Promise<T> {
  try {
    return Promise.resolve(fn());
  } catch (err) {
    return Promise.reject(err instanceof Error ? err : new Error(String(err)));
  }
}

export class IndexedRepository extends FhirRepository<undefined> {
  private readonly store = new Map<string, Map<string, Entry>>();
  /**
   * Type → id → versions, of resources with more than one version or deleted. A resource written
   * once has none here: its history is its current entry (no list or version object of its own).
   */
  private readonly versions = new VersionLists();
  private readonly indexes = new Map<string, TypeIndex>();
  /** Current entries by number (`Entry.seq`, what the posting lists hold); deleted ones undefined. */
  private readonly bySeq: (Entry | undefined)[] = [];
  private readonly listeners = new Set<ChangeListener>();
  private readonly tx = new AsyncLocalStorage<TxContext>();
  private lock: Promise<unknown> = Promise.resolve();
  private seq = 0;
  private readonly validation: 'basic' | 'full';
  /** How many searches used the indexes, and how many scanned. */
  readonly stats = { indexed: 0, scanned: 0 };

  constructor(options: IndexedRepositoryOptions = {}) {
    super();
    ensureFhirDefinitions();
    this.validation = options.validation ?? 'basic';
  }

  /** Registers a listener called after each committed write; returns a function that removes it. */
  onChange(listener: ChangeListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Number of current (not deleted) resources of a type. */
  count(resourceType: string): number {
    return this.store.get(resourceType)?.size ?? 0;
  }

  clear(): void {
    this.store.clear();
    this.versions.clear();
    this.indexes.clear();
    this.bySeq.length = 0;
    this.seq = 0;
  }

  setMode(_mode: RepositoryMode): void {
    // One store: reader and writer are the same.
  }

  generateId(): string {
    return generateId();
  }

  /**
   * Creates a resource. A client-supplied id is kept when called directly or for a batch entry
   * (`assignedId`), and replaced when the router creates on a plain POST (`assignedId: false`).
   */
  createResource<T extends Resource>(resource: T, options?: { assignedId?: boolean }): Promise<WithId<T>> {
    const id = options && !options.assignedId ? undefined : resource.id;
    return this.write<T>(resource, id ?? this.generateId());
  }

  async updateResource<T extends Resource>(resource: T, options?: { ifMatch?: string }): Promise<WithId<T>> {
    if (!resource.id) throw new OperationOutcomeError(badRequest('Missing id'));
    if (options?.ifMatch !== undefined) {
      const existing = this.store.get(resource.resourceType)?.get(resource.id);
      if (!existing) throw new OperationOutcomeError(notFound);
      if (existing.resource.meta?.versionId !== options.ifMatch)
        throw new OperationOutcomeError(preconditionFailed);
    }
    return this.write<T>(resource, resource.id);
  }

  patchResource<T extends Resource>(
    resourceType: T['resourceType'],
    id: string,
    patch: Parameters<FhirRepository['patchResource']>[2],
  ): Promise<WithId<T>> {
    // MemoryRepository's patch only calls readResource and updateResource, which are ours.
    // eslint-disable-next-line @typescript-eslint/unbound-method -- called with `this` below
    const borrowed = MemoryRepository.prototype.patchResource as (
      this: unknown,
      ...args: [string, string, typeof patch]
    ) => Promise<WithId<Resource>>;
    return borrowed.call(this, resourceType, id, patch) as Promise<WithId<T>>;
  }

  deleteResource(resourceType: string, id: string): Promise<void> {
    return defer(() => {
      this.deleteNow(resourceType, id);
    });
  }

  private deleteNow(resourceType: string, id: string): void {
    const entry = this.store.get(resourceType)?.get(id);
    if (!entry) throw new OperationOutcomeError(notFound);
    const history = this.historyToChange(resourceType, id, entry);
    this.recordUndo(resourceType, id, entry, history.length);
    this.indexFor(resourceType).remove(entry.seq, extractForIndex(entry.resource).postings);
    this.store.get(resourceType)?.delete(id);
    this.bySeq[entry.seq] = undefined;
    const meta = { versionId: String(history.length + 1), lastUpdated: new Date().toISOString() };
    history.push({ deleted: { resourceType, id, meta } as WithId<Resource> });
    this.versions.set(resourceType, id, history);
    this.emit({ type: 'delete', resource: entry.resource });
  }

  /** A resource's versions, oldest first; undefined when it never existed. */
  private historyOf(resourceType: string, id: string): readonly Version[] | undefined {
    const listed = this.versions.get(resourceType, id);
    if (listed) return listed;
    const entry = this.store.get(resourceType)?.get(id);
    return entry ? [{ resource: entry.resource }] : undefined;
  }

  /** How many versions a resource has had (a deletion counts as one), without building its list. */
  private versionCount(resourceType: string, id: string): number {
    return this.versions.get(resourceType, id)?.length ?? (this.store.get(resourceType)?.has(id) ? 1 : 0);
  }

  /** The version list to push the next version onto (not yet in `versions` when it was implicit). */
  private historyToChange(resourceType: string, id: string, current: Entry | undefined): Version[] {
    return this.versions.get(resourceType, id) ?? (current ? [{ resource: current.resource }] : []);
  }

  readResource<T extends Resource>(resourceType: string, id: string): Promise<WithId<T>> {
    return defer(() => this.readNow<T>(resourceType, id));
  }

  private readNow<T extends Resource>(resourceType: string, id: string): WithId<T> {
    const entry = this.store.get(resourceType)?.get(id);
    if (entry) return clone(entry.resource) as WithId<T>;
    throw new OperationOutcomeError(this.versions.get(resourceType, id) ? gone : notFound);
  }

  readReference<T extends Resource>(reference: Reference<T>): Promise<WithId<T>> {
    const parts = reference.reference?.split('/');
    if (parts?.length !== 2 || !parts[0] || !parts[1]) {
      return Promise.reject(new OperationOutcomeError(badRequest('Invalid reference')));
    }
    return this.readResource<T>(parts[0], parts[1]);
  }

  async readReferences<T extends Resource>(references: readonly Reference<T>[]): Promise<(T | Error)[]> {
    return Promise.all(references.map((r) => this.readReference<T>(r).catch((err: unknown) => err as Error)));
  }

  readHistory<T extends Resource>(
    resourceType: string,
    id: string,
    options?: ReadHistoryOptions,
  ): Promise<Bundle<WithId<T>>> {
    return defer(() => this.historyNow<T>(resourceType, id, options));
  }

  private historyNow<T extends Resource>(
    resourceType: string,
    id: string,
    options?: ReadHistoryOptions,
  ): Bundle<WithId<T>> {
    const history = this.historyOf(resourceType, id);
    if (!history) throw new OperationOutcomeError(notFound);
    return historyBundle<T>(resourceType, id, history, options);
  }

  readVersion<T extends Resource>(resourceType: string, id: string, vid: string): Promise<WithId<T>> {
    return defer(() => this.versionNow<T>(resourceType, id, vid));
  }

  private versionNow<T extends Resource>(resourceType: string, id: string, vid: string): WithId<T> {
    const version = this.historyOf(resourceType, id)?.find((v) => versionOf(v).meta?.versionId === vid);
    if (!version) throw new OperationOutcomeError(notFound);
    if (!('resource' in version)) throw new OperationOutcomeError(gone);
    return clone(version.resource) as WithId<T>;
  }

  search<T extends Resource>(searchRequest: SearchRequest<T>): Promise<Bundle<WithId<T>>> {
    return defer(() => this.searchNow(searchRequest));
  }

  private searchNow<T extends Resource>(searchRequest: SearchRequest<T>): Bundle<WithId<T>> {
    const { resourceType } = searchRequest;
    const entries = this.store.get(resourceType);
    const { matched, indexed } = findEntries(
      entries,
      (seq) => this.bySeq[seq],
      this.indexes.get(resourceType),
      searchRequest,
    );
    if (indexed) this.stats.indexed++;
    else this.stats.scanned++;
    let page = matched;
    if (searchRequest.offset !== undefined) page = page.slice(searchRequest.offset);
    if (searchRequest.count !== undefined) page = page.slice(0, searchRequest.count);
    const entry = page.map((e) => ({ resource: clone(e.resource) as WithId<T> }));
    return {
      resourceType: 'Bundle',
      type: 'searchset',
      entry: entry.length ? entry : undefined,
      total: matched.length,
    };
  }

  async searchByReference<T extends Resource>(
    searchRequest: SearchRequest<T>,
    referenceField: string,
    references: string[],
  ): Promise<Record<string, WithId<T>[]>> {
    const results: Record<string, WithId<T>[]> = {};
    for (const reference of references) {
      const filters = [...(searchRequest.filters ?? [])];
      filters.push({ code: referenceField, operator: Operator.EQUALS, value: reference });
      results[reference] = await this.searchResources({ ...searchRequest, filters });
    }
    return results;
  }

  /**
   * Runs the callback atomically: writes are undone if it throws, change events fire after it
   * returns. Transactions are serialised; a nested call (the router's conditional create inside
   * a transaction bundle) joins the one it runs in.
   */
  async withTransaction<TResult>(callback: (client: undefined) => Promise<TResult>): Promise<TResult> {
    if (this.tx.getStore()) return callback(undefined);
    const previous = this.lock;
    let release = (): void => undefined;
    this.lock = new Promise<void>((resolve) => (release = resolve));
    await previous;
    const ctx: TxContext = { undo: [], events: [] };
    try {
      const result = await this.tx.run(ctx, () => callback(undefined));
      for (const event of ctx.events) this.notify(event);
      return result;
    } catch (err) {
      this.rollback(ctx.undo);
      throw err;
    } finally {
      release();
    }
  }

  private async write<T extends Resource>(input: T, id: string): Promise<WithId<T>> {
    validateBasic(input);
    const { resourceType } = input;
    let versionsSoFar = this.versionCount(resourceType, id);
    const stamp = (meta: Resource['meta']): Resource['meta'] => ({
      ...meta,
      versionId: String(versionsSoFar + 1),
      lastUpdated: new Date().toISOString(),
    });
    // The version's meta goes into the one JSON text, so the copy returned is a parse of it.
    const json = stringify({ ...input, id, meta: stamp(input.meta) });
    const stored = JSON.parse(json) as WithId<T>;
    if (this.validation === 'full') validateResource(stored);
    const conditional = json.includes('?');
    if (conditional) {
      await resolveConditionalReferences(stored, this);
      versionsSoFar = this.versionCount(resourceType, id);
      stored.meta = stamp(stored.meta);
    }
    let extracted: ReturnType<typeof extractForIndex>;
    try {
      extracted = extractForIndex(stored);
    } catch (err) {
      throw new OperationOutcomeError(badRequest(`Invalid ${resourceType}: ${(err as Error).message}`));
    }
    let byId = this.store.get(resourceType);
    if (!byId) this.store.set(resourceType, (byId = new Map<string, Entry>()));
    const before = byId.get(id);
    this.recordUndo(resourceType, id, before, versionsSoFar);
    const index = this.indexFor(resourceType);
    const seq = before?.seq ?? ++this.seq;
    if (before) index.remove(seq, extractForIndex(before.resource).postings);
    index.add(seq, extracted.postings);
    const history = this.historyToChange(resourceType, id, before);
    history.push({ resource: stored });
    if (history.length > 1) this.versions.set(resourceType, id, history);
    const entry: Entry = { resource: stored, seq, dates: storedDates(extracted.dates) };
    byId.set(id, entry);
    this.bySeq[seq] = entry;
    this.emit(
      before
        ? { type: 'update', resource: stored, previous: before.resource }
        : { type: 'create', resource: stored },
    );
    return conditional ? clone(stored) : (JSON.parse(json) as WithId<T>);
  }

  private indexFor(resourceType: string): TypeIndex {
    let index = this.indexes.get(resourceType);
    if (!index) this.indexes.set(resourceType, (index = new TypeIndex()));
    return index;
  }

  private recordUndo(type: string, id: string, before: Entry | undefined, historyLength: number): void {
    this.tx.getStore()?.undo.push({ type, id, before, historyLength });
  }

  private rollback(undo: Undo[]): void {
    for (const u of [...undo].reverse()) {
      const byId = this.store.get(u.type);
      const current = byId?.get(u.id);
      if (current) {
        this.indexFor(u.type).remove(current.seq, extractForIndex(current.resource).postings);
        this.bySeq[current.seq] = undefined;
      }
      byId?.delete(u.id);
      if (u.before) {
        this.indexFor(u.type).add(u.before.seq, extractForIndex(u.before.resource).postings);
        byId?.set(u.id, u.before);
        this.bySeq[u.before.seq] = u.before;
      }
      this.versions.truncate(u.type, u.id, u.historyLength);
    }
  }

  private emit(event: ChangeEvent): void {
    const ctx = this.tx.getStore();
    if (ctx) ctx.events.push(event);
    else this.notify(event);
  }

  private notify(event: ChangeEvent): void {
    for (const listener of this.listeners) {
      try {
        const result = listener(event);
        if (result instanceof Promise) result.catch(() => undefined);
      } catch {
        // A listener's failure must not undo or fail a committed write.
      }
    }
  }
}
