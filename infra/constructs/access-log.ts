/**
 * API access-log formats that carry no patient data: request id, route template, status and
 * latency. No paths with ids, no query strings, no bodies, no source IPs, no user agents (a
 * patient app's user agent and IP identify a person as well as a name does).
 */
import { AccessLogFormat } from 'aws-cdk-lib/aws-apigateway';

/** REST API (v1): `$context.resourcePath` is the template (`/notify`), not the requested path. */
export const REST_ACCESS_LOG_FIELDS = {
  requestId: '$context.requestId',
  route: '$context.httpMethod $context.resourcePath',
  status: '$context.status',
  latencyMs: '$context.responseLatency',
  integrationLatencyMs: '$context.integrationLatency',
} as const;

/** HTTP API (v2): `$context.routeKey` is the template (`POST /{issuer}/cds-services/{proxy+}`). */
export const HTTP_ACCESS_LOG_FIELDS = {
  requestId: '$context.requestId',
  route: '$context.routeKey',
  status: '$context.status',
  latencyMs: '$context.responseLatency',
  integrationLatencyMs: '$context.integrationLatency',
} as const;

/** Context variables that must never appear in our access logs. */
export const FORBIDDEN_ACCESS_LOG_VARIABLES: readonly string[] = [
  '$context.identity.sourceIp',
  '$context.identity.userAgent',
  '$context.path',
  '$context.requestOverride',
  '$context.authorizer',
  '$input',
  '$request',
];

/** Both API Gateway generations take the `aws-apigateway` AccessLogFormat. */
export const restAccessLogFormat = (): AccessLogFormat =>
  AccessLogFormat.custom(JSON.stringify(REST_ACCESS_LOG_FIELDS));
export const httpAccessLogFormat = (): AccessLogFormat =>
  AccessLogFormat.custom(JSON.stringify(HTTP_ACCESS_LOG_FIELDS));
