/**
 * The sweep's functions as deployed: each one's environment is one the sweep's own
 * configuration reads, with values both configurations accept; each may touch only what its
 * step needs (S3 under the sweep prefix, the checkpoint table for the steps that keep state).
 */
import type { Template } from 'aws-cdk-lib/assertions';
import { beforeAll, describe, expect, it } from 'vitest';
import { SWEEP_ENV, SWEEP_EXPORT_MAX_WAIT, SWEEP_PREFIX } from '../../infra/stacks/pipeline-stack.js';
import { ENV, fhirAuthMode, loadConfig } from '../../shared/config.js';
import { sweepTableDefinition } from '../../shared/sweep/checkpoint.js';
import { parseSweepConfig, SWEEP_ITEM_MEMORY_MB, type SweepConfig } from '../../shared/sweep/config.js';
import { build, config, NO_BUNDLING, resourcesOf, TEST_MODELS, type Built } from './helpers.js';
import { SAMPLE, stateMachineDefinition, type Definition } from './sweep-definition.js';
import { SWEEP_FUNCTIONS, TABLE_FUNCTIONS } from './sweep-fixtures.js';

let app: Built;
let pipeline: Template;
let definition: Definition;

beforeAll(() => {
  app = build(config(), { models: TEST_MODELS, appProps: NO_BUNDLING });
  pipeline = app.templates.pipeline;
  definition = stateMachineDefinition(pipeline);
});

/**
 * Sweep settings whose default holds in AWS (the rest infra must set): the Search call's budget
 * (10 minutes) is also clamped by the handler to 2 minutes before the call's own timeout.
 */
const DEFAULT_HOLDS = new Set(['SWEEP_WRITE_CONCURRENCY', 'SWEEP_SEARCH_BUDGET_MS']);

