/**
 * The paged-search fallback in the deployed state machine: Begin answers `searching`, the
 * Phase Choice sends it to Search, which loops (Search → Phase) until it answers `staged`, then
 * the Items map and Finish as after an export; past the loop's bound Search fails and the
 * failure is recorded. The synthesized definition is run with the visitor of
 * sweep-definition.ts, every payload parsed by its entry point's schema.
 */
import type { Template } from 'aws-cdk-lib/assertions';
import { beforeAll, describe, expect, it } from 'vitest';
import { LAMBDA_SERVICE_ERRORS, RETRYABLE_ERRORS } from '../../infra/constructs/sweep.js';
import { SearchLimitError } from '../../shared/sweep/errors.js';
import { DEFAULT_MAX_SEARCH_CALLS } from '../../shared/sweep/search-steps.js';
import { DEFAULT_MAX_POLLS } from '../../shared/sweep/steps.js';
import { build, config, NO_BUNDLING, TEST_MODELS } from './helpers.js';
import { stateMachineDefinition, StateError, type Definition } from './sweep-definition.js';
import {
  execute,
  EXECUTION,
  FILES,
  ITEM,
  ITEM_RESPONSE,
  searching,
  STAGED,
  SWEEP_FUNCTIONS,
} from './sweep-fixtures.js';

let pipeline: Template;
let definition: Definition;

beforeAll(() => {
  pipeline = build(config(), { models: TEST_MODELS, appProps: NO_BUNDLING }).templates.pipeline;
  definition = stateMachineDefinition(pipeline);
});

/** Events a standard execution's history may hold. */
const HISTORY_LIMIT = 25_000;
/** Events per state visit: a Task (entered, scheduled, started, succeeded, exited), a Choice or a Wait (entered, exited). */
const EVENTS = { Task: 5, Choice: 2, Wait: 2 } as const;

describe('sweep state machine: the paged-search loop', () => {
  it('runs begin (searching) → Search until staged → every item → finish, each Search given the state before', () => {
    // Act: three Search calls, the last one staged.
    const { calls, reads } = execute(
      pipeline,
      (handler, _payload, n) => {
        if (handler === 'index.startHandler') return searching(0);
        if (handler === 'index.searchHandler') return n < 3 ? searching(n) : { ...STAGED, attempt: 0 };
        if (handler === 'index.itemHandler') return ITEM_RESPONSE;
        return { sweepId: EXECUTION.Name };
      },
      { files: FILES, items: [ITEM] },
    );

    // Assess
    expect(calls.map((c) => c.handler)).toEqual([
      'index.startHandler',
      'index.searchHandler',
      'index.searchHandler',
      'index.searchHandler',
      'index.itemHandler',
      'index.finishHandler',
    ]);
    expect(calls[0]?.payload).toMatchObject({ maxSearchCalls: DEFAULT_MAX_SEARCH_CALLS });
    expect(calls.slice(1, 4).map((c) => c.payload)).toEqual([searching(0), searching(1), searching(2)]);
    // The state names the cursor only: no page URL, no patient data in the execution's history.
    expect(JSON.stringify(calls.slice(1, 4))).not.toContain('://');
    // No export map: the items are read where the last Search call says.
    expect(reads).toEqual([{ map: 'Items', reader: { Bucket: STAGED.bucket, Key: STAGED.itemsKey } }]);
  });

  it('is bounded: past maxSearchCalls Search fails, the failure is recorded, and the bound keeps the history under 25,000 events', () => {
    // Act: a search that never ends; the handler fails its call past the bound.
    const { calls, recorded, end } = execute(
      pipeline,
      (handler, _payload, n) => {
        if (handler === 'index.startHandler') return searching(0);
        if (handler !== 'index.searchHandler') throw new Error(`${handler} after a failed search`);
        if (n === 4)
          throw new StateError(SearchLimitError.name, 'search not complete after 3 calls (bound 3)');
        return searching(n);
      },
      { files: FILES, items: [ITEM] },
    );

    // Assess
    expect(calls.filter((c) => c.handler === 'index.searchHandler')).toHaveLength(4);
    expect(recorded).toHaveLength(1);
    expect((end as { failure: { Error: string } }).failure.Error).toBe(SearchLimitError.name);
    // The loop is Search (a Task) → Phase (a Choice) → Search; the poll loop Phase → Wait → Poll.
    const states = definition.States;
    expect(states.Phase?.Choices?.find((c) => c.StringEquals === 'searching')?.Next).toBe('Search');
    expect(states.Search).toMatchObject({ Type: 'Task', Next: 'Phase' });
    for (const name of ['Prepare', 'Rekick'])
      expect(states[name]?.Parameters, name).toMatchObject({ maxSearchCalls: DEFAULT_MAX_SEARCH_CALLS });
    const perSearch = EVENTS.Task + EVENTS.Choice;
    const perPoll = EVENTS.Wait + EVENTS.Task + EVENTS.Choice;
    // Both loops at their bounds (an export kicked off, then a fallback), with room for the rest.
    expect(perSearch * DEFAULT_MAX_SEARCH_CALLS + perPoll * DEFAULT_MAX_POLLS).toBeLessThan(
      HISTORY_LIMIT - 4000,
    );
  });

  it('retries Search on Lambda service errors, the retryable errors and a timed-out call (it resumes from its cursor), then catches', () => {
    const search = definition.States.Search;
    const retried = (search?.Retry ?? []).flatMap((r) => r.ErrorEquals);
    expect(retried).toEqual(
      expect.arrayContaining([...LAMBDA_SERVICE_ERRORS, ...RETRYABLE_ERRORS, 'Sandbox.Timedout']),
    );
    expect(retried).not.toContain('States.ALL');
    expect(retried).not.toContain(SearchLimitError.name);
    expect(search?.Catch).toEqual([
      { ErrorEquals: ['States.ALL'], ResultPath: '$.failure', Next: 'RecordFailure' },
    ]);
    expect(SWEEP_FUNCTIONS).toContain('PopulationSweepSearchFunction');
  });
});
