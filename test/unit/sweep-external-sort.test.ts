import { readdir } from 'node:fs/promises';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ExternalSorter, groupByKey } from '../../shared/sweep/external-sort.js';

const dirs: string[] = [];
afterEach(async () => {
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

describe('ExternalSorter', () => {
  it('spills sorted runs past runBytes and merges them into one sorted stream, every line once', async () => {
    // Prepare: 3,000 lines of 300 patients in scrambled order, runs of ~4 KB.
    const tmp = await mkdtemp(path.join(tmpdir(), 'sort-test-'));
    dirs.push(tmp);
    const sorter = new ExternalSorter({ tmpDir: tmp, runBytes: 4096 });
    const lines: string[] = [];
    for (let i = 0; i < 3000; i++) {
      const patient = `p${String((i * 7919) % 300).padStart(4, '0')}`;
      lines.push(`${patient}\t{"resourceType":"Observation","id":"o${i}"}`);
    }
    // Act
    for (const l of lines) await sorter.add(l);
    const sorted = await collect(sorter.sorted());
    // Assess
    expect(sorter.spilled).toBeGreaterThan(10);
    expect(sorted).toHaveLength(3000);
    expect(sorted.map((s) => s[1]).sort()).toEqual([...lines].sort());
    for (let i = 1; i < sorted.length; i++)
      expect((sorted[i - 1]?.[0] ?? '') <= (sorted[i]?.[0] ?? '')).toBe(true);
    await sorter.dispose();
    expect(await readdir(tmp)).toEqual([]);
  });

  it('sorts in memory when nothing spilled, and groupByKey yields one group per key with the bare JSON', async () => {
    const sorter = new ExternalSorter({ tmpDir: tmpdir() });
    for (const l of ['b\t{"n":1}', 'a\t{"n":2}', 'b\t{"n":3}', 'c\t{"n":4}']) await sorter.add(l);
    const groups = await collect(groupByKey(sorter.sorted()));
    expect(sorter.spilled).toBe(0);
    expect(groups).toEqual([
      { key: 'a', lines: ['{"n":2}'] },
      { key: 'b', lines: ['{"n":1}', '{"n":3}'] },
      { key: 'c', lines: ['{"n":4}'] },
    ]);
  });
});
