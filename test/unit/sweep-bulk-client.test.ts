import { describe, expect, it } from 'vitest';
import { createBulkClient, retryAfterMs } from '../../shared/sweep/bulk-client.js';
import {
  ExportExpiredError,
  ExportFailedError,
  ExportTimeoutError,
  ExportUnsupportedError,
} from '../../shared/sweep/errors.js';

type Answer = { status: number; headers?: Record<string, string>; body?: unknown };

/** A fetch that answers from a script and records each request. */
function scripted(answers: Answer[]) {
  const calls: { url: string; method: string; headers: Record<string, string> }[] = [];
  const fetchFn = ((input: string | URL, init?: RequestInit) => {
    calls.push({
      url: String(input),
      method: init?.method ?? 'GET',
      headers: (init?.headers ?? {}) as Record<string, string>,
    });
    const a = answers.shift() ?? { status: 500 };
    const body = a.body === undefined ? null : typeof a.body === 'string' ? a.body : JSON.stringify(a.body);
    return Promise.resolve(
      new Response(a.status === 202 || a.status === 204 ? null : body, {
        status: a.status,
        headers: a.headers ?? {},
      }),
    );
  }) as typeof fetch;
  return { calls, fetchFn };
}

const MANIFEST = {
  transactionTime: '2026-01-01T00:00:00Z',
  request: 'http://x/fhir/Patient/$export',
  requiresAccessToken: true,
  output: [{ type: 'Patient', url: 'http://x/files/p.ndjson', count: 2 }],
  error: [],
};

