/**
 * SigV4 for AWS HealthLake: known answers with fixed credentials and a fixed date. The first
 * case is the AWS Signature Version 4 test suite's `get-vanilla` vector; the second is a FHIR
 * transaction to a HealthLake data store, checked against a canonical request built here by
 * hand from the SigV4 specification (not by the signer under test).
 */
import { createHash, createHmac } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { authorizedFetch } from '../../shared/fhir/auth.js';
import { createSigV4Auth, healthLakeRegion } from '../../shared/fhir/sigv4.js';

const EXAMPLE = { accessKeyId: 'AKIDEXAMPLE', secretAccessKey: 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY' };
const DATE = new Date('2015-08-30T12:36:00Z');
const BASE = 'https://healthlake.us-east-1.amazonaws.com/datastore/0123456789abcdef0123456789abcdef/r4';

const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');
const hmac = (key: Buffer | string, s: string) => createHmac('sha256', key).update(s).digest();

/** The signature of a canonical request, per the SigV4 specification. */
function expectedSignature(canonicalRequest: string, region: string, service: string): string {
  const scope = `20150830/${region}/${service}/aws4_request`;
  const toSign = ['AWS4-HMAC-SHA256', '20150830T123600Z', scope, sha256(canonicalRequest)].join('\n');
  let key = hmac(`AWS4${EXAMPLE.secretAccessKey}`, '20150830');
  for (const part of [region, service, 'aws4_request']) key = hmac(key, part);
  return createHmac('sha256', key).update(toSign).digest('hex');
}

describe('SigV4 auth (HealthLake)', () => {
  it('matches the AWS test suite get-vanilla vector', async () => {
    // Prepare
    const auth = createSigV4Auth({
      baseUrl: 'https://example.amazonaws.com/',
      region: 'us-east-1',
      service: 'service',
      credentials: EXAMPLE,
      now: () => DATE,
    });
    // Act
    const headers = await auth.getAuthHeaders({
      method: 'GET',
      url: 'https://example.amazonaws.com/',
      headers: {},
    });
    // Assess
    expect(headers).toEqual({
      authorization:
        'AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, ' +
        'SignedHeaders=host;x-amz-date, ' +
        'Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31',
      'x-amz-date': '20150830T123600Z',
    });
  });

  it('signs a HealthLake transaction: method, path, query, headers and body hash', async () => {
    // Prepare
    const auth = createSigV4Auth({ baseUrl: BASE, credentials: EXAMPLE, now: () => DATE });
    const body = '{"resourceType":"Bundle","type":"transaction","entry":[]}';
    const url = `${BASE}/Observation?code=2345-7&patient=Patient%2F1`;
    // Act
    const headers = await auth.getAuthHeaders({
      method: 'POST',
      url,
      headers: { Accept: 'application/fhir+json', 'Content-Type': 'application/fhir+json' },
      body,
    });
    // Assess
    const path = '/datastore/0123456789abcdef0123456789abcdef/r4/Observation';
    const canonical = [
      'POST',
      path,
      'code=2345-7&patient=Patient%2F1',
      'accept:application/fhir+json',
      'content-type:application/fhir+json',
      'host:healthlake.us-east-1.amazonaws.com',
      'x-amz-date:20150830T123600Z',
      '',
      'accept;content-type;host;x-amz-date',
      sha256(body),
    ].join('\n');
    expect(headers['x-amz-date']).toBe('20150830T123600Z');
    expect(headers.authorization).toBe(
      'AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/healthlake/aws4_request, ' +
        'SignedHeaders=accept;content-type;host;x-amz-date, ' +
        `Signature=${expectedSignature(canonical, 'us-east-1', 'healthlake')}`,
    );
  });

  it('adds the session token of temporary credentials and signs it', async () => {
    const auth = createSigV4Auth({
      baseUrl: BASE,
      credentials: { ...EXAMPLE, sessionToken: 'session-token-example' },
      now: () => DATE,
    });
    const headers = await auth.getAuthHeaders({ method: 'GET', url: `${BASE}/Patient/1`, headers: {} });
    expect(headers['x-amz-security-token']).toBe('session-token-example');
    expect(headers.authorization).toContain('SignedHeaders=host;x-amz-date;x-amz-security-token,');
  });

  it('takes the region from the data store URL, else from configuration, else refuses', () => {
    expect(healthLakeRegion(BASE)).toBe('us-east-1');
    expect(healthLakeRegion('https://healthlake.eu-west-2.amazonaws.com/datastore/x/r4')).toBe('eu-west-2');
    expect(healthLakeRegion('https://fhir.example.org/r4')).toBeUndefined();
    expect(() => createSigV4Auth({ baseUrl: 'https://vpce.example.org/r4', credentials: EXAMPLE })).toThrow(
      /no region/,
    );
  });

  it('signs what authorizedFetch sends, and nothing bound for another host', async () => {
    // Prepare
    const sent: { url: string; headers: Headers }[] = [];
    const fetchSpy = (url: string, init: RequestInit) => {
      sent.push({ url, headers: new Headers(init.headers) });
      return Promise.resolve(new Response('{}', { status: 200 }));
    };
    const auth = createSigV4Auth({ baseUrl: BASE, credentials: EXAMPLE, now: () => DATE });
    const doFetch = authorizedFetch(auth, { baseUrl: BASE, fetch: fetchSpy });
    // Act
    await doFetch(`${BASE}/Patient/1`, { method: 'GET', headers: { accept: 'application/fhir+json' } });
    await doFetch('https://bucket.s3.amazonaws.com/export/1.ndjson', { method: 'GET' });
    // Assess
    expect(sent[0]?.headers.get('authorization')).toMatch(/SignedHeaders=accept;host;x-amz-date,/);
    expect(sent[1]?.headers.get('authorization')).toBeNull();
  });
});
