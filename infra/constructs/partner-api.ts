/**
 * The partner API: an HTTP API for CDS Hooks 2.0 and REST `$predict`.
 *
 * - CDS Hooks routes (`/cds-services`, `/cds-services/{proxy+}`) have no API Gateway authorizer:
 *   CDS clients sign their own JWTs (ES384 recommended, `jku`/`kid`, `aud` = the service URL,
 *   a fresh `jti` per call) without an OIDC discovery document, which the HTTP API JWT
 *   authorizer can check none of. The function verifies them per the spec (issuer allow-list,
 *   JWKS by `jku`, audience, expiry, replay cache) and answers 401 itself.
 * - REST routes for OAuth2 client-credentials callers are behind a JWT authorizer per issuer
 *   (an HTTP API JWT authorizer takes one issuer, hence one base path each:
 *   `/{issuer id}/v1/{proxy+}`); the function checks the per-model scopes again.
 * - `GET /openapi.json` and `GET /v1/models/{id}/card` are public (no patient data).
 * Access logs carry no patient data (KMS); the stage is throttled (the per-client token bucket
 * is in the function).
 *
 * WAF cannot be associated with HTTP APIs; see docs/deploy.md for the CloudFront + WAF option.
 */
import { RemovalPolicy } from 'aws-cdk-lib';
import { HttpApi, HttpMethod, HttpStage, LogGroupLogDestination } from 'aws-cdk-lib/aws-apigatewayv2';
import { HttpJwtAuthorizer } from 'aws-cdk-lib/aws-apigatewayv2-authorizers';
import { HttpLambdaIntegration } from 'aws-cdk-lib/aws-apigatewayv2-integrations';
import type { IKey } from 'aws-cdk-lib/aws-kms';
import type { IFunction } from 'aws-cdk-lib/aws-lambda';
import { LogGroup, type RetentionDays } from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';
import { httpAccessLogFormat } from './access-log.js';

export interface PartnerIssuer {
  /** Path segment of this issuer's base URL. */
  readonly id: string;
  /** The JWT `iss`; `<issuer>/.well-known/openid-configuration` must name its `jwks_uri`. */
  readonly issuer: string;
  /** Accepted `aud` values (CDS Hooks: the service URL the client calls). */
  readonly audiences: readonly string[];
}

export interface PartnerApiProps {
  readonly handler: IFunction;
  readonly issuers: readonly PartnerIssuer[];
  readonly logKey: IKey;
  readonly logRetention: RetentionDays;
  readonly throttle: { readonly rateLimit: number; readonly burstLimit: number };
}

export class PartnerApi extends Construct {
  readonly api: HttpApi;
  readonly stage: HttpStage;
  readonly accessLogs: LogGroup;

  constructor(scope: Construct, id: string, props: PartnerApiProps) {
    super(scope, id);
    this.accessLogs = new LogGroup(this, 'AccessLogs', {
      encryptionKey: props.logKey,
      retention: props.logRetention,
      removalPolicy: RemovalPolicy.RETAIN,
    });
    this.api = new HttpApi(this, 'Api', {
      description: 'fhir-analytics: CDS Hooks and REST for partner apps',
      createDefaultStage: false,
    });
    this.stage = new HttpStage(this, 'Stage', {
      httpApi: this.api,
      stageName: 'v1',
      autoDeploy: true,
      detailedMetricsEnabled: true,
      throttle: props.throttle,
      accessLogSettings: {
        destination: new LogGroupLogDestination(this.accessLogs),
        format: httpAccessLogFormat(),
      },
    });
    const integration = new HttpLambdaIntegration('Handler', props.handler);
    const open: [string, HttpMethod[]][] = [
      ['/cds-services', [HttpMethod.GET]],
      ['/cds-services/{proxy+}', [HttpMethod.POST]],
      ['/openapi.json', [HttpMethod.GET]],
      ['/v1/models/{id}/card', [HttpMethod.GET]],
    ];
    for (const [path, methods] of open) this.api.addRoutes({ path, methods, integration });
    for (const issuer of props.issuers) {
      const authorizer = new HttpJwtAuthorizer(`Jwt-${issuer.id}`, issuer.issuer, {
        jwtAudience: [...issuer.audiences],
        identitySource: ['$request.header.Authorization'],
      });
      this.api.addRoutes({
        path: `/${issuer.id}/v1/{proxy+}`,
        methods: [HttpMethod.GET, HttpMethod.POST],
        integration,
        authorizer,
      });
    }
  }

  /** Base URL of one issuer's services. */
  baseUrl(issuerId: string): string {
    return `${this.stage.url}${issuerId}`;
  }
}
