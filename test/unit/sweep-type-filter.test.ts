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

describe('Bulk Data client _typeFilter', () => {
  it('sends each query as its own _typeFilter parameter', async () => {
    // Arrange
    const { urls, fetchFn } = answering([202]);
    const refused: number[] = [];
    const client = createBulkClient({
      baseUrl: 'http://x/fhir',
      fetch: fetchFn,
      onTypeFilterRefused: (s) => refused.push(s),
    });

    // Act
    const status = await client.kickOff({
      level: 'patient',
      types: ['Patient', 'Observation'],
      typeFilters: FILTERS,
    });

    // Assert
    expect(status).toBe('http://x/fhir/$export-status/7');
    expect(urls).toHaveLength(1);
    expect(urls[0]?.searchParams.getAll('_typeFilter')).toEqual(FILTERS);
    expect(refused).toEqual([]);
  });

  it('kicks off again without _typeFilter when the server refuses it', async () => {
    // Arrange
    const { urls, fetchFn } = answering([400, 202]);
    const refused: number[] = [];
    const client = createBulkClient({
      baseUrl: 'http://x/fhir',
      fetch: fetchFn,
      onTypeFilterRefused: (s) => refused.push(s),
    });

    // Act
    const status = await client.kickOff({ level: 'patient', types: ['Observation'], typeFilters: FILTERS });

    // Assert
    expect(status).toBe('http://x/fhir/$export-status/7');
    expect(urls.map((u) => u.searchParams.getAll('_typeFilter').length)).toEqual([2, 0]);
    expect(urls[1]?.searchParams.get('_type')).toBe('Observation');
    expect(refused).toEqual([400]);
  });

  it('a server that answers 501 to the filter is asked again without it', async () => {
    // Arrange
    const { urls, fetchFn } = answering([501, 202]);
    const refused: number[] = [];
    const client = createBulkClient({
      baseUrl: 'http://x/fhir',
      fetch: fetchFn,
      onTypeFilterRefused: (s) => refused.push(s),
    });

    // Act
    const status = await client.kickOff({ level: 'patient', types: ['Observation'], typeFilters: FILTERS });

    // Assert
    expect(status).toBe('http://x/fhir/$export-status/7');
    expect(urls.map((u) => u.searchParams.getAll('_typeFilter').length)).toEqual([2, 0]);
    expect(refused).toEqual([501]);
  });

  it('a server without $export says so to the second kick-off too: unsupported, not refused', async () => {
    // Arrange
    const { urls, fetchFn } = answering([404, 404]);
    const refused: number[] = [];
    const client = createBulkClient({
      baseUrl: 'http://x/fhir',
      fetch: fetchFn,
      onTypeFilterRefused: (s) => refused.push(s),
    });

    // Act
    const kicked = client.kickOff({ level: 'patient', types: ['Observation'], typeFilters: FILTERS });

    // Assert
    await expect(kicked).rejects.toBeInstanceOf(ExportUnsupportedError);
    expect(urls).toHaveLength(2);
    expect(refused).toEqual([]);
  });

  it('a 400 without _typeFilter is still a failure, and the retry is made only once', async () => {
    // Arrange
    const { urls, fetchFn } = answering([400, 400]);
    const client = createBulkClient({ baseUrl: 'http://x/fhir', fetch: fetchFn });

    // Act
    const kicked = client.kickOff({ level: 'patient', types: ['Observation'], typeFilters: FILTERS });

    // Assert
    await expect(kicked).rejects.toBeInstanceOf(ExportFailedError);
    expect(urls).toHaveLength(2);
  });

  it("builds one Observation query from the models' codes, escaping search syntax", () => {
    expect(exportTypeFilters([])).toEqual([]);
    expect(exportTypeFilters(['http://loinc.org|2345-7', 'urn:x|a,b$c', 'bare'])).toEqual([
      'Observation?code=http://loinc.org|2345-7,urn:x|a\\,b\\$c,bare',
    ]);
  });
});
