/**
 * The deployed sweep is the sweep functions/population-sweep implements: the synthesized state
 * machine is run on placeholder values from the schedule's input to the end, and every Lambda
 * task's Payload must parse with the zod schema of the entry point its function's Handler names
 * (what the handler's `parseEvent` does in AWS); the Distributed Map reads the items where the
 * start answer says they are; each sweep function's environment is one the sweep's own
 * configuration reads; the failure path records in the checkpoint table's key schema.
 */
import type { Template } from 'aws-cdk-lib/assertions';
import { beforeAll, describe, expect, it } from 'vitest';
import type { z } from 'zod';
import type { ItemResponse, StartResponse } from '../../functions/population-sweep/handler.js';
import { LAMBDA_SERVICE_ERRORS, RETRYABLE_ERRORS } from '../../infra/constructs/sweep.js';
import {
  SWEEP_ENV,
  SWEEP_EXPORT_MAX_WAIT,
  SWEEP_PREFIX,
  SWEEP_START_TIMEOUT,
} from '../../infra/stacks/pipeline-stack.js';
import { ENV, fhirAuthMode, loadConfig } from '../../shared/config.js';
import { FhirUnavailableError } from '../../shared/fhir/errors.js';
import { sweepTableDefinition } from '../../shared/sweep/checkpoint.js';
import { parseSweepConfig, SWEEP_ITEM_MEMORY_MB, type SweepConfig } from '../../shared/sweep/config.js';
import { ExportExpiredError } from '../../shared/sweep/errors.js';
import { FinishSweepEventSchema, StartSweepEventSchema, SweepItemSchema } from '../../shared/sweep/events.js';
import type { SweepItem } from '../../shared/sweep/sweep.js';
import { build, config, NO_BUNDLING, resourcesOf, TEST_MODELS, type Built } from './helpers.js';
import {
  readPath,
  resolve,
  run,
  stateMachineDefinition,
  type Definition,
  type Json,
  SAMPLE,
} from './sweep-definition.js';

/** The handler's entry points and the schema each validates its event with. */
const ENTRY_POINTS: Record<string, z.ZodType> = {
  'index.startHandler': StartSweepEventSchema,
  'index.itemHandler': SweepItemSchema,
  'index.finishHandler': FinishSweepEventSchema,
};
const SWEEP_FUNCTIONS = [
  'PopulationSweepStartFunction',
  'PopulationSweepFunction',
  'PopulationSweepFinishFunction',
];

const EXECUTION = { Name: '5d1c0e7a-3f2b-4c9d-8e6f-0a1b2c3d4e5f', Id: 'arn:aws:states:::execution:x' };
const START: StartResponse = {
  sweepId: EXECUTION.Name,
  bucket: 'fhiranalyticsdata-exports-abc123',
  itemsKey: `${SWEEP_PREFIX}/${EXECUTION.Name}/items.json`,
  items: 1,
  mode: 'incremental',
  resumed: false,
};
const ITEM: SweepItem = {
  sweepId: EXECUTION.Name,
  partition: 3,
  keys: [`${SWEEP_PREFIX}/${EXECUTION.Name}/attempt-1/p0003/000001.kndjson`],
  mode: 'incremental',
  lines: 81234,
};
const ITEM_RESPONSE: ItemResponse = {
  sweepId: EXECUTION.Name,
  partition: 3,
  patients: 10,
  written: 7,
  unchanged: 2,
  insufficientData: 1,
  failed: 0,
};
const ANSWERS: Record<string, Json> = {
  'index.startHandler': START,
  'index.itemHandler': ITEM_RESPONSE,
  'index.finishHandler': { sweepId: EXECUTION.Name },
};

let app: Built;
let pipeline: Template;
let definition: Definition;
/** Lambda logical id → its Handler. */
let handlers: Map<string, string>;

beforeAll(() => {
  app = build(config(), { models: TEST_MODELS, appProps: NO_BUNDLING });
  pipeline = app.templates.pipeline;
  definition = stateMachineDefinition(pipeline);
  handlers = new Map(
    resourcesOf([pipeline], 'AWS::Lambda::Function').map(([id, f]) => [id, f.Handler as string]),
  );
});

/** The Handler of the function a Lambda task invokes (`getatt:<id>.Arn`). */
function handlerOf(functionName: Json): string {
  const id = /^getatt:(\w+)\.Arn$/.exec(String(functionName))?.[1];
  const handler = id ? handlers.get(id) : undefined;
  if (!handler) throw new Error(`a task invokes ${String(functionName)}, no function of this stack`);
  return handler;
}

