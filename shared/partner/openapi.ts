/**
 * The OpenAPI 3.1 document of the partner API, generated from the same zod schemas that
 * parse the requests (`z.toJSONSchema`, JSON Schema 2020-12, which OpenAPI 3.1 uses as is).
 */
import * as z from 'zod';
import {
  CdsDiscoverySchema,
  CdsFeedbackSchema,
  CdsHookRequestSchema,
  CdsResponseSchema,
} from '../events/cds-hooks.js';
import { ModelManifestSchema } from '../inference/manifest.js';
import { OperationOutcomeSchema, PredictBundleSchema, PredictResponseSchema } from './predict.js';

export const ModelListSchema = z.object({
  models: z.array(
    z.object({
      id: z.string(),
      version: z.string(),
      title: z.string(),
      notForClinicalUse: z.literal(true),
      metrics: z.record(z.string(), z.number()),
      links: z.object({ card: z.string(), predict: z.string(), cdsService: z.string().optional() }),
      manifest: ModelManifestSchema,
    }),
  ),
});

function component(schema: z.ZodType, io: 'input' | 'output'): Record<string, unknown> {
  const json = z.toJSONSchema(schema, { target: 'draft-2020-12', io, unrepresentable: 'any' }) as Record<
    string,
    unknown
  >;
  delete json.$schema;
  return json;
}

const ref = (name: string): { $ref: string } => ({ $ref: `#/components/schemas/${name}` });
const json = (name: string, type = 'application/json'): Record<string, unknown> => ({
  content: { [type]: { schema: ref(name) } },
});
const problem = (description: string): Record<string, unknown> => ({
  description,
  ...json('OperationOutcome', 'application/fhir+json'),
});

const ERRORS = {
  '400': problem(
    'Malformed body, wrong resource type, JSON nested too deeply: the OperationOutcome names the path',
  ),
  '401': problem('Missing or invalid token (one answer for every cause)'),
  '413': problem('Body larger than 1 MiB'),
  '429': problem('Rate limit; see Retry-After'),
};

let cached: Record<string, unknown> | undefined;

export function openApiDocument(): Record<string, unknown> {
  cached ??= {
    openapi: '3.1.0',
    info: {
      title: 'fhir-analytics partner API',
      version: '1.0.0',
      description:
        'CDS Hooks 2.0 services and REST `$predict` over the fhir-analytics models. Research use only; not for clinical use. ' +
        'CDS Hooks calls authenticate with the CDS client JWT of the spec (aud = the URL called, one jti per call); ' +
        'REST calls with an OAuth2 client-credentials access token with scopes `model/<id>.predict` or `model/*.predict`, and `report.write` to persist.',
    },
    components: {
      securitySchemes: {
        cdsClientJwt: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT (CDS Hooks client)' },
        oauth2: {
          type: 'oauth2',
          flows: {
            clientCredentials: {
              tokenUrl: '/token',
              scopes: {
                'model/*.predict': 'Run any model',
                'report.write': 'Persist the report (persist=true)',
              },
            },
          },
        },
      },
      schemas: {
        CdsHookRequest: component(CdsHookRequestSchema, 'input'),
        CdsDiscovery: component(CdsDiscoverySchema, 'output'),
        CdsResponse: component(CdsResponseSchema, 'output'),
        CdsFeedback: component(CdsFeedbackSchema, 'input'),
        PredictBundle: component(PredictBundleSchema, 'input'),
        DiagnosticReport: component(PredictResponseSchema, 'output'),
        ModelList: component(ModelListSchema, 'output'),
        OperationOutcome: component(OperationOutcomeSchema, 'output'),
      },
    },
    paths: {
      '/cds-services': {
        get: {
          summary: 'CDS Hooks discovery: one patient-view service per model',
          security: [{ cdsClientJwt: [] }],
          responses: { '200': { description: 'Services', ...json('CdsDiscovery') }, '401': ERRORS['401'] },
        },
      },
      '/cds-services/{id}': {
        post: {
          summary: 'Call a CDS service (patient-view)',
          security: [{ cdsClientJwt: [] }],
          parameters: [{ name: 'id', in: 'path', required: true, schema: { type: 'string' } }],
          requestBody: { required: true, ...json('CdsHookRequest') },
          responses: {
            '200': { description: 'Cards', ...json('CdsResponse') },
            ...ERRORS,
            '404': problem('No such service'),
            '412': problem('Prefetch incomplete and the FHIR server could not be used'),
          },
        },
      },
      '/cds-services/{id}/feedback': {
        post: {
          summary: 'Feedback on cards (counted, not stored)',
          security: [{ cdsClientJwt: [] }],
          parameters: [{ name: 'id', in: 'path', required: true, schema: { type: 'string' } }],
          requestBody: { required: true, ...json('CdsFeedback') },
          responses: { '200': { description: 'Accepted' }, ...ERRORS, '404': problem('No such service') },
        },
      },
      '/v1/models': {
        get: {
          summary: 'Models: manifests, held-out metrics, links',
          security: [{ oauth2: [] }],
          responses: { '200': { description: 'Models', ...json('ModelList') }, '401': ERRORS['401'] },
        },
      },
      '/v1/models/{id}/card': {
        get: {
          summary: 'The model card (Markdown); public, linked from CDS cards',
          parameters: [{ name: 'id', in: 'path', required: true, schema: { type: 'string' } }],
          responses: {
            '200': {
              description: 'Model card',
              content: { 'text/markdown': { schema: { type: 'string' } } },
            },
            '404': problem('No such model'),
          },
        },
      },
      '/v1/models/{id}/$predict': {
        post: {
          summary:
            'Score one patient: Bundle (one Patient with id, its Observations) in, DiagnosticReport out',
          description:
            'The score Observation is contained in the DiagnosticReport (result → #score). With persist=true and the ' +
            'report.write scope, the write-back transaction (Device, Observation, DiagnosticReport, Provenance) is ' +
            'written with conditional creates (idempotent) and the answer is 201 with Location.',
          security: [{ oauth2: ['model/*.predict'] }],
          parameters: [
            { name: 'id', in: 'path', required: true, schema: { type: 'string' } },
            {
              name: 'persist',
              in: 'query',
              required: false,
              schema: { type: 'string', enum: ['true', 'false'] },
            },
          ],
          requestBody: { required: true, ...json('PredictBundle', 'application/fhir+json') },
          responses: {
            '200': {
              description: 'Report (not persisted)',
              ...json('DiagnosticReport', 'application/fhir+json'),
            },
            '201': { description: 'Report persisted', ...json('DiagnosticReport', 'application/fhir+json') },
            ...ERRORS,
            '403': problem('Scope does not cover this model, or persist=true without report.write'),
            '404': problem('No such model'),
            '422': problem('Insufficient data: names the missing features'),
          },
        },
      },
    },
  };
  return cached;
}
