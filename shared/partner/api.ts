/**
 * The partner API as one function of an API Gateway v2 event: routing, authentication, rate
 * limits, body limits, and every error as an OperationOutcome. Paths may carry a prefix (the
 * per-issuer base paths of infra: `/<issuer>/cds-services/...`); audiences and links are
 * built from the public base URL, the prefix and the path called.
 *
 * | route | auth |
 * |---|---|
 * | `GET /cds-services` | CDS client JWT (aud = that URL) |
 * | `POST /cds-services/{id}` | CDS client JWT (aud = the service URL) |
 * | `POST /cds-services/{id}/feedback` | CDS client JWT (aud = the service or feedback URL) |
 * | `GET /v1/models` | OAuth2 access token |
 * | `POST /v1/models/{id}/$predict` | OAuth2 access token, scope `model/<id>.predict` or `model/*.predict` (+ `report.write` to persist) |
 * | `GET /v1/models/{id}/card`, `GET /openapi.json` | public (a card's link opens in a browser) |
 */
import type { APIGatewayProxyEventV2, APIGatewayProxyStructuredResultV2 } from 'aws-lambda';
import { createFhirGateway, type FhirGateway } from '../fhir/gateway.js';
import {
  badRequest,
  bodyText,
  errorResponse,
  forbidden,
  header,
  HttpError,
  jsonResponse,
  notFound,
  parseJsonBody,
  tooManyRequests,
  unauthorized,
} from '../http.js';
import type { ModelManifest } from '../inference/manifest.js';
import { errorFields, type Logger } from '../log.js';
import type { PipelinePorts } from '../pipeline.js';
import { CdsFeedbackSchema, firstIssue, type CdsDiscovery } from '../events/cds-hooks.js';
import { AuthError, canPredict, canWriteReports, type Authenticator, type Principal } from './auth.js';
import { serviceFor, servesPatientView } from './cards.js';
import { callService } from './cds.js';
import { toHttpError } from './errors.js';
import { openApiDocument } from './openapi.js';
import { parsePredictBundle, predict } from './predict.js';
import type { RateLimiter } from './rate-limit.js';

export const DEFAULT_MAX_BODY_BYTES = 1024 * 1024;
export const DEFAULT_MAX_JSON_DEPTH = 48;

export interface PartnerApiOptions {
  readonly ports: PipelinePorts;
  readonly authenticator: Authenticator;
  readonly rateLimiter: RateLimiter;
  /** Where callers reach the API (`https://api.example.org`): audiences and links are built from it. */
  readonly publicBaseUrl: string | (() => string);
  /** FHIR base URLs a CDS call's `fhirServer` may name. Default: none (prefetch only). */
  readonly fhirServerAllowList?: readonly string[];
  /** Builds the gateway for a client's FHIR server. Default: `createFhirGateway` with 2 attempts, 5 s each. */
  readonly fhirFor?: (baseUrl: string, accessToken: string) => FhirGateway;
  /** The model card's Markdown, or undefined when there is none. */
  readonly readCard: (modelId: string) => Promise<string | undefined>;
  readonly clock?: () => Date;
  /** Default 1 MiB. */
  readonly maxBodyBytes?: number;
  /** Default 48 (FHIR resources nest about 10 deep). */
  readonly maxJsonDepth?: number;
  /** Default `ports.logger`. */
  readonly logger?: Logger;
}

export interface PartnerApi {
  handle(event: APIGatewayProxyEventV2): Promise<APIGatewayProxyStructuredResultV2>;
}

type RouteName = 'discovery' | 'service' | 'feedback' | 'models' | 'card' | 'predict' | 'openapi';

interface Matched {
  readonly name: RouteName;
  readonly method: 'GET' | 'POST';
  readonly prefix: string;
  readonly id?: string;
}

