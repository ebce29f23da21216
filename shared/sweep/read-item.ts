/**
 * Reading an item's staged lines (worker side): S3 objects of keyed NDJSON → an external
 * sorter, ready to be grouped by patient.
 */
import { ExternalSorter } from './external-sort.js';
import { SweepError } from './errors.js';
import { getJson, getObjectStream, lines } from './staging.js';
import type { SweepContext, SweepItem } from './sweep.js';

/**
 * An item's staged lines, read from S3 (the parts its key list names) into an external sorter
 * (runs spilled to `tmpDir`), ready for `sorted()`. The caller disposes of it.
 */
export async function readItem(ctx: SweepContext, item: SweepItem): Promise<ExternalSorter> {
  const keys = item.keys ?? (await getJson<string[]>(ctx.store, item.keysKey));
  if (!keys) throw new SweepError(`sweep ${item.sweepId}: partition ${item.partition} has no key list`);
  const sorter = new ExternalSorter({
    tmpDir: ctx.tmpDir,
    ...(ctx.runBytes ? { runBytes: ctx.runBytes } : {}),
  });
  try {
    for (const key of keys) {
      for await (const line of lines(await getObjectStream(ctx.store, key))) await sorter.add(line);
    }
    return sorter;
  } catch (err) {
    await sorter.dispose();
    throw err;
  }
}