/** What EventBridge Scheduler sends, parsed from the one schedule's target. */
function scheduleInputs(): Json[] {
  return resourcesOf([pipeline], 'AWS::Scheduler::Schedule').map(
    ([, s]) => JSON.parse((s.Target as { Input: string }).Input) as Json,
  );
}

describe('sweep state machine: the payloads are the handler contract', () => {
  it('runs start → every item → finish, each payload valid for its entry point', () => {
    const inputs = scheduleInputs();
    expect(inputs).toHaveLength(1);
    const calls: { handler: string; payload: Json }[] = [];
    const reads: Json[] = [];
    run(
      definition.States,
      definition.StartAt,
      inputs[0],
      { Execution: EXECUTION },
      {
        task(name, state, parameters) {
          // `lambda:invoke` with FunctionName and Payload, or the function's ARN as the resource
          // (the parameters are then the payload, and the answer is the result).
          const integrated = /:states:::lambda:invoke$/.test(state.Resource ?? '');
          const { FunctionName, Payload } = integrated
            ? (parameters as { FunctionName: Json; Payload: Json })
            : { FunctionName: state.Resource, Payload: parameters };
          const handler = handlerOf(FunctionName);
          const schema = ENTRY_POINTS[handler];
          expect(schema, `${name}: ${handler} is not an entry point of the handler`).toBeDefined();
          const parsed = schema?.safeParse(Payload);
          expect(parsed?.error?.issues ?? [], `${name} → ${handler}`).toEqual([]);
          calls.push({ handler, payload: Payload });
          return integrated ? { StatusCode: 200, Payload: ANSWERS[handler] } : ANSWERS[handler];
        },
        items(name, state, reader) {
          expect(state.ItemReader?.Resource, name).toMatch(/:states:::s3:getObject$/);
          expect(state.ItemReader?.ReaderConfig).toEqual({ InputType: 'JSON' });
          reads.push(reader);
          return [ITEM];
        },
      },
    );
    expect(calls.map((c) => c.handler)).toEqual([
      'index.startHandler',
      'index.itemHandler',
      'index.finishHandler',
    ]);
    // The schedule's definition, the execution name as the sweep id (a redrive resumes it).
    expect(calls[0]?.payload).toEqual({
      definition: { name: 'nightly', cohort: { kind: 'group', group: 'g1' }, since: 'incremental' },
      sweepId: EXECUTION.Name,
    });
    expect(reads).toEqual([{ Bucket: START.bucket, Key: START.itemsKey }]);
    expect(calls[1]?.payload).toEqual(ITEM);
    expect(calls[2]?.payload).toEqual({ sweepId: START.sweepId });
  });

  it('gives every sweep function one of the three entry points', () => {
    const sweepHandlers = [...handlers].filter(([id]) => SWEEP_FUNCTIONS.some((f) => id.startsWith(f)));
    expect(sweepHandlers.map(([, h]) => h).sort()).toEqual(Object.keys(ENTRY_POINTS).sort());
  });

  it('fans out as a Distributed Map at the configured concurrency, all items required', () => {
    const map = definition.States.Items;
    expect(map?.Type).toBe('Map');
    expect(map?.ItemProcessor?.ProcessorConfig.Mode).toBe('DISTRIBUTED');
    expect(map?.MaxConcurrency).toBe(8);
    expect(map?.ToleratedFailurePercentage ?? 0).toBe(0);
    // The function's reserved concurrency matches: children beyond it would only be throttled.
    const worker = resourcesOf([pipeline], 'AWS::Lambda::Function').find(([id]) =>
      id.startsWith('PopulationSweepFunction'),
    );
    expect(worker?.[1].ReservedConcurrentExecutions).toBe(8);
  });

  it('retries Lambda service errors and the retryable handler errors with backoff, then catches', () => {
    expect(RETRYABLE_ERRORS).toEqual(
      expect.arrayContaining([
        new FhirUnavailableError('x', { retryable: true }).name,
        new ExportExpiredError('x', 410).name,
      ]),
    );
    const tasks = [
      definition.States.Start,
      definition.States.Finish,
      definition.States.Items?.ItemProcessor?.States.Item,
    ];
    for (const task of tasks) {
      const retried = (task?.Retry ?? []).flatMap((r) => r.ErrorEquals);
      expect(retried).toEqual(expect.arrayContaining([...LAMBDA_SERVICE_ERRORS, ...RETRYABLE_ERRORS]));
      expect(retried).not.toContain('States.ALL');
      for (const r of task?.Retry ?? []) expect(r.BackoffRate).toBeGreaterThan(1);
    }
    expect(
      definition.States.Items?.ItemProcessor?.States.Item?.Retry?.flatMap((r) => r.ErrorEquals),
    ).toContain('Sandbox.Timedout');
    for (const name of ['Start', 'Items', 'Finish']) {
      expect(definition.States[name]?.Catch, name).toEqual([
        { ErrorEquals: ['States.ALL'], ResultPath: '$.failure', Next: 'RecordFailure' },
      ]);
    }
  });

  it('records a failure in the checkpoint table under its key schema, then fails the execution', () => {
    const record = definition.States.RecordFailure;
    expect(record?.Resource).toMatch(/:states:::dynamodb:putItem$/);
    const input = {
      ...(scheduleInputs()[0] as object),
      failure: { Error: 'ExportFailedError', Cause: '{"errorMessage":"kick-off refused"}' },
    };
    const params = resolve(record?.Parameters, input, { Execution: EXECUTION }) as {
      TableName: string;
      Item: Record<string, { S: string }>;
    };
    const keyNames = (sweepTableDefinition().KeySchema ?? []).map((k) => k.AttributeName ?? '');
    expect(Object.keys(params.Item).sort()).toEqual([...keyNames, 'body'].sort());
    expect(params.Item).toMatchObject({ sweepId: { S: EXECUTION.Name }, item: { S: '#failure' } });
    expect(JSON.parse(params.Item.body?.S ?? '')).toEqual(input.failure);
    expect(params.TableName).toMatch(/Checkpoints/);
    const fail = definition.States[record?.Next ?? ''];
    expect(fail?.Type).toBe('Fail');
    expect(readPath(fail?.ErrorPath ?? '', input, {})).toBe('ExportFailedError');
    expect(readPath(fail?.CausePath ?? '', input, {})).toContain('kick-off refused');
  });

  it('schedules each configured sweep in its time zone', () => {
    pipeline.resourceCountIs('AWS::Scheduler::Schedule', 1);
    const [[, s]] = resourcesOf([pipeline], 'AWS::Scheduler::Schedule') as [
      [string, Record<string, unknown>],
    ];
    expect(s.ScheduleExpression).toBe('cron(0 3 * * ? *)');
    expect(s.ScheduleExpressionTimezone).toBe('Europe/Berlin');
    expect(s.State ?? 'ENABLED').toBe('ENABLED');
  });
});

