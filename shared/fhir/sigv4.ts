/**
 * AWS HealthLake: every FHIR request signed with SigV4 (service `healthlake`), with the
 * function's role through the default credential chain. The region comes from the data
 * store's URL (`https://healthlake.<region>.amazonaws.com/datastore/<id>/r4/`) or, for other
 * hosts (a VPC endpoint), from configuration.
 *
 * What is signed is exactly what is sent: method, path, query, the request's headers (with
 * `host`) and the SHA-256 of the body. The signer adds `authorization`, `x-amz-date` and, with
 * temporary credentials, `x-amz-security-token`; those are the headers returned.
 */
import { createHash, createHmac } from 'node:crypto';
import { SignatureV4 } from '@smithy/signature-v4';
import type {
  AwsCredentialIdentity,
  AwsCredentialIdentityProvider,
  Checksum,
  SourceData,
} from '@smithy/types';
import { FhirAuthError, type FhirAuthProvider, type FhirRequest } from './auth.js';
import { healthLakeRegion } from './healthlake.js';

export const HEALTHLAKE_SERVICE = 'healthlake';

/** SHA-256 (and HMAC-SHA256 with a secret) for the signer, from node:crypto. */
export class NodeSha256 implements Checksum {
  private hash: ReturnType<typeof createHash> | ReturnType<typeof createHmac>;
  constructor(private readonly secret?: SourceData) {
    this.hash = this.fresh();
  }
  private fresh(): ReturnType<typeof createHash> | ReturnType<typeof createHmac> {
    return this.secret === undefined ? createHash('sha256') : createHmac('sha256', toBytes(this.secret));
  }
  update(data: Uint8Array | string): void {
    this.hash.update(toBytes(data));
  }
  digest(): Promise<Uint8Array> {
    return Promise.resolve(new Uint8Array(this.hash.digest()));
  }
  reset(): void {
    this.hash = this.fresh();
  }
}

function toBytes(data: SourceData): Uint8Array {
  if (typeof data === 'string') return Buffer.from(data, 'utf8');
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return new Uint8Array(data);
}

export { healthLakeRegion } from './healthlake.js';

export interface SigV4AuthOptions {
  readonly baseUrl: string;
  /** Used when the base URL names no region (AWS_REGION). */
  readonly region?: string;
  /** Default: the AWS SDK's default chain (`@aws-sdk/credential-provider-node`), created on first use. */
  readonly credentials?: AwsCredentialIdentity | AwsCredentialIdentityProvider;
  /** For tests: the signing time. */
  readonly now?: () => Date;
  /** Signing name. Default `healthlake` (tests use the AWS SigV4 test suite's `service`). */
  readonly service?: string;
}

async function defaultCredentials(): Promise<AwsCredentialIdentityProvider> {
  // Provided by the Lambda runtime (external to the bundle); loaded only in SigV4 mode.
  const { defaultProvider } = await import('@aws-sdk/credential-provider-node');
  return defaultProvider();
}

export function createSigV4Auth(opts: SigV4AuthOptions): FhirAuthProvider {
  const region = healthLakeRegion(opts.baseUrl) ?? opts.region;
  if (!region) {
    throw new FhirAuthError('configuration', `no region in ${opts.baseUrl} and none configured (AWS_REGION)`);
  }
  let provider: Promise<AwsCredentialIdentityProvider> | undefined;
  const credentials: AwsCredentialIdentityProvider = async () => {
    const given = opts.credentials;
    if (given) return typeof given === 'function' ? given() : given;
    provider ??= defaultCredentials();
    return (await provider)();
  };
  const signer = new SignatureV4({
    service: opts.service ?? HEALTHLAKE_SERVICE,
    region,
    credentials,
    sha256: NodeSha256,
    // No x-amz-content-sha256 header (an S3 convention): the body hash is in the signature anyway.
    applyChecksum: false,
  });

  return {
    mode: 'sigv4',
    async getAuthHeaders(request: FhirRequest): Promise<Record<string, string>> {
      const url = new URL(request.url);
      const query: Record<string, string | string[]> = {};
      for (const [k, v] of url.searchParams) {
        const prev = query[k];
        query[k] = prev === undefined ? v : Array.isArray(prev) ? [...prev, v] : [prev, v];
      }
      const headers: Record<string, string> = { host: url.host };
      for (const [k, v] of Object.entries(request.headers)) headers[k.toLowerCase()] = v;
      let signed;
      try {
        signed = await signer.sign(
          {
            method: request.method,
            protocol: url.protocol,
            hostname: url.hostname,
            ...(url.port ? { port: Number(url.port) } : {}),
            path: url.pathname,
            query,
            headers,
            ...(request.body === undefined ? {} : { body: request.body }),
          },
          opts.now ? { signingDate: opts.now() } : {},
        );
      } catch (err) {
        throw new FhirAuthError('credentials', 'cannot sign the request (no AWS credentials?)', {
          cause: err,
        });
      }
      const out: Record<string, string> = {};
      for (const [k, v] of Object.entries(signed.headers)) {
        const name = k.toLowerCase();
        if (name === 'authorization' || name.startsWith('x-amz-')) out[name] = v;
      }
      return out;
    },
    // A 401 from HealthLake is a permissions problem, not an expired token: credentials refresh themselves.
    invalidate: () => false,
  };
}
