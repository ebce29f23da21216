/**
 * The Observation codes a search must name to find every Observation the models read.
 *
 * The extractor matches a feature's code in `Observation.code` or in a `component.code`
 * (observations.ts), but a FHIR `code` search (and an export's `_typeFilter`) matches
 * `Observation.code` only: searching diastolic pressure (8462-4) misses the blood-pressure
 * panels that US Core and Synthea record it in (85354-9, systolic and diastolic as components).
 * So the search codes are the features' codes plus the LOINC panels that carry any of them as a
 * component. `code` is the search every FHIR server supports; `combo-code` and
 * `component-code` would say the same with less support.
 */
import type { ModelManifest } from '../inference/manifest.js';

const LOINC = 'http://loinc.org';

/** Blood-pressure panels: US Core's 85354-9, and 55284-4 and 35094-2 that older records use. */
const BP_PANELS = ['85354-9', '55284-4', '35094-2'];

/** LOINC component code → the LOINC panels that carry it as a component. */
const PANELS_BY_COMPONENT: ReadonlyMap<string, readonly string[]> = new Map([
  ['8480-6', BP_PANELS], // systolic
  ['8462-4', BP_PANELS], // diastolic
  ['8478-0', ['85354-9']], // mean (an optional child of the 85354-9 panel)
]);

/** `system|code` of the panels that can carry a `system|code` as a component. */
export function panelsCarrying(code: string): string[] {
  if (!code.startsWith(`${LOINC}|`)) return [];
  return (PANELS_BY_COMPONENT.get(code.slice(LOINC.length + 1)) ?? []).map((p) => `${LOINC}|${p}`);
}

/** Every `system|code` to search for the models' Observations (features' codes first, then panels). */
export function observationSearchCodes(models: readonly ModelManifest[]): string[] {
  const codes = new Set<string>();
  for (const m of models) {
    if (m.input.kind === 'image') continue;
    for (const f of m.input.features) {
      if (f.source === 'observation') for (const c of f.codes) codes.add(`${c.system}|${c.code}`);
    }
  }
  for (const c of [...codes]) for (const p of panelsCarrying(c)) codes.add(p);
  return [...codes];
}
