/**
 * What the sweep's infra tests share: the handler's entry points and their schemas, sample
 * answers of each step, and `execute`, which runs the synthesized state machine from the
 * schedule's input with the visitor of sweep-definition.ts, checking every Lambda payload
 * against its entry point's schema.
 */
import type { Template } from 'aws-cdk-lib/assertions';
import { expect } from 'vitest';
import type { z } from 'zod';
import type {
  ItemResponse,
  StageFileResponse,
  StartResponse,
} from '../../functions/population-sweep/handler.js';
import { SWEEP_PREFIX } from '../../infra/stacks/pipeline-stack.js';
import {
  FinishSweepEventSchema,
  PlanSweepEventSchema,
  PollSweepEventSchema,
  SearchSweepEventSchema,
  StageFileItemSchema,
  StartSweepEventSchema,
  SweepItemSchema,
} from '../../shared/sweep/events.js';
import { DEFAULT_MAX_SEARCH_CALLS } from '../../shared/sweep/search-steps.js';
import type { StageFileItem } from '../../shared/sweep/steps.js';
import type { SweepItem } from '../../shared/sweep/sweep.js';
import { resourcesOf } from './helpers.js';
import { run, stateMachineDefinition, type Json, type State } from './sweep-definition.js';

/** The handler's entry points and the schema each validates its event with. */
export const ENTRY_POINTS: Record<string, z.ZodType> = {
  'index.startHandler': StartSweepEventSchema,
  'index.pollHandler': PollSweepEventSchema,
  'index.searchHandler': SearchSweepEventSchema,
  'index.stageFileHandler': StageFileItemSchema,
  'index.planHandler': PlanSweepEventSchema,
  'index.itemHandler': SweepItemSchema,
  'index.finishHandler': FinishSweepEventSchema,
};
export const SWEEP_FUNCTIONS = [
  'PopulationSweepStartFunction',
  'PopulationSweepPollFunction',
  'PopulationSweepSearchFunction',
  'PopulationSweepStageFunction',
  'PopulationSweepPlanFunction',
  'PopulationSweepFunction',
  'PopulationSweepFinishFunction',
];
/** The functions that read or write the checkpoint table (poll and stage do not). */
export const TABLE_FUNCTIONS = [
  'PopulationSweepStartFunction',
  'PopulationSweepSearchFunction',
  'PopulationSweepPlanFunction',
  'PopulationSweepFunction',
  'PopulationSweepFinishFunction',
];

export const EXECUTION = { Name: '5d1c0e7a-3f2b-4c9d-8e6f-0a1b2c3d4e5f', Id: 'arn:aws:states:::execution:x' };
export const BUCKET = 'fhiranalyticsdata-exports-abc123';
export const STATUS_URL = 'https://fhir.example.org/r4/$export-poll-status?_jobId=abc';
export const POLL = { polls: 0, throttled: 0, serverErrors: 0, waitedMs: 0 };
export const exporting = (attempt: number, polls: number, waitSeconds: number): StartResponse => ({
  sweepId: EXECUTION.Name,
  bucket: BUCKET,
  phase: 'exporting',
  attempt,
  poll: { ...POLL, polls, waitedMs: polls * 3000 },
  statusUrl: STATUS_URL,
  waitMs: waitSeconds * 1000,
  waitSeconds,
});
export const exported = (attempt: number): StartResponse => ({
  ...exporting(attempt, 2, 3),
  phase: 'exported',
  filesKey: `${SWEEP_PREFIX}/${EXECUTION.Name}/attempt-${attempt}/files.json`,
  files: 2,
});
export const STAGED: StartResponse = {
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
/** A paged search in progress after `calls` Search calls (the fallback: no `$export`). */
export const searching = (calls: number): StartResponse => ({
  sweepId: EXECUTION.Name,
  bucket: BUCKET,
  phase: 'searching',
  attempt: 0,
  poll: POLL,
  searchKey: `${SWEEP_PREFIX}/${EXECUTION.Name}/search/cursor.json`,
  searchCalls: calls,
  maxSearchCalls: DEFAULT_MAX_SEARCH_CALLS,
});
export const file = (attempt: number, index: number): StageFileItem => ({
  sweepId: EXECUTION.Name,
  attempt,
  index,
});
export const ITEM: SweepItem = {
  sweepId: EXECUTION.Name,
  partition: 1,
  keysKey: `${SWEEP_PREFIX}/${EXECUTION.Name}/attempt-1/items/p0001.json`,
  mode: 'incremental',
  lines: 81234,
};
export const ITEM_RESPONSE: ItemResponse = {
  sweepId: EXECUTION.Name,
  partition: 1,
  patients: 10,
  written: 7,
  unchanged: 2,
  insufficientData: 1,
  failed: 0,
};

/** The Handler of the function a Lambda task invokes (`getatt:<id>.Arn`). */
function handlerOf(handlers: ReadonlyMap<string, string>, functionName: Json): string {
  const id = /^getatt:(\w+)\.Arn$/.exec(String(functionName))?.[1];
  const handler = id ? handlers.get(id) : undefined;
  if (!handler) throw new Error(`a task invokes ${String(functionName)}, no function of this stack`);
  return handler;
}

/** What EventBridge Scheduler sends, parsed from the one schedule's target. */
export function scheduleInputs(pipeline: Template): Json[] {
  return resourcesOf([pipeline], 'AWS::Scheduler::Schedule').map(
    ([, s]) => JSON.parse((s.Target as { Input: string }).Input) as Json,
  );
}

export interface Call {
  readonly handler: string;
  readonly payload: Json;
}

/**
 * Runs the state machine from the schedule's input. `answer` gives each handler call's answer
 * (or throws a `StateError`, as the function's error); every payload must parse with its entry
 * point's schema. Returns the calls, the ItemReaders' reads, the failures recorded and the end.
 */
export function execute(
  pipeline: Template,
  answer: (handler: string, payload: Json, n: number) => Json,
  lists: { files: (key: string) => StageFileItem[]; items: SweepItem[] },
): {
  calls: Call[];
  reads: { map: string; reader: Json }[];
  recorded: Json[];
  /** Each Distributed Map's gathered child outputs. */
  results: Record<string, Json[]>;
  end: Json;
} {
  const calls: Call[] = [];
  const results: Record<string, Json[]> = {};
  const reads: { map: string; reader: Json }[] = [];
  const recorded: Json[] = [];
  const definition = stateMachineDefinition(pipeline);
  const handlers = new Map(
    resourcesOf([pipeline], 'AWS::Lambda::Function').map(([id, f]) => [id, f.Handler as string]),
  );
  const end = run(
    definition.States,
    definition.StartAt,
    scheduleInputs(pipeline)[0],
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
        const handler = handlerOf(handlers, FunctionName);
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
      mapResults(name, gathered) {
        results[name] = gathered;
      },
    },
  );
  return { calls, reads, recorded, results, end };
}

const attemptOf = (key: string): number => Number(/attempt-(\d+)/.exec(key)?.[1] ?? 0);
export const FILES = (key: string): StageFileItem[] => [file(attemptOf(key), 0), file(attemptOf(key), 1)];
export const STAGE_ANSWER = (payload: Json): StageFileResponse => ({
  sweepId: EXECUTION.Name,
  index: (payload as StageFileItem).index,
  lines: 1000,
});
