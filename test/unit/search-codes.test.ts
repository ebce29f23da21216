/**
 * The Observation search codes: the features' codes and the LOINC panels that carry them as
 * components (a `code` search matches `Observation.code` only).
 */
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { observationSearchCodes, panelsCarrying } from '../../shared/features/search-codes.js';
import { parseManifest } from '../../shared/inference/manifest.js';
import { MODELS_DIR } from '../../local/stack.js';

const manifest = (id: string) => {
  const file = path.join(MODELS_DIR, id, 'manifest.json');
  return parseManifest(JSON.parse(readFileSync(file, 'utf8')), file);
};

describe('observation search codes', () => {
  it('adds the blood-pressure panels for a model that reads diastolic pressure', () => {
    const codes = observationSearchCodes([manifest('diabetes-onset-rf')]);
    expect(codes).toContain('http://loinc.org|8462-4');
    expect(codes).toEqual(
      expect.arrayContaining([
        'http://loinc.org|85354-9',
        'http://loinc.org|55284-4',
        'http://loinc.org|35094-2',
      ]),
    );
    expect(new Set(codes).size).toBe(codes.length);
  });

  it('adds no panel where no feature is a panel component, nor for other code systems', () => {
    expect(panelsCarrying('http://loinc.org|2345-7')).toEqual([]);
    expect(panelsCarrying('http://snomed.info/sct|8462-4')).toEqual([]);
    expect(observationSearchCodes([manifest('lung-nodule-cnn')])).toEqual([]);
  });
});