/** Sweep settings whose default holds in AWS (the rest infra must set). */
const DEFAULT_HOLDS = new Set(['SWEEP_WRITE_CONCURRENCY']);

describe('sweep functions: environment, grants and limits', () => {
  const environments = (): [string, Record<string, unknown>][] =>
    resourcesOf([pipeline], 'AWS::Lambda::Function')
      .filter(([id]) => SWEEP_FUNCTIONS.some((f) => id.startsWith(f)))
      .map(([id, f]) => [id, (f.Environment as { Variables: Record<string, unknown> }).Variables]);

  it('names only variables the shared or the sweep configuration reads, every one the sweep needs', () => {
    const envs = environments();
    expect(envs).toHaveLength(3);
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
    expect(envs).toHaveLength(3);
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
      // Start waits for the export within its own timeout, leaving time to stage it.
      expect(sweep.SWEEP_EXPORT_MAX_WAIT_MS).toBeLessThan(SWEEP_START_TIMEOUT.toMilliseconds() - 60_000);
      expect(sweep.SWEEP_EXPORT_MAX_WAIT_MS).toBe(SWEEP_EXPORT_MAX_WAIT.toMilliseconds());
    }
  });

  it('creates the checkpoint table with the key schema the checkpoint store uses', () => {
    const table = resourcesOf([app.templates.data], 'AWS::DynamoDB::Table').find(([id]) =>
      id.startsWith('Checkpoints'),
    );
    expect(table?.[1].KeySchema).toEqual(sweepTableDefinition().KeySchema);
  });

  it('reads and writes only under the sweep prefix of the staging bucket; start and finish write', () => {
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
    ).toEqual(['PopulationSweepFinishFunction', 'PopulationSweepStartFunction']);
  });

  it('may call on the checkpoint table only what the checkpoint store calls', () => {
    type Statement = { Action: string | string[] };
    for (const fn of SWEEP_FUNCTIONS) {
      const actions = resourcesOf([pipeline], 'AWS::IAM::Policy')
        .filter(([id]) => id.startsWith(fn))
        .flatMap(([, p]) => (p.PolicyDocument as { Statement: Statement[] }).Statement)
        .flatMap((statement) => ([] as string[]).concat(statement.Action))
        .filter((a) => a.startsWith('dynamodb:'));
      expect(new Set(actions)).toEqual(new Set(['dynamodb:GetItem', 'dynamodb:PutItem', 'dynamodb:Query']));
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