const ROUTES: readonly [RegExp, RouteName, 'GET' | 'POST'][] = [
  [/^(.*)\/cds-services$/, 'discovery', 'GET'],
  [/^(.*)\/cds-services\/([^/]+)\/feedback$/, 'feedback', 'POST'],
  [/^(.*)\/cds-services\/([^/]+)$/, 'service', 'POST'],
  [/^(.*)\/v1\/models$/, 'models', 'GET'],
  [/^(.*)\/v1\/models\/([^/]+)\/card$/, 'card', 'GET'],
  [/^(.*)\/v1\/models\/([^/]+)\/\$predict$/, 'predict', 'POST'],
  [/^(.*)\/openapi\.json$/, 'openapi', 'GET'],
];

function safeDecode(path: string): string | undefined {
  try {
    return decodeURIComponent(path);
  } catch {
    return undefined;
  }
}

function match(path: string): Matched | undefined {
  for (const [pattern, name, method] of ROUTES) {
    const m = pattern.exec(path);
    if (!m) continue;
    const prefix = m[1] ?? '';
    // A prefix is one plain path segment at most (infra's per-issuer base path).
    if (!/^(\/[A-Za-z0-9_-]{1,64})?$/.test(prefix)) return undefined;
    return { name, method, prefix, ...(m[2] === undefined ? {} : { id: m[2] }) };
  }
  return undefined;
}

