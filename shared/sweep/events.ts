/**
 * The shapes the population-sweep functions receive (Step Functions passes them as the
 * Lambda event): begin (from EventBridge Scheduler through the state machine, or a re-kick),
 * poll, search and plan (the sweep's state, steps.ts and search-steps.ts), one export file and one item (from the two
 * Distributed Maps), finish.
 */
import * as z from 'zod';
import { SweepDefinitionSchema } from './definition.js';

const SWEEP_ID = /^[A-Za-z0-9_.-]{1,128}$/;
const count = z.number().int().nonnegative();
const key = z.string().min(1).max(1024);

const ms = z.number().nonnegative();
const PollStatsSchema = z.object({ polls: count, throttled: count, serverErrors: count, waitedMs: ms });

export const StartSweepEventSchema = z.object({
  definition: SweepDefinitionSchema,
  /** Resume a sweep (a Step Functions retry or redrive passes the id it got first). */
  sweepId: z.string().regex(SWEEP_ID).optional(),
  /** The kick-off this is: 1 (default), or the next after the export's files expired. */
  attempt: z.number().int().min(1).max(10).optional(),
  /** The earlier kick-offs' polls (the bound on total wait holds across them). */
  poll: PollStatsSchema.optional(),
  /**
   * The Wait/Choice loop's floor between polls, in seconds, and its bound on polls (the state
   * machine passes both; defaults `DEFAULT_MIN_POLL_SECONDS`, `DEFAULT_MAX_POLLS`).
   */
  minPollSeconds: z.number().int().min(1).max(3600).optional(),
  maxPolls: z.number().int().min(1).max(10_000).optional(),
  /** The Search loop's bound on calls (the paged-search fallback; default `DEFAULT_MAX_SEARCH_CALLS`). */
  maxSearchCalls: z.number().int().min(1).max(10_000).optional(),
});
export type StartSweepEvent = z.infer<typeof StartSweepEventSchema>;

/** The sweep's state between steps (`SweepState`). */
export const SweepStateSchema = z.object({
  sweepId: z.string().regex(SWEEP_ID),
  bucket: z.string().min(3).max(63),
  phase: z.enum(['exporting', 'searching', 'exported', 'staged']),
  attempt: count,
  poll: PollStatsSchema,
  statusUrl: z.url().optional(),
  waitMs: ms.optional(),
  waitSeconds: count.optional(),
  serverErrorsInARow: count.optional(),
  minPollSeconds: z.number().int().min(1).max(3600).optional(),
  maxPolls: z.number().int().min(1).max(10_000).optional(),
  searchKey: key.optional(),
  searchCalls: count.optional(),
  maxSearchCalls: z.number().int().min(1).max(10_000).optional(),
  filesKey: key.optional(),
  files: count.optional(),
  itemsKey: key.optional(),
  items: count.optional(),
  mode: z.enum(['full', 'incremental']).optional(),
  resumed: z.boolean().optional(),
});

/** Poll: an export in progress. */
export const PollSweepEventSchema = SweepStateSchema.extend({
  phase: z.literal('exporting'),
  statusUrl: z.url(),
});

/** Search: a paged search in progress (its cursor in S3). */
export const SearchSweepEventSchema = SweepStateSchema.extend({
  phase: z.literal('searching'),
  searchKey: key,
});

/** Plan: an export whose files were staged. */
export const PlanSweepEventSchema = SweepStateSchema.extend({ phase: z.literal('exported'), filesKey: key });

/** One Stage map item (a line of `files.json`; no URL: the file's entry is read from S3); see `StageFileItem`. */
export const StageFileItemSchema = z.strictObject({
  sweepId: z.string().regex(SWEEP_ID),
  attempt: z.number().int().min(1),
  index: count,
});

/**
 * One Distributed Map item (a line of `items.json`); see `SweepItem`. An item of an execution
 * started before key lists carries its part keys inline (`keys`) instead of `keysKey`: both are
 * accepted, so a deploy does not break the executions in flight.
 */
export const SweepItemSchema = z
  .object({
    sweepId: z.string().regex(SWEEP_ID),
    partition: z.number().int().nonnegative(),
    keysKey: key.optional(),
    keys: z.array(key).optional(),
    mode: z.enum(['full', 'incremental']),
    lines: z.number().int().nonnegative(),
  })
  .refine((i) => (i.keysKey === undefined) !== (i.keys === undefined), {
    error: 'an item names its parts by keysKey or (older executions) keys, one of them',
    path: ['keysKey'],
  })
  .transform(({ keysKey, keys, ...rest }) => ({
    ...rest,
    keysKey: keysKey ?? '',
    ...(keys ? { keys } : {}),
  }));

export const FinishSweepEventSchema = z.object({ sweepId: z.string().regex(SWEEP_ID) });
