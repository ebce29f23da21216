/**
 * Builds the apps the infra tests assert on. The full app enables every feature, with
 * resource-event standing in for any of notify, partner-api and population-sweep that does not
 * exist yet (bundles are shared through the asset cache).
 */
import { Template } from 'aws-cdk-lib/assertions';
import type { Stack } from 'aws-cdk-lib';
import { buildApp, type BuildOptions, type FhirAnalyticsApp } from '../../infra/build-app.js';
import { mergeConfig, parseConfig, type AppConfig } from '../../infra/config.js';
import type { ServedModel } from '../../infra/models.js';
import { functionExists } from '../../infra/paths.js';

const orStandIn = (name: string) => (functionExists(name) ? name : 'resource-event');
export const STAND_INS: BuildOptions['entries'] = {
  notify: orStandIn('notify'),
  partnerApi: orStandIn('partner-api'),
  populationSweep: orStandIn('population-sweep'),
};

export const BASE_CONFIG = {
  fhir: {
    baseUrl: 'https://fhir.example.org/r4',
    auth: { mode: 'smart-backend-services', clientId: 'fhir-analytics', scopes: ['system/Observation.rs'] },
    dicomWebAllowList: ['https://pacs.example.org/dicomweb'],
  },
  notify: {
    enabled: true,
    subscriptions: [
      {
        id: 'obs',
        issuer: 'https://fhir.example.org',
        jwksUrl: 'https://fhir.example.org/jwks',
        resourceTypes: { Observation: { category: 'laboratory' } },
      },
    ],
  },
  partnerApi: {
    enabled: true,
    issuers: [
      {
        id: 'ehr-a',
        issuer: 'https://ehr-a.example.org',
        audiences: ['https://api.example.org/ehr-a'],
        jwksUri: 'https://ehr-a.example.org/jwks',
      },
      {
        id: 'ehr-b',
        issuer: 'https://ehr-b.example.org/oauth',
        audiences: ['https://api.example.org/ehr-b'],
        jwksUri: 'https://ehr-b.example.org/oauth/keys',
      },
    ],
    cdsClients: [{ issuer: 'https://ehr-a.example.org', jwksUrls: ['https://ehr-a.example.org/jwks'] }],
  },
  sweeps: {
    enabled: true,
    schedules: [
      { name: 'nightly', expression: 'cron(0 3 * * ? *)', timeZone: 'Europe/Berlin', groupId: 'g1' },
    ],
    maxConcurrency: 8,
  },
  alarms: { email: 'ops@example.org' },
} as const;

export function config(overrides: unknown = {}): AppConfig {
  return parseConfig(mergeConfig(structuredClone(BASE_CONFIG), overrides));
}

/** Two CPU models and two GPU models, independent of the manifests under models/. */
export const TEST_MODELS: readonly ServedModel[] = [
  {
    id: 'diabetes-gbm',
    version: '1.0.0',
    family: 'gbm',
    tritonModelName: 'diabetes-gbm',
    instanceType: 'ml.c6i.xlarge',
    maxBatchSize: 1024,
    gpu: false,
  },
  {
    id: 'breast-cancer-svm',
    version: '1.0.0',
    family: 'svm',
    tritonModelName: 'breast-cancer-svm',
    instanceType: 'ml.c6i.xlarge',
    maxBatchSize: 256,
    gpu: false,
  },
  {
    id: 'pbc-gru',
    version: '1.0.0',
    family: 'rnn',
    tritonModelName: 'pbc-gru',
    instanceType: 'ml.g5.xlarge',
    maxBatchSize: 64,
    gpu: true,
  },
  {
    id: 'lung-nodule-cnn',
    version: '2.1.0',
    family: 'cnn',
    tritonModelName: 'lung_nodule_cnn',
    instanceType: 'ml.g5.xlarge',
    maxBatchSize: 16,
    gpu: true,
  },
];

/** No bundling: for variants whose assertions do not concern the code assets. */
export const NO_BUNDLING = { context: { 'aws:cdk:bundling-stacks': [] } };

export interface Built extends FhirAnalyticsApp {
  readonly templates: { readonly data: Template; readonly serving: Template; readonly pipeline: Template };
}

export function build(cfg: AppConfig, options: BuildOptions = {}): Built {
  const built = buildApp(cfg, { entries: STAND_INS, ...options });
  const t = (s: Stack) => Template.fromStack(s);
  return {
    ...built,
    templates: { data: t(built.data), serving: t(built.serving), pipeline: t(built.pipeline) },
  };
}

/** Every resource of a type across templates: `[logicalId, properties]`. */
export function resourcesOf(
  templates: readonly Template[],
  type: string,
): [string, Record<string, unknown>][] {
  return templates.flatMap((t) =>
    Object.entries(t.findResources(type)).map(
      ([id, r]) =>
        [id, (r as { Properties?: Record<string, unknown> }).Properties ?? {}] as [
          string,
          Record<string, unknown>,
        ],
    ),
  );
}
