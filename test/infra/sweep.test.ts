/**
 * The deployed sweep is the sweep functions/population-sweep implements: the synthesized state
 * machine is run on placeholder values from the schedule's input to the end — the export polled
 * in a Wait/Choice loop, its files staged by one Distributed Map, the items scored by another,
 * expired files kicked off again — and every Lambda task's Payload must parse with the zod
 * schema of the entry point its function's Handler names (what the handler's `parseEvent` does
 * in AWS); each map reads its list where the step before says it is; each sweep function's
 * environment is one the sweep's own configuration reads; the failure path records in the
 * checkpoint table's key schema.
 */
import type { Template } from 'aws-cdk-lib/assertions';
import { beforeAll, describe, expect, it } from 'vitest';
import type { z } from 'zod';
import type {
  ItemResponse,
  StageFileResponse,
  StartResponse,
} from '../../functions/population-sweep/handler.js';
import {
  LAMBDA_SERVICE_ERRORS,
  RETRYABLE_ERRORS,
  SWEEP_STAGE_CONCURRENCY,
} from '../../infra/constructs/sweep.js';
import { SWEEP_ENV, SWEEP_EXPORT_MAX_WAIT, SWEEP_PREFIX } from '../../infra/stacks/pipeline-stack.js';
import { ENV, fhirAuthMode, loadConfig } from '../../shared/config.js';
import { FhirUnavailableError } from '../../shared/fhir/errors.js';
import { sweepTableDefinition } from '../../shared/sweep/checkpoint.js';
import { parseSweepConfig, SWEEP_ITEM_MEMORY_MB, type SweepConfig } from '../../shared/sweep/config.js';
import { ExportExpiredError } from '../../shared/sweep/errors.js';
import {
  ExportFileSchema,
  FinishSweepEventSchema,
  PlanSweepEventSchema,
  PollSweepEventSchema,
  StartSweepEventSchema,
  SweepItemSchema,
} from '../../shared/sweep/events.js';
import type { ExportFile } from '../../shared/sweep/steps.js';
import type { SweepItem } from '../../shared/sweep/sweep.js';
import { build, config, NO_BUNDLING, resourcesOf, TEST_MODELS, type Built } from './helpers.js';
import {
  readPath,
  resolve,
  run,
  stateMachineDefinition,
  StateError,
  type Definition,
  type Json,
  type State,
  SAMPLE,
} from './sweep-definition.js';

/** The handler's entry points and the schema each validates its event with. */
const ENTRY_POINTS: Record<string, z.ZodType> = {
  'index.startHandler': StartSweepEventSchema,
  'index.pollHandler': PollSweepEventSchema,
  'index.stageFileHandler': ExportFileSchema,
  'index.planHandler': PlanSweepEventSchema,
  'index.itemHandler': SweepItemSchema,
  'index.finishHandler': FinishSweepEventSchema,
};
const SWEEP_FUNCTIONS = [
  'PopulationSweepStartFunction',
  'PopulationSweepPollFunction',
  'PopulationSweepStageFunction',
  'PopulationSweepPlanFunction',
  'PopulationSweepFunction',
  'PopulationSweepFinishFunction',
];
/** The functions that read or write the checkpoint table (poll and stage do not). */
const TABLE_FUNCTIONS = [
  'PopulationSweepStartFunction',
  'PopulationSweepPlanFunction',
  'PopulationSweepFunction',
  'PopulationSweepFinishFunction',
];

