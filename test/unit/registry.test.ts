/**
 * The model registry: loads `<dir>/<id>/manifest.json` (skipping folders without one), names
 * the file and path of a bad manifest, and picks models by their triggers: Observation by
 * any coding of `code` or of a component's code, ImagingStudy by study or series modality.
 */
import type { ImagingStudy, Observation } from '@medplum/fhirtypes';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { ManifestError } from '../../shared/inference/manifest.js';
import { createRegistry, loadRegistry } from '../../shared/inference/registry.js';

const FIXTURES = fileURLToPath(new URL('../fixtures/models', import.meta.url));
const LOINC = 'http://loinc.org';

const observation = (codes: string[], componentCodes: string[] = []): Observation => ({
  resourceType: 'Observation',
  status: 'final',
  code: { coding: codes.map((code) => ({ system: LOINC, code })) },
  component: componentCodes.map((code) => ({ code: { coding: [{ system: LOINC, code }] } })),
});

const study = (modality: string[], seriesModality: string[] = []): ImagingStudy => ({
  resourceType: 'ImagingStudy',
  status: 'available',
  subject: { reference: 'Patient/1' },
  modality: modality.map((code) => ({ system: 'http://dicom.nema.org/resources/ontology/DCM', code })),
  series: seriesModality.map((code, i) => ({
    uid: `1.2.${i}`,
    modality: { system: 'http://dicom.nema.org/resources/ontology/DCM', code },
  })),
});

describe('loadRegistry over the fixtures', () => {
  it('loads the fixtures (tiny-linear, and the batching fixtures tiny-image and tiny-seq) and finds them by id', async () => {
    const registry = await loadRegistry(FIXTURES);
    expect(registry.all().map((m) => m.id)).toEqual(['tiny-image', 'tiny-linear', 'tiny-seq']);
    expect(registry.get('tiny-linear')?.serving.maxBatchSize).toBe(8);
    expect(registry.get('nope')).toBeUndefined();
  });

  it('matches Observations by code or component code, and ImagingStudies by study or series modality', async () => {
    const registry = await loadRegistry(FIXTURES);
    const ids = (r: Observation | ImagingStudy): string[] => registry.matching(r).map((m) => m.id);
    expect(ids(observation(['2345-7']))).toEqual(['tiny-linear']);
    expect(ids(observation(['9999-9', '2345-7']))).toEqual(['tiny-linear']);
    expect(ids(observation(['55284-4'], ['2345-7']))).toEqual(['tiny-linear']);
    expect(ids(observation(['4548-4']))).toEqual([]); // a feature code, not a trigger
    const otherSystem: Observation = {
      resourceType: 'Observation',
      status: 'final',
      code: { coding: [{ system: 'http://snomed.info/sct', code: '2345-7' }] },
    };
    expect(ids(otherSystem)).toEqual([]);
    expect(ids(study(['CT']))).toEqual(['tiny-linear']);
    expect(ids(study([], ['MR', 'CT']))).toEqual(['tiny-linear']);
    expect(ids(study(['MR'], ['MR']))).toEqual([]);
    expect(registry.matching({ resourceType: 'Patient' })).toEqual([]);
  });
});

describe('the real models folder', () => {
  it('loads every manifest under models/ (training/ has none and is skipped)', async () => {
    const registry = await loadRegistry(fileURLToPath(new URL('../../models', import.meta.url)));
    expect(registry.all().length).toBeGreaterThan(0);
    for (const m of registry.all()) expect(registry.get(m.id)).toBe(m);
  });
});

describe('bad manifests', () => {
  let dir: string | undefined;
  afterEach(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
    dir = undefined;
  });

  async function repoWith(folder: string, content: string): Promise<string> {
    dir = await mkdtemp(join(tmpdir(), 'registry-'));
    await mkdir(join(dir, folder));
    await writeFile(join(dir, folder, 'manifest.json'), content);
    await mkdir(join(dir, 'training')); // no manifest: skipped
    return dir;
  }
  const fixture = async (): Promise<Record<string, unknown>> =>
    JSON.parse(await readFile(join(FIXTURES, 'tiny-linear', 'manifest.json'), 'utf8')) as Record<
      string,
      unknown
    >;

  it('names the file and the failing path', async () => {
    const m = await fixture();
    const root = await repoWith(
      'tiny-linear',
      JSON.stringify({ ...m, serving: { ...(m.serving as object), maxBatchSize: 0 } }),
    );
    const err = await loadRegistry(root).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ManifestError);
    expect((err as Error).message).toContain(join(root, 'tiny-linear', 'manifest.json'));
    expect((err as Error).message).toMatch(/serving\.maxBatchSize: /);
  });

  it('names the file of invalid JSON, and refuses an id that differs from its folder', async () => {
    const root = await repoWith('tiny-linear', '{ not json');
    await expect(loadRegistry(root)).rejects.toThrow(/tiny-linear\/manifest\.json: not valid JSON/);
    await rm(root, { recursive: true, force: true });
    const other = await repoWith('other-name', JSON.stringify(await fixture()));
    await expect(loadRegistry(other)).rejects.toThrow(
      /id: "tiny-linear" differs from its folder "other-name"/,
    );
  });

  it('refuses duplicate ids', async () => {
    const registry = await loadRegistry(FIXTURES);
    const m = registry.get('tiny-linear');
    if (!m) throw new Error('fixture missing');
    expect(() => createRegistry([m, m])).toThrow(/model id "tiny-linear" appears twice/);
  });
});
