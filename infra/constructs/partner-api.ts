/**
 * The partner API: an HTTP API for CDS Hooks 2.0 and REST `$predict`, one base path per
 * allowed issuer, each behind a JWT authorizer for that issuer and its audiences:
 * `/{issuer id}/cds-services`, `/{issuer id}/cds-services/{proxy+}`, `/{issuer id}/v1/{proxy+}`.
 * An HTTP API JWT authorizer takes one issuer (it fetches the issuer's OIDC discovery document
 * and JWKS, and accepts RSA signatures), hence one route set per issuer. Access logs carry no
 * patient data (KMS); the stage is throttled.
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
    for (const issuer of props.issuers) {
      const authorizer = new HttpJwtAuthorizer(`Jwt-${issuer.id}`, issuer.issuer, {
        jwtAudience: [...issuer.audiences],
        identitySource: ['$request.header.Authorization'],
      });
      const routes: [string, HttpMethod[]][] = [
        [`/${issuer.id}/cds-services`, [HttpMethod.GET]],
        [`/${issuer.id}/cds-services/{proxy+}`, [HttpMethod.POST]],
        [`/${issuer.id}/v1/{proxy+}`, [HttpMethod.GET, HttpMethod.POST]],
      ];
      for (const [path, methods] of routes) this.api.addRoutes({ path, methods, integration, authorizer });
    }
  }

  /** Base URL of one issuer's services. */
  baseUrl(issuerId: string): string {
    return `${this.stage.url}${issuerId}`;
  }
}
