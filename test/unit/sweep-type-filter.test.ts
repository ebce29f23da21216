/**
 * The Bulk Data client's `_typeFilter`: one parameter per query, and a server that refuses it
 * (400) is asked again without it, once, with the refusal reported.
 */
import { describe, expect, it } from 'vitest';
import { createBulkClient } from '../../shared/sweep/bulk-client.js';
import { ExportFailedError, ExportUnsupportedError } from '../../shared/sweep/errors.js';
import { exportTypeFilters } from '../../shared/sweep/type-filters.js';

/** A fetch answering from a list, recording each URL. */
function answering(statuses: number[]) {
  const urls: URL[] = [];
  const fetchFn = ((input: string | URL) => {
    urls.push(new URL(String(input)));
    const status = statuses.shift() ?? 500;
    return Promise.resolve(
      status === 202
        ? new Response(null, { status, headers: { 'Content-Location': 'http://x/fhir/$export-status/7' } })
        : new Response(JSON.stringify({ resourceType: 'OperationOutcome', issue: [{ code: 'invalid' }] }), {
            status,
          }),
    );
  }) as typeof fetch;
  return { urls, fetchFn };
}

const FILTERS = ['Observation?code=http://loinc.org|2345-7,http://loinc.org|39156-5', 'Patient?active=true'];

/** One kick-off with FILTERS against a server answering `statuses` in turn. */
async function kickOffFiltered(statuses: number[], types = ['Observation']) {
  const { urls, fetchFn } = answering(statuses);
  const refused: number[] = [];
  const client = createBulkClient({
    baseUrl: 'http://x/fhir',
    fetch: fetchFn,
    onTypeFilterRefused: (s) => refused.push(s),
  });
  const result = await client.kickOff({ level: 'patient', types, typeFilters: FILTERS }).then(
    (status) => ({ status }),
    (error: unknown) => ({ error }),
  );
  const filtersSent = urls.map((u) => u.searchParams.getAll('_typeFilter'));
  return { result, urls, filtersSent, refused };
}

const STATUS_URL = 'http://x/fhir/$export-status/7';

describe('Bulk Data client _typeFilter', () => {
  it('sends each query as its own _typeFilter parameter', async () => {
    const { result, filtersSent, refused } = await kickOffFiltered([202], ['Patient', 'Observation']);
    expect(result).toEqual({ status: STATUS_URL });
    expect(filtersSent).toEqual([FILTERS]);
    expect(refused).toEqual([]);
  });

  it.each([400, 404, 405, 422, 501])(
    'kicks off again without _typeFilter when the server answers %i to it',
    async (refusal) => {
      const { result, urls, filtersSent, refused } = await kickOffFiltered([refusal, 202]);
      expect(result).toEqual({ status: STATUS_URL });
      expect(filtersSent).toEqual([FILTERS, []]);
      expect(urls[1]?.searchParams.get('_type')).toBe('Observation');
      expect(refused).toEqual([refusal]);
    },
  );

  it('a server without $export says so to the second kick-off too: unsupported, not refused', async () => {
    const { result, filtersSent, refused } = await kickOffFiltered([404, 404]);
    expect((result as { error?: unknown }).error).toBeInstanceOf(ExportUnsupportedError);
    expect(filtersSent).toHaveLength(2);
    expect(refused).toEqual([]);
  });

  it('a 400 without _typeFilter is still a failure, and the retry is made only once', async () => {
    const { result, filtersSent, refused } = await kickOffFiltered([400, 400]);
    expect((result as { error?: unknown }).error).toBeInstanceOf(ExportFailedError);
    expect(filtersSent).toHaveLength(2);
    expect(refused).toEqual([]);
  });

  it("builds one Observation query from the models' codes, escaping search syntax", () => {
    expect(exportTypeFilters([])).toEqual([]);
    expect(exportTypeFilters(['http://loinc.org|2345-7', 'urn:x|a,b$c', 'bare'])).toEqual([
      'Observation?code=http://loinc.org|2345-7,urn:x|a\\,b\\$c,bare',
    ]);
  });
});