describe('Bulk Data client', () => {
  it('kicks off with Accept, Prefer, _type, _since and _outputFormat, and returns the status URL', async () => {
    const { calls, fetchFn } = scripted([
      { status: 202, headers: { 'Content-Location': 'http://x/fhir/$export-status/1' } },
    ]);
    const client = createBulkClient({
      baseUrl: 'http://x/fhir',
      fetch: fetchFn,
      headers: () => Promise.resolve({ Authorization: 'Bearer t' }),
    });
    const status = await client.kickOff({
      level: 'group',
      group: 'g1',
      types: ['Patient', 'Observation'],
      since: '2026-01-01T00:00:00Z',
    });
    expect(status).toBe('http://x/fhir/$export-status/1');
    const url = new URL(calls[0]?.url ?? '');
    expect(url.pathname).toBe('/fhir/Group/g1/$export');
    expect(url.searchParams.get('_type')).toBe('Patient,Observation');
    expect(url.searchParams.get('_since')).toBe('2026-01-01T00:00:00Z');
    expect(url.searchParams.get('_outputFormat')).toBe('application/fhir+ndjson');
    expect(calls[0]?.headers).toMatchObject({
      Accept: 'application/fhir+json',
      Prefer: 'respond-async',
      Authorization: 'Bearer t',
    });
  });

  it.each([404, 405, 501])(
    'treats %i on kick-off as "no $export" (the caller falls back to search)',
    async (status) => {
      const { fetchFn } = scripted([
        { status, body: { resourceType: 'OperationOutcome', issue: [{ code: 'not-supported' }] } },
      ]);
      const client = createBulkClient({ baseUrl: 'http://x', fetch: fetchFn });
      await expect(client.kickOff({ level: 'patient', types: [] })).rejects.toBeInstanceOf(
        ExportUnsupportedError,
      );
    },
  );

  it('a 400 on kick-off is a failure, not a fallback', async () => {
    const { fetchFn } = scripted([
      { status: 400, body: { resourceType: 'OperationOutcome', issue: [{ code: 'invalid' }] } },
    ]);
    const client = createBulkClient({ baseUrl: 'http://x', fetch: fetchFn });
    await expect(client.kickOff({ level: 'patient', types: [] })).rejects.toBeInstanceOf(ExportFailedError);
  });

  it('polls honouring Retry-After on 202 and on 429, then parses the manifest', async () => {
    const { fetchFn } = scripted([
      { status: 202, headers: { 'Retry-After': '3', 'X-Progress': '10%' } },
      { status: 429, headers: { 'Retry-After': '7' } },
      { status: 503 },
      { status: 200, body: MANIFEST },
    ]);
    const waits: number[] = [];
    const progress: (string | undefined)[] = [];
    const client = createBulkClient({
      baseUrl: 'http://x',
      fetch: fetchFn,
      sleep: (ms) => {
        waits.push(ms);
        return Promise.resolve();
      },
      onPoll: (e) => progress.push(e.progress),
    });
    const stats = { polls: 0, throttled: 0, serverErrors: 0, waitedMs: 0 };
    const manifest = await client.waitForManifest('http://x/status', stats);
    expect(manifest.output[0]?.count).toBe(2);
    expect(manifest.requiresAccessToken).toBe(true);
    expect(waits.slice(0, 2)).toEqual([3000, 7000]);
    expect(progress[0]).toBe('10%');
    expect(stats).toMatchObject({ polls: 4, throttled: 1, serverErrors: 1 });
  });

  it('poll makes one request: the wait it asks for (clamped), 5xx counted in a row, then the manifest', async () => {
    const { calls, fetchFn } = scripted([
      { status: 503 },
      { status: 503, headers: { 'Retry-After': '1' } },
      { status: 202, headers: { 'Retry-After': '600' } },
      { status: 200, body: MANIFEST },
    ]);
    const client = createBulkClient({ baseUrl: 'http://x', fetch: fetchFn, maxPollMs: 60_000 });
    const stats = { polls: 0, throttled: 0, serverErrors: 0, waitedMs: 0 };
    const first = await client.poll('http://x/status', stats);
    const second = await client.poll('http://x/status', stats, first.done ? 0 : first.serverErrorsInARow);
    const third = await client.poll('http://x/status', stats, second.done ? 0 : second.serverErrorsInARow);
    const fourth = await client.poll('http://x/status', stats);
    expect(first).toEqual({ done: false, waitMs: 1000, serverErrorsInARow: 1 });
    expect(second).toEqual({ done: false, waitMs: 1000, serverErrorsInARow: 2 });
    // A 202 resets the 5xx count; 600 s is clamped to the longest pause.
    expect(third).toEqual({ done: false, waitMs: 60_000, serverErrorsInARow: 0 });
    expect(fourth.done && fourth.manifest.output).toEqual(MANIFEST.output);
    expect(calls).toHaveLength(4);
    expect(stats).toEqual({ polls: 4, throttled: 0, serverErrors: 2, waitedMs: 62_000 });
  });

  it('poll refuses more 5xx in a row than tolerated, and a wait past the bound', async () => {
    const { fetchFn } = scripted([{ status: 502 }, { status: 202, headers: { 'Retry-After': '30' } }]);
    const client = createBulkClient({
      baseUrl: 'http://x',
      fetch: fetchFn,
      maxServerErrors: 2,
      maxWaitMs: 60_000,
    });
    const stats = { polls: 0, throttled: 0, serverErrors: 0, waitedMs: 40_000 };
    await expect(client.poll('http://x/status', stats, 2)).rejects.toBeInstanceOf(ExportFailedError);
    await expect(client.poll('http://x/status', stats)).rejects.toBeInstanceOf(ExportTimeoutError);
    expect(stats.waitedMs).toBe(40_000);
  });

  it('gives up after the bound on total wait', async () => {
    const { fetchFn } = scripted(
      Array.from({ length: 10 }, () => ({ status: 202, headers: { 'Retry-After': '60' } })),
    );
    const client = createBulkClient({
      baseUrl: 'http://x',
      fetch: fetchFn,
      sleep: () => Promise.resolve(),
      maxWaitMs: 150_000,
    });
    await expect(client.waitForManifest('http://x/status')).rejects.toBeInstanceOf(ExportTimeoutError);
  });

  it('a manifest that does not parse is a failure', async () => {
    const { fetchFn } = scripted([{ status: 200, body: { output: 'nope' } }]);
    const client = createBulkClient({ baseUrl: 'http://x', fetch: fetchFn });
    await expect(client.waitForManifest('http://x/status')).rejects.toBeInstanceOf(ExportFailedError);
  });

  it.each([404, 410])('a download answering %i is an expired file', async (status) => {
    const { fetchFn } = scripted([{ status }]);
    const client = createBulkClient({ baseUrl: 'http://x', fetch: fetchFn });
    await expect(client.download('http://x/f.ndjson', false)).rejects.toBeInstanceOf(ExportExpiredError);
  });

  it('sends the token to download URLs only when the manifest requires it', async () => {
    const { calls, fetchFn } = scripted([
      { status: 200, body: '{}\n' },
      { status: 200, body: '{}\n' },
    ]);
    const client = createBulkClient({
      baseUrl: 'http://x',
      fetch: fetchFn,
      headers: () => Promise.resolve({ Authorization: 'Bearer t' }),
    });
    (await client.download('http://x/a', false)).destroy();
    (await client.download('http://x/b', true)).destroy();
    expect(calls[0]?.headers.Authorization).toBeUndefined();
    expect(calls[1]?.headers.Authorization).toBe('Bearer t');
  });

  it('reads Retry-After as seconds or as an HTTP date', () => {
    expect(retryAfterMs('2')).toBe(2000);
    expect(retryAfterMs(new Date(10_000).toUTCString(), 4_000)).toBe(6000);
    expect(retryAfterMs(null)).toBeUndefined();
    expect(retryAfterMs('soon')).toBeUndefined();
  });
});
