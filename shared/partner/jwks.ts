/**
 * JWKS fetching with a cache: one fetch per URL per `ttlMs`, concurrent callers share the
 * fetch in flight, an unknown `kid` refetches (key rotation) at most once per `cooldownMs`,
 * and responses are bounded in time and size. `fetch` is injected (tests, and no I/O here
 * until a token needs a key).
 */
import { createLocalJWKSet, type CryptoKey, type JWSHeaderParameters } from 'jose';

export type FetchLike = (url: string, init: { signal: AbortSignal; redirect: 'error' }) => Promise<Response>;

export interface JwksCacheOptions {
  readonly fetch?: FetchLike;
  /** How long a fetched key set is used. Default 10 minutes. */
  readonly ttlMs?: number;
  /** Least time between refetches caused by an unknown `kid`. Default 30 s. */
  readonly cooldownMs?: number;
  /** Per-fetch limit. Default 3 s. */
  readonly timeoutMs?: number;
  /** Largest JWKS document accepted. Default 64 KiB. */
  readonly maxBytes?: number;
  readonly now?: () => number;
}

export interface JwksCache {
  /** The key for a JWS header from the key set at `url`. Throws `JwksError`. */
  key(url: string, header: JWSHeaderParameters): Promise<CryptoKey>;
  /** Fetches made so far (for tests and metrics). */
  readonly fetches: number;
}

export class JwksError extends Error {
  override name = 'JwksError';
  readonly code: 'jwks-unavailable' | 'key-not-found';
  constructor(code: 'jwks-unavailable' | 'key-not-found', options?: { cause?: unknown }) {
    super(code, options);
    this.code = code;
  }
}

interface Entry {
  readonly fetchedAt: number;
  readonly keys: ReturnType<typeof createLocalJWKSet>;
}

export function createJwksCache(opts: JwksCacheOptions = {}): JwksCache {
  const fetchFn: FetchLike = opts.fetch ?? ((url, init) => fetch(url, init));
  const ttlMs = opts.ttlMs ?? 600_000;
  const cooldownMs = opts.cooldownMs ?? 30_000;
  const timeoutMs = opts.timeoutMs ?? 3_000;
  const maxBytes = opts.maxBytes ?? 65_536;
  const now = opts.now ?? Date.now;
  const entries = new Map<string, Entry>();
  const inFlight = new Map<string, Promise<Entry>>();
  let fetches = 0;

  const load = async (url: string): Promise<Entry> => {
    fetches++;
    let jwks: unknown;
    try {
      const res = await fetchFn(url, { signal: AbortSignal.timeout(timeoutMs), redirect: 'error' });
      if (res.status !== 200) throw new Error(`status ${res.status}`);
      const body = await res.arrayBuffer();
      if (body.byteLength > maxBytes) throw new Error('too large');
      jwks = JSON.parse(Buffer.from(body).toString('utf8'));
    } catch (err) {
      throw new JwksError('jwks-unavailable', { cause: err });
    }
    const keys = (jwks as { keys?: unknown } | null)?.keys;
    if (!Array.isArray(keys)) throw new JwksError('jwks-unavailable');
    // Only public asymmetric keys are used: symmetric (oct) and private entries are dropped.
    const usable = keys.filter(
      (k): k is Record<string, unknown> =>
        typeof k === 'object' && k !== null && (k as { kty?: unknown }).kty !== 'oct' && !('d' in k),
    );
    const entry: Entry = {
      fetchedAt: now(),
      keys: createLocalJWKSet({ keys: usable }),
    };
    entries.set(url, entry);
    return entry;
  };

  const get = (url: string, force: boolean): Promise<Entry> => {
    const cached = entries.get(url);
    if (cached && !force && now() - cached.fetchedAt < ttlMs) return Promise.resolve(cached);
    let pending = inFlight.get(url);
    if (!pending) {
      pending = load(url).finally(() => inFlight.delete(url));
      inFlight.set(url, pending);
    }
    return pending;
  };

  const pick = async (entry: Entry, header: JWSHeaderParameters): Promise<CryptoKey> => {
    try {
      return await entry.keys(header);
    } catch (err) {
      throw new JwksError('key-not-found', { cause: err });
    }
  };

  return {
    get fetches() {
      return fetches;
    },
    async key(url, header) {
      const entry = await get(url, false);
      try {
        return await pick(entry, header);
      } catch (err) {
        // Rotation: the issuer may have a key we have not seen; refetch, but not on every miss.
        if (now() - entry.fetchedAt < cooldownMs) throw err;
        return pick(await get(url, true), header);
      }
    },
  };
}
