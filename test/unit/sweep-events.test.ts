/**
 * The sample events in events/population-sweep are what the state machine sends each entry
 * point: each parses with the zod schema its handler validates with.
 */
import { readdirSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { z } from 'zod';
import { ROOT } from '../../local/stack.js';
import {
  FinishSweepEventSchema,
  PlanSweepEventSchema,
  PollSweepEventSchema,
  StageFileItemSchema,
  StartSweepEventSchema,
  SweepItemSchema,
} from '../../shared/sweep/events.js';

const DIR = path.join(ROOT, 'events', 'population-sweep');
const SCHEMA_OF: [RegExp, z.ZodType][] = [
  [/^start-/, StartSweepEventSchema],
  [/^poll\.json$/, PollSweepEventSchema],
  [/^stage-file\.json$/, StageFileItemSchema],
  [/^plan\.json$/, PlanSweepEventSchema],
  [/^item\.json$/, SweepItemSchema],
  [/^finish\.json$/, FinishSweepEventSchema],
];

describe('population-sweep sample events', () => {
  const files = readdirSync(DIR).filter((f) => f.endsWith('.json'));

  it('has a sample for every entry point', () => {
    for (const [pattern] of SCHEMA_OF)
      expect(
        files.some((f) => pattern.test(f)),
        String(pattern),
      ).toBe(true);
  });

  it.each(files)('%s parses with its entry point schema', (file) => {
    const schema = SCHEMA_OF.find(([pattern]) => pattern.test(file))?.[1];
    expect(schema, `${file}: no entry point`).toBeDefined();
    const parsed = schema?.safeParse(JSON.parse(readFileSync(path.join(DIR, file), 'utf8')));
    expect(parsed?.error?.issues ?? []).toEqual([]);
  });

  it('refuses a poll without an export in progress, naming the path', () => {
    const sample = JSON.parse(readFileSync(path.join(DIR, 'poll.json'), 'utf8')) as Record<string, unknown>;
    const parsed = PollSweepEventSchema.safeParse({ ...sample, phase: 'exported' });
    expect(parsed.error?.issues.map((i) => i.path.join('.'))).toEqual(['phase']);
  });
});
