/**
 * The deployed sweep is the sweep functions/population-sweep implements: the synthesized state
 * machine is run on placeholder values from the schedule's input to the end — the export polled
 * in a Wait/Choice loop, its files staged by one Distributed Map, the items scored by another,
 * expired files kicked off again — and every Lambda task's Payload must parse with the zod
 * schema of the entry point its function's Handler names (what the handler's `parseEvent` does
 * in AWS); each map reads its list where the step before says it is; the failure path records
 * in the checkpoint table's key schema. (The functions' environment and grants:
 * sweep-functions.test.ts.)
 */
import type { Template } from 'aws-cdk-lib/assertions';
import { beforeAll, describe, expect, it } from 'vitest';
import type { StartResponse } from '../../functions/population-sweep/handler.js';
import {
  LAMBDA_SERVICE_ERRORS,
  RETRYABLE_ERRORS,
  SWEEP_STAGE_CONCURRENCY,
} from '../../infra/constructs/sweep.js';
import { FhirUnavailableError } from '../../shared/fhir/errors.js';
import { sweepTableDefinition } from '../../shared/sweep/checkpoint.js';
import { ExportExpiredError, ExportTimeoutError } from '../../shared/sweep/errors.js';
import { DEFAULT_MAX_SEARCH_CALLS } from '../../shared/sweep/search-steps.js';
import { DEFAULT_MAX_POLLS, DEFAULT_MIN_POLL_SECONDS, type StageFileItem } from '../../shared/sweep/steps.js';
import { build, config, NO_BUNDLING, resourcesOf, TEST_MODELS } from './helpers.js';
import {
  readPath,
  resolve,
  stateMachineDefinition,
  StateError,
  type Definition,
  type Json,
} from './sweep-definition.js';
import {
  BUCKET,
  ENTRY_POINTS,
  execute as executeOn,
  EXECUTION,
  exported,
  exporting,
  FILES,
  ITEM,
  ITEM_RESPONSE,
  scheduleInputs as scheduleInputsOf,
  STAGE_ANSWER,
  STAGED,
  SWEEP_FUNCTIONS,
} from './sweep-fixtures.js';

let pipeline: Template;
let definition: Definition;
/** Lambda logical id → its Handler. */
let handlers: Map<string, string>;

beforeAll(() => {
  pipeline = build(config(), { models: TEST_MODELS, appProps: NO_BUNDLING }).templates.pipeline;
  definition = stateMachineDefinition(pipeline);
  handlers = new Map(
    resourcesOf([pipeline], 'AWS::Lambda::Function').map(([id, f]) => [id, f.Handler as string]),
  );
});

const execute = (
  answer: Parameters<typeof executeOn>[1],
  lists: Parameters<typeof executeOn>[2],
): ReturnType<typeof executeOn> => executeOn(pipeline, answer, lists);
const scheduleInputs = (): Json[] => scheduleInputsOf(pipeline);

describe('sweep state machine: the payloads are the handler contract', () => {
  it('runs begin → poll until exported (Wait/Choice) → stage each file → plan → every item → finish', () => {
    // Act: the export answers "still running" once, then its manifest.
    const { calls, reads, results } = execute(
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
      minPollSeconds: DEFAULT_MIN_POLL_SECONDS,
      maxPolls: DEFAULT_MAX_POLLS,
      maxSearchCalls: DEFAULT_MAX_SEARCH_CALLS,
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
    // Each map child's output is {}: what a map gathers stays a few bytes per child.
    expect(results).toEqual({ Stage: [{}, {}], Items: [{}] });
  });

  it("starts the poll loop with its floor and bound; the Wait takes the state's whole seconds; past the bound the failure is recorded", () => {
    // Act: an export that never completes; the handler fails its poll past the bound.
    const polls: Json[] = [];
    const { calls, recorded, end } = execute(
      (handler, payload, n) => {
        if (handler === 'index.startHandler') return exporting(1, 0, DEFAULT_MIN_POLL_SECONDS);
        if (handler !== 'index.pollHandler') throw new Error(`${handler} after a failed poll`);
        polls.push(payload);
        if (n === 3)
          throw new StateError(ExportTimeoutError.name, 'export not complete after 3 polls (bound 3)');
        return exporting(1, n, DEFAULT_MIN_POLL_SECONDS);
      },
      { files: FILES, items: [ITEM] },
    );

    // Assess: every Begin (and Rekick) passes the floor; the Wait reads the state's waitSeconds.
    for (const name of ['Prepare', 'Rekick']) {
      expect(definition.States[name]?.Parameters, name).toMatchObject({
        minPollSeconds: DEFAULT_MIN_POLL_SECONDS,
        maxPolls: DEFAULT_MAX_POLLS,
      });
    }
    expect(calls[0]?.payload).toMatchObject({ minPollSeconds: DEFAULT_MIN_POLL_SECONDS });
    expect(definition.States.WaitForExport).toMatchObject({ SecondsPath: '$.sweep.Payload.waitSeconds' });
    expect(definition.States.WaitForExport).not.toHaveProperty('Seconds');
    expect(polls).toEqual([1, 2, 3].map((n) => exporting(1, n - 1, DEFAULT_MIN_POLL_SECONDS)));
    expect(recorded).toHaveLength(1);
    expect((end as { failure: { Error: string } }).failure.Error).toBe(ExportTimeoutError.name);
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
          const f = payload as StageFileItem;
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

  it('gives every sweep function one of the seven entry points', () => {
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
    // A child's output is {} (OutputPath null), caught or not: the gathered results stay small.
    const stageStates = stage?.ItemProcessor?.States ?? {};
    expect(Object.keys(stageStates).sort()).toEqual(['FileExpired', 'StageFile']);
    for (const s of [...Object.values(stageStates), items?.ItemProcessor?.States.Item])
      expect(s?.OutputPath).toBeNull();
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
