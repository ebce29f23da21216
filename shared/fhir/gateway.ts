/**
 * The FHIR gateway: the only way `shared/` talks to a FHIR server. A thin layer over
 * fhir-kit-client that adds what the pipeline needs: "gone" as a value rather than an
 * exception, paging with a bound, retries with backoff on 429/5xx/timeouts, per-call
 * timeouts, and typed errors.
 */
import { Client } from 'fhir-kit-client';
import type { Bundle, Resource } from '@medplum/fhirtypes';
import { withRetry } from '../retry.js';
import { FhirRequestError, FhirUnavailableError, isRetryableStatus, statusOf } from './errors.js';

export interface FhirGateway {
  /** The resource, or `undefined` when the server says it does not exist (404) or was deleted (410). */
  read<T extends Resource>(resourceType: T['resourceType'], id: string): Promise<T | undefined>;
  /** Every match, following `next` links, up to `maxResources`. */
  searchAll<T extends Resource>(
    resourceType: T['resourceType'],
    params: Readonly<Record<string, string>>,
    opts?: { maxResources?: number },
  ): Promise<T[]>;
  /** Posts a transaction bundle; the server's response bundle. */
  transaction(bundle: Bundle): Promise<Bundle>;
}

export interface FhirGatewayOptions {
  readonly baseUrl: string;
  readonly bearerToken?: string;
  /** Per-request timeout in ms. Default 15,000. */
  readonly timeoutMs?: number;
  /** Attempts per call, the first included. Default 4. */
  readonly attempts?: number;
  /** First backoff in ms. Default 200. */
  readonly backoffMs?: number;
  /** Hard bound on `searchAll`. Default 10,000. */
  readonly maxResources?: number;
  /** For tests: replaces the pause between retries. */
  readonly sleep?: (ms: number) => Promise<void>;
  readonly onRetry?: (operation: string, status: number | undefined, attempt: number) => void;
}

type AnyClient = Client;

export function createFhirGateway(opts: FhirGatewayOptions): FhirGateway {
  const client: AnyClient = new Client({
    baseUrl: opts.baseUrl,
    ...(opts.bearerToken ? { bearerToken: opts.bearerToken } : {}),
    customHeaders: { Accept: 'application/fhir+json' },
  });
  const timeoutMs = opts.timeoutMs ?? 15_000;
  const maxResources = opts.maxResources ?? 10_000;

  const call = async <T>(operation: string, fn: (signal: AbortSignal) => Promise<unknown>): Promise<T> => {
    try {
      return await withRetry(async () => (await fn(AbortSignal.timeout(timeoutMs))) as T, {
        attempts: opts.attempts ?? 4,
        baseMs: opts.backoffMs ?? 200,
        retryable: (err) => isRetryableStatus(statusOf(err)),
        ...(opts.sleep ? { sleep: opts.sleep } : {}),
        onRetry: (err, attempt) => opts.onRetry?.(operation, statusOf(err), attempt),
      });
    } catch (err) {
      const status = statusOf(err);
      if (isRetryableStatus(status)) {
        throw new FhirUnavailableError(
          `FHIR ${operation} failed after retries (status ${status ?? 'none'})`,
          {
            ...(status === undefined ? {} : { status }),
            retryable: true,
            cause: err,
          },
        );
      }
      throw new FhirRequestError(`FHIR ${operation} refused with status ${status ?? 'none'}`, {
        ...(status === undefined ? {} : { status }),
        retryable: false,
        cause: err,
      });
    }
  };

  return {
    async read<T extends Resource>(resourceType: T['resourceType'], id: string): Promise<T | undefined> {
      try {
        return await call<T>('read', (signal) => client.read({ resourceType, id, options: { signal } }));
      } catch (err) {
        if (err instanceof FhirRequestError && (err.status === 404 || err.status === 410)) return undefined;
        throw err;
      }
    },

    async searchAll<T extends Resource>(
      resourceType: T['resourceType'],
      params: Readonly<Record<string, string>>,
      searchOpts?: { maxResources?: number },
    ): Promise<T[]> {
      const limit = searchOpts?.maxResources ?? maxResources;
      const out: T[] = [];
      let page = await call<Bundle<T>>('search', (signal) =>
        client.search({
          resourceType,
          searchParams: { ...params },
          options: { signal },
        }),
      );
      for (;;) {
        for (const entry of page.entry ?? []) {
          if (entry.resource && (entry.search?.mode ?? 'match') === 'match') out.push(entry.resource);
          if (out.length >= limit) return out;
        }
        if (!page.link?.some((l) => l.relation === 'next' && l.url)) return out;
        const current = page;
        page = await call<Bundle<T>>('search-next', async (signal) => {
          const next = client.nextPage({ bundle: current as never, options: { signal } });
          return next ?? { resourceType: 'Bundle', type: 'searchset' };
        });
      }
    },

    async transaction(bundle: Bundle): Promise<Bundle> {
      return call<Bundle>('transaction', (signal) =>
        client.transaction({ body: bundle as never, options: { signal } }),
      );
    },
  };
}