export function createPartnerApi(opts: PartnerApiOptions): PartnerApi {
  const { ports } = opts;
  const logger = opts.logger ?? ports.logger;
  const clock = opts.clock ?? (() => new Date());
  const maxBody = opts.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
  const maxDepth = opts.maxJsonDepth ?? DEFAULT_MAX_JSON_DEPTH;
  const baseUrl = (): string =>
    (typeof opts.publicBaseUrl === 'string' ? opts.publicBaseUrl : opts.publicBaseUrl()).replace(/\/+$/, '');
  const fhirFor =
    opts.fhirFor ??
    ((url: string, token: string) =>
      createFhirGateway({ baseUrl: url, bearerToken: token, timeoutMs: 5_000, attempts: 2, backoffMs: 100 }));
  const hookDeps = { ports, fhirFor, fhirServerAllowList: opts.fhirServerAllowList ?? [], clock };

  const cdsModels = (): ModelManifest[] => ports.models.all().filter(servesPatientView);
  const model = (id: string | undefined): ModelManifest | undefined =>
    ports.models.all().find((m) => m.id === id);

  const authenticate = async (
    route: Matched,
    event: APIGatewayProxyEventV2,
    kind: 'cds' | 'oauth',
    audiences: readonly string[] = [],
  ): Promise<Principal> => {
    let principal: Principal;
    try {
      const authorization = header(event, 'authorization');
      principal =
        kind === 'cds'
          ? await opts.authenticator.cdsClient(authorization, audiences)
          : await opts.authenticator.oauthClient(authorization);
    } catch (err) {
      const code = err instanceof AuthError ? err.code : 'verifier-error';
      logger.warn('auth refused', {
        route: route.name,
        code,
        ...(err instanceof AuthError ? {} : errorFields(err)),
      });
      throw unauthorized();
    }
    const decision = opts.rateLimiter.take(principal.rateKey);
    if (!decision.ok) {
      logger.warn('rate limited', { route: route.name, client: principal.clientId });
      throw tooManyRequests(decision.retryAfterSeconds);
    }
    return principal;
  };

  const readJson = (event: APIGatewayProxyEventV2): unknown =>
    parseJsonBody(bodyText(event, maxBody), maxDepth);

  const serve = async (
    route: Matched,
    event: APIGatewayProxyEventV2,
  ): Promise<APIGatewayProxyStructuredResultV2> => {
    const base = `${baseUrl()}${route.prefix}`;
    const cardUrl = (id: string): string => `${base}/v1/models/${encodeURIComponent(id)}/card`;
    switch (route.name) {
      case 'openapi':
        return jsonResponse(200, { ...openApiDocument(), servers: [{ url: base }] });

      case 'card': {
        const m = model(route.id);
        const text = m ? await opts.readCard(m.id) : undefined;
        if (text === undefined) throw notFound('model');
        return { statusCode: 200, headers: { 'content-type': 'text/markdown; charset=utf-8' }, body: text };
      }

      case 'discovery': {
        await authenticate(route, event, 'cds', [`${base}/cds-services`]);
        const body: CdsDiscovery = { services: cdsModels().map(serviceFor) };
        return jsonResponse(200, body);
      }

      case 'service': {
        const serviceUrl = `${base}/cds-services/${route.id ?? ''}`;
        await authenticate(route, event, 'cds', [serviceUrl]);
        const m = cdsModels().find((x) => x.id === route.id);
        if (!m) throw notFound('CDS service');
        const response = await callService(hookDeps, m, readJson(event), cardUrl(m.id));
        return jsonResponse(200, response);
      }

      case 'feedback': {
        const serviceUrl = `${base}/cds-services/${route.id ?? ''}`;
        await authenticate(route, event, 'cds', [serviceUrl, `${serviceUrl}/feedback`]);
        const m = cdsModels().find((x) => x.id === route.id);
        if (!m) throw notFound('CDS service');
        const parsed = CdsFeedbackSchema.safeParse(readJson(event));
        if (!parsed.success) {
          const { path, message } = firstIssue(parsed.error);
          throw badRequest(`invalid feedback at ${path}: ${message}`, path);
        }
        const items = parsed.data.feedback;
        logger.info('cds feedback', {
          model: m.id,
          items: items.length,
          accepted: items.filter((f) => f.outcome === 'accepted').length,
          overridden: items.filter((f) => f.outcome === 'overridden').length,
          withReason: items.filter((f) => f.overrideReason?.reason !== undefined).length,
        });
        return jsonResponse(200, {});
      }

      case 'models': {
        await authenticate(route, event, 'oauth');
        return jsonResponse(200, {
          models: ports.models.all().map((m) => ({
            id: m.id,
            version: m.version,
            title: m.title,
            notForClinicalUse: m.notForClinicalUse,
            metrics: m.metrics,
            links: {
              card: cardUrl(m.id),
              predict: `${base}/v1/models/${m.id}/$predict`,
              ...(servesPatientView(m) ? { cdsService: `${base}/cds-services/${m.id}` } : {}),
            },
            manifest: m,
          })),
        });
      }

      case 'predict': {
        const principal = await authenticate(route, event, 'oauth');
        const m = model(route.id);
        if (!m) throw notFound('model');
        if (!canPredict(principal, m.id)) throw forbidden();
        const persistParam = event.queryStringParameters?.persist;
        if (persistParam !== undefined && persistParam !== 'true' && persistParam !== 'false') {
          throw badRequest('persist must be true or false', 'persist');
        }
        const persist = persistParam === 'true';
        if (persist && !canWriteReports(principal)) throw forbidden();
        const input = parsePredictBundle(readJson(event), { requireIds: persist });
        const result = await predict(ports, m, input, { persist, now: clock() });
        logger.info('predict', {
          model: m.id,
          client: principal.clientId,
          status: result.status,
          persisted: persist,
        });
        return jsonResponse(
          result.status,
          result.body,
          result.location ? { location: result.location } : {},
          'application/fhir+json',
        );
      }
    }
  };

  return {
    async handle(event) {
      const started = Date.now();
      const method = event.requestContext.http.method.toUpperCase();
      const path = safeDecode(event.rawPath || event.requestContext.http.path);
      const route = path === undefined ? undefined : match(path);
      let result: APIGatewayProxyStructuredResultV2;
      try {
        if (!route) throw notFound('route');
        if (route.method !== method) {
          throw new HttpError(405, 'not-supported', `method ${method.slice(0, 16)} is not allowed here`, {
            headers: { allow: route.method },
          });
        }
        result = await serve(route, event);
      } catch (err) {
        const e = toHttpError(err);
        if (e.status >= 500)
          logger.error('partner request failed', { route: route?.name, ...errorFields(e.cause ?? e) });
        result = errorResponse(e);
      }
      logger.info('partner request', {
        route: route?.name ?? 'none',
        status: result.statusCode,
        ms: Date.now() - started,
      });
      return result;
    },
  };
}