const EXECUTION = { Name: '5d1c0e7a-3f2b-4c9d-8e6f-0a1b2c3d4e5f', Id: 'arn:aws:states:::execution:x' };
const BUCKET = 'fhiranalyticsdata-exports-abc123';
const STATUS_URL = 'https://fhir.example.org/r4/$export-poll-status?_jobId=abc';
const POLL = { polls: 0, throttled: 0, serverErrors: 0, waitedMs: 0 };
const exporting = (attempt: number, polls: number, waitSeconds: number): StartResponse => ({
  sweepId: EXECUTION.Name,
  bucket: BUCKET,
  phase: 'exporting',
  attempt,
  poll: { ...POLL, polls, waitedMs: polls * 3000 },
  statusUrl: STATUS_URL,
  waitMs: waitSeconds * 1000,
  waitSeconds,
});
const exported = (attempt: number): StartResponse => ({
  ...exporting(attempt, 2, 3),
  phase: 'exported',
  filesKey: `${SWEEP_PREFIX}/${EXECUTION.Name}/attempt-${attempt}/files.json`,
  files: 2,
});
const STAGED: StartResponse = {
  sweepId: EXECUTION.Name,
  bucket: BUCKET,
  phase: 'staged',
  attempt: 1,
  poll: { ...POLL, polls: 2, waitedMs: 6000 },
  itemsKey: `${SWEEP_PREFIX}/${EXECUTION.Name}/items.json`,
  items: 1,
  mode: 'incremental',
  resumed: false,
};
const file = (attempt: number, index: number): ExportFile => ({
  sweepId: EXECUTION.Name,
  attempt,
  index,
  type: index === 0 ? 'Patient' : 'Observation',
  url: `https://fhir.example.org/r4/export/abc/${String(index)}.ndjson`,
  requiresAccessToken: true,
  count: 1000,
  partitions: 2,
});
const ITEM: SweepItem = {
  sweepId: EXECUTION.Name,
  partition: 1,
  keys: [`${SWEEP_PREFIX}/${EXECUTION.Name}/attempt-1/f0000/p0001/000001.kndjson`],
  mode: 'incremental',
  lines: 81234,
};
const ITEM_RESPONSE: ItemResponse = {
  sweepId: EXECUTION.Name,
  partition: 1,
  patients: 10,
  written: 7,
  unchanged: 2,
  insufficientData: 1,
  failed: 0,
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

interface Call {
  readonly handler: string;
  readonly payload: Json;
}

/**
 * Runs the state machine from the schedule's input. `answer` gives each handler call's answer
 * (or throws a `StateError`, as the function's error); every payload must parse with its entry
 * point's schema. Returns the calls, the ItemReaders' reads, the failures recorded and the end.
 */
function execute(
  answer: (handler: string, payload: Json, n: number) => Json,
  lists: { files: (key: string) => ExportFile[]; items: SweepItem[] },
): { calls: Call[]; reads: { map: string; reader: Json }[]; recorded: Json[]; end: Json } {
  const calls: Call[] = [];
  const reads: { map: string; reader: Json }[] = [];
  const recorded: Json[] = [];
  const end = run(
    definition.States,
    definition.StartAt,
    scheduleInputs()[0],
    { Execution: EXECUTION },
    {
      task(name, state: State, parameters) {
        if (/:states:::dynamodb:putItem$/.test(state.Resource ?? '')) {
          recorded.push(parameters);
          return {};
        }
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
        const result = answer(handler, Payload, calls.filter((c) => c.handler === handler).length);
        return integrated ? { StatusCode: 200, Payload: result } : result;
      },
      items(name, state, reader) {
        expect(state.ItemReader?.Resource, name).toMatch(/:states:::s3:getObject$/);
        expect(state.ItemReader?.ReaderConfig).toEqual({ InputType: 'JSON' });
        reads.push({ map: name, reader });
        return name === 'Stage' ? lists.files((reader as { Key: string }).Key) : lists.items;
      },
    },
  );
  return { calls, reads, recorded, end };
}

const attemptOf = (key: string): number => Number(/attempt-(\d+)/.exec(key)?.[1] ?? 0);
const FILES = (key: string): ExportFile[] => [file(attemptOf(key), 0), file(attemptOf(key), 1)];
const STAGE_ANSWER = (payload: Json): StageFileResponse => ({
  sweepId: EXECUTION.Name,
  index: (payload as ExportFile).index,
  lines: 1000,
});

describe('sweep state machine: the payloads are the handler contract', () => {
  it('runs begin → poll until exported (Wait/Choice) → stage each file → plan → every item → finish', () => {
    // Act: the export answers "still running" once, then its manifest.
    const { calls, reads } = execute(
      (handler, payload, n) => {
        if (handler === 'index.startHandler') return exporting(1, 0, 1);
        if (handler === 'index.pollHandler') return n === 1 ? exporting(1, 1, 3) : exported(1);
        if (handler === 'index.stageFileHandler') return STAGE_ANSWER(payload);
        if (handler === 'index.planHandler') return STAGED;
        if (handler === 'index.itemHandler') return ITEM_RESPONSE;
        return { sweepId: EXECUTION.Name };
      },
      { files: FILES, items: [ITEM] },
    );

    // Assess
    expect(calls.map((c) => c.handler)).toEqual([
      'index.startHandler',
      'index.pollHandler',
      'index.pollHandler',
      'index.stageFileHandler',
      'index.stageFileHandler',
      'index.planHandler',
      'index.itemHandler',
      'index.finishHandler',
    ]);
    // The schedule's definition, the execution name as the sweep id (a redrive resumes it).
    expect(calls[0]?.payload).toEqual({
      definition: { name: 'nightly', cohort: { kind: 'group', group: 'g1' }, since: 'incremental' },
      sweepId: EXECUTION.Name,
      attempt: 1,
    });
    // Each step gets the state the one before answered.
    expect(calls[1]?.payload).toEqual(exporting(1, 0, 1));
    expect(calls[2]?.payload).toEqual(exporting(1, 1, 3));
    expect(calls.slice(3, 5).map((c) => c.payload)).toEqual(FILES(exported(1).filesKey ?? ''));
    expect(calls[5]?.payload).toEqual(exported(1));
    expect(reads).toEqual([
      { map: 'Stage', reader: { Bucket: BUCKET, Key: exported(1).filesKey } },
      { map: 'Items', reader: { Bucket: BUCKET, Key: STAGED.itemsKey } },
    ]);
    expect(calls[6]?.payload).toEqual(ITEM);
    expect(calls[7]?.payload).toEqual({ sweepId: STAGED.sweepId });
  });

  it('goes from a staged begin (resumed, or paged search) straight to the items', () => {
    const { calls } = execute(
      (handler) =>
        handler === 'index.startHandler'
          ? { ...STAGED, resumed: true }
          : handler === 'index.itemHandler'
            ? ITEM_RESPONSE
            : { sweepId: EXECUTION.Name },
      { files: FILES, items: [ITEM] },
    );
    expect(calls.map((c) => c.handler)).toEqual([
      'index.startHandler',
      'index.itemHandler',
      'index.finishHandler',
    ]);
  });

  it('kicks the export off again when its files expired (attempt + 1, the polls so far), then fails after the bound', () => {
    // Arrange: attempt 1's second file expires; StageFile throws, Plan finds the marker.
    const answer =
      (expireAttempts: number) =>
      (handler: string, payload: Json): Json => {
        if (handler === 'index.startHandler')
          return exporting((payload as { attempt: number }).attempt, 0, 1);
        if (handler === 'index.pollHandler') return exported((payload as StartResponse).attempt);
        if (handler === 'index.stageFileHandler') {
          const f = payload as ExportFile;
          if (f.attempt <= expireAttempts && f.index === 1)
            throw new StateError(ExportExpiredError.name, '410');
          return STAGE_ANSWER(payload);
        }
        if (handler === 'index.planHandler') {
          if ((payload as StartResponse).attempt <= expireAttempts) {
            throw new StateError(ExportExpiredError.name, '{"errorMessage":"export files expired (410)"}');
          }
          return STAGED;
        }
        return handler === 'index.itemHandler' ? ITEM_RESPONSE : { sweepId: EXECUTION.Name };
      };

    // Act
    const once = execute(answer(1), { files: FILES, items: [ITEM] });
    const always = execute(answer(99), { files: FILES, items: [ITEM] });

    // Assess: one re-kick, then the items.
    const begins = once.calls.filter((c) => c.handler === 'index.startHandler').map((c) => c.payload);
    expect(begins).toEqual([
      expect.objectContaining({ attempt: 1 }),
      // The polls so far travel with the re-kick: the bound on total wait spans both.
      { ...(begins[0] as object), attempt: 2, poll: exported(1).poll },
    ]);
    expect(once.calls.map((c) => c.handler).slice(-2)).toEqual(['index.itemHandler', 'index.finishHandler']);
    expect(once.recorded).toEqual([]);
    // Two kick-offs, then the failure is recorded with its reason and the execution fails.
    expect(always.calls.filter((c) => c.handler === 'index.startHandler')).toHaveLength(2);
    expect(always.calls.some((c) => c.handler === 'index.itemHandler')).toBe(false);
    expect(always.recorded).toHaveLength(1);
    expect((always.end as { failure: { Error: string } }).failure.Error).toBe(ExportExpiredError.name);
  });

  it('gives every sweep function one of the six entry points', () => {
    const sweepHandlers = [...handlers].filter(([id]) => SWEEP_FUNCTIONS.some((f) => id.startsWith(f)));
    expect(sweepHandlers.map(([, h]) => h).sort()).toEqual(Object.keys(ENTRY_POINTS).sort());
  });

  it('polls in a Wait/Choice loop: Phase → WaitForExport (seconds from the state) → Poll → Phase', () => {
    const states = definition.States;
    expect(states.Begin?.Next).toBe('Phase');
    expect(states.Phase?.Type).toBe('Choice');
    const next = (phase: string): string | undefined =>
      states.Phase?.Choices?.find((c) => c.StringEquals === phase)?.Next ?? undefined;
    expect(next('exporting')).toBe('WaitForExport');
    expect(next('exported')).toBe('Stage');
    expect(states.Phase?.Default).toBe('Items');
    expect(states.WaitForExport).toMatchObject({
      Type: 'Wait',
      SecondsPath: '$.sweep.Payload.waitSeconds',
      Next: 'Poll',
    });
    expect(states.Poll?.Next).toBe('Phase');
    expect(states.Plan?.Next).toBe('Items');
    expect(states.Items?.Next).toBe('Finish');
  });

  it('fans out as two Distributed Maps: the export files (files.json), then the items (items.json)', () => {
    const stage = definition.States.Stage;
    const items = definition.States.Items;
    for (const map of [stage, items]) {
      expect(map?.Type).toBe('Map');
      expect(map?.ItemProcessor?.ProcessorConfig.Mode).toBe('DISTRIBUTED');
      expect(map?.ToleratedFailurePercentage ?? 0).toBe(0);
    }
    expect(stage?.ItemReader?.Parameters).toEqual({
      'Bucket.$': '$.sweep.Payload.bucket',
      'Key.$': '$.sweep.Payload.filesKey',
    });
    expect(items?.ItemReader?.Parameters).toEqual({
      'Bucket.$': '$.sweep.Payload.bucket',
      'Key.$': '$.sweep.Payload.itemsKey',
    });
    // Staging protects the FHIR server; the item worker's reserved concurrency matches its map.
    expect(stage?.MaxConcurrency).toBe(SWEEP_STAGE_CONCURRENCY);
    expect(items?.MaxConcurrency).toBe(8);
    const reserved = (prefix: string): unknown =>
      resourcesOf([pipeline], 'AWS::Lambda::Function').find(([id]) => id.startsWith(prefix))?.[1]
        .ReservedConcurrentExecutions;
    expect(reserved('PopulationSweepStageFunction')).toBe(SWEEP_STAGE_CONCURRENCY);
    expect(reserved('PopulationSweepFunction')).toBe(8);
  });

  it('retries Lambda service errors and the retryable handler errors with backoff, then catches', () => {
    expect(RETRYABLE_ERRORS).toEqual(
      expect.arrayContaining([new FhirUnavailableError('x', { retryable: true }).name]),
    );
    // The same files stay expired: the state machine kicks the export off again instead.
    expect(RETRYABLE_ERRORS).not.toContain(new ExportExpiredError('x', 410).name);
    const stageFile = definition.States.Stage?.ItemProcessor?.States.StageFile;
    const item = definition.States.Items?.ItemProcessor?.States.Item;
    const { Begin, Poll, Plan, Finish } = definition.States;
    for (const task of [Begin, Poll, Plan, Finish, stageFile, item]) {
      const retried = (task?.Retry ?? []).flatMap((r) => r.ErrorEquals);
      expect(retried).toEqual(expect.arrayContaining([...LAMBDA_SERVICE_ERRORS, ...RETRYABLE_ERRORS]));
      expect(retried).not.toContain('States.ALL');
      for (const r of task?.Retry ?? []) expect(r.BackoffRate).toBeGreaterThan(1);
    }
    for (const task of [stageFile, item]) {
      expect(task?.Retry?.flatMap((r) => r.ErrorEquals)).toContain('Sandbox.Timedout');
    }
    for (const name of ['Begin', 'Poll', 'Stage', 'Items', 'Finish']) {
      expect(definition.States[name]?.Catch, name).toEqual([
        { ErrorEquals: ['States.ALL'], ResultPath: '$.failure', Next: 'RecordFailure' },
      ]);
    }
    // Expired files: the file's catch lets the map finish; Plan's catch re-kicks (bounded).
    expect(stageFile?.Catch).toEqual([
      { ErrorEquals: [ExportExpiredError.name], ResultPath: null, Next: 'FileExpired' },
    ]);
    expect(definition.States.Plan?.Catch).toEqual([
      { ErrorEquals: [ExportExpiredError.name], ResultPath: '$.failure', Next: 'ExportExpired' },
      { ErrorEquals: ['States.ALL'], ResultPath: '$.failure', Next: 'RecordFailure' },
    ]);
    expect(definition.States.ExportExpired).toMatchObject({
      Type: 'Choice',
      Choices: [{ Variable: '$.sweep.Payload.attempt', NumericLessThan: 2, Next: 'Rekick' }],
      Default: 'RecordFailure',
    });
    expect(definition.States.Rekick?.Next).toBe('Begin');
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
    expect(envs).toHaveLength(6);
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
    expect(envs).toHaveLength(6);
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
          TABLE_FUNCTIONS.includes(fn) ? ['dynamodb:GetItem', 'dynamodb:PutItem', 'dynamodb:Query'] : [],
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