describe('sweep functions: environment, grants and limits', () => {
  const environments = (): [string, Record<string, unknown>][] =>
    resourcesOf([pipeline], 'AWS::Lambda::Function')
      .filter(([id]) => SWEEP_FUNCTIONS.some((f) => id.startsWith(f)))
      .map(([id, f]) => [id, (f.Environment as { Variables: Record<string, unknown> }).Variables]);

  it('names only variables the shared or the sweep configuration reads, every one the sweep needs', () => {
    const envs = environments();
    expect(envs).toHaveLength(SWEEP_FUNCTIONS.length);
    // Every setting with a default (each one the sweep reads whatever the mode) is set, or its default holds.
    const needed = Object.keys(parseSweepConfig({})).filter((k) => !DEFAULT_HOLDS.has(k));
    for (const [id, vars] of envs) {
      const unread = Object.keys(vars).filter(
        (k) => !(k in ENV) && !(k in SWEEP_ENV) && k !== 'NODE_OPTIONS',
      );
      expect({ id, unread }).toEqual({ id, unread: [] });
      expect({ id, missing: needed.filter((k) => !(k in vars)) }).toEqual({ id, missing: [] });
      // FHIR_AUTH_MODE set: the handler authenticates with the shared FHIR auth (the secret), not
      // the sweep's own client-credentials settings.
      expect(vars.FHIR_AUTH_MODE).toBe('smart-backend-services');
    }
  });

  // No heap flag for the item worker: Lambda's bootstrap starts node with its own heap sizes on
  // the command line (lambdaNodeFlags), which override NODE_OPTIONS; it collects between batches.
  it('gives every sweep function source maps and no heap flag in NODE_OPTIONS (Lambda would override it)', () => {
    const envs = environments();
    expect(envs).toHaveLength(SWEEP_FUNCTIONS.length);
    for (const [id, vars] of envs) {
      expect({ id, options: vars.NODE_OPTIONS }).toEqual({ id, options: '--enable-source-maps' });
    }
    const [, worker = {}] =
      resourcesOf([pipeline], 'AWS::Lambda::Function').find(([id]) =>
        id.startsWith('PopulationSweepFunction'),
      ) ?? [];
    expect(worker.MemorySize).toBe(SWEEP_ITEM_MEMORY_MB);
  });

  it('spells each sweep variable as shared/sweep/config.ts reads it', () => {
    const values: Record<keyof typeof SWEEP_ENV, string> = {
      SWEEP_TABLE: 'a-table',
      SWEEP_BUCKET: 'a-bucket',
      SWEEP_PREFIX: 'some/prefix',
      SWEEP_TMP_DIR: '/scratch',
      SWEEP_EXPORT_MAX_WAIT_MS: '12345',
    };
    const parsed = parseSweepConfig(values);
    for (const [name, value] of Object.entries(values))
      expect(String(parsed[name as keyof SweepConfig]), name).toBe(value);
  });

  it('gives values both configurations accept: the staging bucket, its sweep prefix, the checkpoint table', () => {
    for (const [id, vars] of environments()) {
      // References to the data stack's export bucket and checkpoint table, not the defaults.
      expect(Object.keys(vars.SWEEP_BUCKET as object), id).toEqual(['Fn::ImportValue']);
      expect(JSON.stringify(vars.SWEEP_BUCKET), id).toMatch(/Exports/);
      expect(Object.keys(vars.SWEEP_TABLE as object), id).toEqual(['Fn::ImportValue']);
      expect(JSON.stringify(vars.SWEEP_TABLE), id).toMatch(/Checkpoints/);
      const env = Object.fromEntries(
        Object.entries(vars).map(([k, v]) => [
          k,
          typeof v === 'string' ? v : (SAMPLE[k] ?? `unresolved ${k}`),
        ]),
      );
      expect(
        Object.values(env).filter((v) => v.startsWith('unresolved')),
        id,
      ).toEqual([]);
      expect(fhirAuthMode(loadConfig(env))).toBe('smart-backend-services');
      const sweep = parseSweepConfig(env);
      expect(sweep).toMatchObject({
        SWEEP_BUCKET: SAMPLE.SWEEP_BUCKET,
        SWEEP_TABLE: SAMPLE.SWEEP_TABLE,
        SWEEP_PREFIX: SWEEP_PREFIX,
        SWEEP_TMP_DIR: '/tmp',
      });
      // The Wait/Choice loop waits for the export within the execution's timeout, leaving at
      // least half of it to stage and score.
      expect(sweep.SWEEP_EXPORT_MAX_WAIT_MS).toBeLessThanOrEqual((definition.TimeoutSeconds ?? 0) * 500);
      expect(sweep.SWEEP_EXPORT_MAX_WAIT_MS).toBe(SWEEP_EXPORT_MAX_WAIT.toMilliseconds());
    }
  });

  it('creates the checkpoint table with the key schema the checkpoint store uses', () => {
    const table = resourcesOf([app.templates.data], 'AWS::DynamoDB::Table').find(([id]) =>
      id.startsWith('Checkpoints'),
    );
    expect(table?.[1].KeySchema).toEqual(sweepTableDefinition().KeySchema);
  });

  it('reads and writes only under the sweep prefix of the staging bucket; the item worker only reads', () => {
    type Statement = { Action: string | string[]; Resource: unknown };
    const s3 = resourcesOf([pipeline], 'AWS::IAM::Policy')
      .filter(([id]) => /^(PopulationSweep|Sweep)/.test(id))
      .flatMap(([id, p]) =>
        (p.PolicyDocument as { Statement: Statement[] }).Statement.map((statement) => ({
          owner: id.replace(/(ServiceRole|Role)DefaultPolicy.*/, ''),
          actions: ([] as string[]).concat(statement.Action),
          resources: ([] as unknown[]).concat(statement.Resource).map((r) => JSON.stringify(r)),
        })),
      )
      .filter((s) => s.actions.some((a) => a.startsWith('s3:')));
    expect(new Set(s3.map((s) => s.owner))).toEqual(new Set([...SWEEP_FUNCTIONS, 'SweepStateMachine']));
    for (const s of s3) {
      for (const r of s.resources.filter((x) => x.includes('/'))) expect(r).toContain(`/${SWEEP_PREFIX}/*`);
    }
    expect(
      s3
        .filter((s) => s.actions.includes('s3:PutObject'))
        .map((s) => s.owner)
        .sort(),
    ).toEqual(SWEEP_FUNCTIONS.filter((f) => f !== 'PopulationSweepFunction').sort());
    // Gets and puts, no deletes anywhere (a lifecycle rule expires the staging prefix); the
    // stager reads its file's entry, the plan its files' summaries.
    expect(s3.filter((s) => s.actions.some((a) => /^s3:(Delete|\*)/.test(a)))).toEqual([]);
    for (const owner of [
      'PopulationSweepPlanFunction',
      'PopulationSweepStageFunction',
      'PopulationSweepSearchFunction',
    ]) {
      const actions = s3.filter((s) => s.owner === owner).flatMap((s) => s.actions);
      expect(actions, owner).toEqual(expect.arrayContaining(['s3:GetObject*', 's3:PutObject']));
    }
  });

  it('may call on the checkpoint table only what the checkpoint store calls, and poll and stage nothing', () => {
    type Statement = { Action: string | string[] };
    for (const fn of SWEEP_FUNCTIONS) {
      const actions = resourcesOf([pipeline], 'AWS::IAM::Policy')
        .filter(([id]) => id.startsWith(fn))
        .flatMap(([, p]) => (p.PolicyDocument as { Statement: Statement[] }).Statement)
        .flatMap((statement) => ([] as string[]).concat(statement.Action))
        .filter((a) => a.startsWith('dynamodb:'));
      expect({ fn, actions: new Set(actions) }).toEqual({
        fn,
        actions: new Set(
          TABLE_FUNCTIONS.includes(fn)
            ? // Only Finish lists the item checkpoints (a Query); the others get and put.
              [
                'dynamodb:GetItem',
                'dynamodb:PutItem',
                ...(fn.startsWith('PopulationSweepFinish') ? ['dynamodb:Query'] : []),
              ]
            : [],
        ),
      });
    }
    // The table is encrypted with the data stack's key: without it every write is refused. The
    // item worker only reads the bucket, so its encrypt grant can only come from the table's.
    const table = resourcesOf([app.templates.data], 'AWS::DynamoDB::Table').find(([id]) =>
      id.startsWith('Checkpoints'),
    )?.[1];
    expect((table?.SSESpecification as { SSEEnabled?: boolean } | undefined)?.SSEEnabled).toBe(true);
    const itemKms = resourcesOf([pipeline], 'AWS::IAM::Policy')
      .filter(([id]) => id.startsWith('PopulationSweepFunction'))
      .flatMap(([, p]) => (p.PolicyDocument as { Statement: { Action: string | string[] }[] }).Statement)
      .flatMap((st) => ([] as string[]).concat(st.Action))
      .filter((a) => a.startsWith('kms:'));
    expect(itemKms).toEqual(expect.arrayContaining(['kms:Decrypt', 'kms:Encrypt', 'kms:GenerateDataKey*']));
  });
});
