/**
 * A page-at-a-time search reader for the paged-search fallback (search-steps.ts): one request
 * per `read()`, the page before dropped, and a position that can be stored (S3) and resumed
 * from in another process — the query not yet run, the next page's URL, or the end. Requests go
 * through the FHIR gateway's page API (retries, typed errors, credentials to its base only).
 */
import type { Resource } from '@medplum/fhirtypes';
import type { FhirPager } from '../fhir/gateway.js';

/** Where a search stands: its first page not yet read, the next page's URL, or done. */
export type SearchPosition =
  | { readonly kind: 'query'; readonly resourceType: string; readonly params: Record<string, string> }
  | { readonly kind: 'next'; readonly url: string }
  | { readonly kind: 'end' };

export class PageReader<T extends Resource> {
  private page: readonly T[] = [];
  /** Pages read so far. */
  pages = 0;
  /** The most resources this reader held at once (one page's). */
  maxHeld = 0;

  constructor(
    private readonly fhir: FhirPager,
    private at: SearchPosition,
  ) {}

  /** The position after the last page read: what to store to resume. */
  get position(): SearchPosition {
    return this.at;
  }

  get done(): boolean {
    return this.at.kind === 'end';
  }

  /** Resources held now: the last page's. */
  get held(): number {
    return this.page.length;
  }

  /** The next page (the one before is let go), or undefined at the end. */
  async read(): Promise<readonly T[] | undefined> {
    this.page = [];
    const at = this.at;
    if (at.kind === 'end') return undefined;
    const page =
      at.kind === 'query'
        ? await this.fhir.searchPage<T>(at.resourceType as T['resourceType'], at.params)
        : await this.fhir.nextPage<T>(at.url);
    this.page = page.resources;
    this.pages++;
    this.maxHeld = Math.max(this.maxHeld, this.page.length);
    this.at = page.next ? { kind: 'next', url: page.next } : { kind: 'end' };
    return this.page;
  }
}
