/**
 * The partner API on the embedded stack: the real handler, configured to trust the local
 * JWKS issuer (as CDS Hooks client issuer and as OAuth2 issuer) and the embedded FHIR server,
 * mounted on the functions gateway. `partnerApiHowTo` is the "how to call it" text of the demo.
 */
import type { Route } from './gateway.js';
import type { RunningJwksIssuer } from './jwks-issuer.js';
import { createPartnerApiHandler } from '../functions/partner-api/handler.js';
import { loadConfig } from '../shared/config.js';
import type { Logger } from '../shared/log.js';
import { createPartnerApiFromConfig, type PartnerApiOverrides } from '../shared/partner/index.js';

export const PARTNER_FUNCTION_NAME = 'partner-api';

export interface LocalPartnerApiOptions {
  readonly fhirBaseUrl: string;
  readonly sagemakerUrl: string;
  readonly modelsDir: string;
  readonly issuer: RunningJwksIssuer;
  /** The gateway's base URL; a function because the gateway's port is known only once it listens. */
  readonly publicBaseUrl: string | (() => string);
  readonly logger: Logger;
  /** Per-client burst and refill. Default 20 and 10/s. */
  readonly rate?: { burst: number; perSecond: number };
  /** The DICOMweb server image models may read from (turns the CNN's `$predict` on). */
  readonly dicomWebUrl?: string;
  /** FHIR servers a CDS call may name. Default: the embedded FHIR server. */
  readonly fhirServerAllowList?: readonly string[];
  readonly overrides?: PartnerApiOverrides;
}

/** The partner handler, configured as a deployment would be through its environment. */
export function createLocalPartnerHandler(
  opts: LocalPartnerApiOptions,
): ReturnType<typeof createPartnerApiHandler> {
  const config = loadConfig({
    FHIR_BASE_URL: opts.fhirBaseUrl,
    SAGEMAKER_ENDPOINT_URL: opts.sagemakerUrl,
    MODELS_DIR: opts.modelsDir,
    ...(opts.dicomWebUrl ? { DICOMWEB_ALLOWED_BASE_URLS: opts.dicomWebUrl } : {}),
    PARTNER_CDS_ISSUERS: JSON.stringify([{ issuer: opts.issuer.issuer, jwksUrls: [opts.issuer.jwksUrl] }]),
    PARTNER_OAUTH_ISSUERS: JSON.stringify([
      { issuer: opts.issuer.issuer, jwksUri: opts.issuer.jwksUrl, audience: opts.issuer.audience },
    ]),
    PARTNER_FHIR_ALLOWLIST: (opts.fhirServerAllowList ?? [opts.fhirBaseUrl]).join(','),
    PARTNER_RATE_BURST: String(opts.rate?.burst ?? 20),
    PARTNER_RATE_PER_SECOND: String(opts.rate?.perSecond ?? 10),
  });
  return createPartnerApiHandler(opts.logger, () =>
    createPartnerApiFromConfig(config, opts.logger, { publicBaseUrl: opts.publicBaseUrl, ...opts.overrides }),
  );
}

/** The gateway routes of the partner API (API Gateway would have the same). */
export function partnerApiRoutes(handler: Route['handler']): Route[] {
  return [
    { route: 'GET /cds-services', handler, functionName: PARTNER_FUNCTION_NAME },
    { route: 'ANY /cds-services/{proxy+}', handler, functionName: PARTNER_FUNCTION_NAME },
    { route: 'ANY /v1/{proxy+}', handler, functionName: PARTNER_FUNCTION_NAME },
    { route: 'GET /openapi.json', handler, functionName: PARTNER_FUNCTION_NAME },
  ];
}

export interface PartnerApiUrls {
  /** The functions gateway, e.g. `http://127.0.0.1:8083`. */
  readonly gateway: string;
  /** The local issuer's token endpoint. */
  readonly tokenUrl: string;
  /** A model to show in the examples. Default `diabetes-gbm`. */
  readonly modelId?: string;
}

/** "How to call it": ready-to-paste commands, one with a token already filled in. */
export function partnerApiHowTo(urls: PartnerApiUrls, token: string): string {
  const model = urls.modelId ?? 'diabetes-gbm';
  const g = urls.gateway.replace(/\/+$/, '');
  return [
    'Partner API (CDS Hooks 2.0 + REST $predict):',
    `  OpenAPI:     curl -s ${g}/openapi.json`,
    `  Model card:  curl -s ${g}/v1/models/${model}/card`,
    '  Models (token valid 5 minutes, scopes model/*.predict report.write):',
    `    curl -s -H 'Authorization: Bearer ${token}' ${g}/v1/models`,
    '  Score a patient (a Bundle with one Patient and its Observations; add ?persist=true to write the report):',
    `    curl -s -X POST -H 'Authorization: Bearer ${token}' -H 'Content-Type: application/fhir+json' \\`,
    `      --data @bundle.json '${g}/v1/models/${model}/$predict'`,
    '  A fresh token (client credentials):',
    `    curl -s -u demo-partner:demo-partner-secret -d grant_type=client_credentials ${urls.tokenUrl}`,
    `  CDS Hooks: GET ${g}/cds-services, POST ${g}/cds-services/${model} with a CDS client JWT`,
    "    (one per call: aud = the URL called, fresh jti; the issuer's mint() makes them).",
  ].join('\n');
}
