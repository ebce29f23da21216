/**
 * Loads demo patients into a FHIR server with conditional creates, so loading twice changes
 * nothing. `loadHistory` writes the patient and what was already on file; `loadTrigger` writes
 * the new result(s) (with the subscriptions active, that write is what starts the pipeline).
 * Transactions stay at 8 entries or fewer: servers such as Medplum refuse larger transactions
 * that contain conditional creates.
 */
import type { Bundle, BundleEntry } from '@medplum/fhirtypes';
import type { ResourceEventMessage } from '../../shared/events/resource-event.js';
import type { FhirGateway } from '../../shared/fhir/gateway.js';
import type { DemoPatient } from './cohort.js';

const MAX_CONDITIONAL_ENTRIES = 8;

/** `Type/id/_history/vid` from a transaction response entry's `location`. */
function versionedRef(location: string | undefined): string | undefined {
  const match = location ? /([A-Z][A-Za-z]+\/[^/]+\/_history\/[^/]+)$/.exec(location) : null;
  return match?.[1];
}

async function transaction(fhir: FhirGateway, entries: readonly BundleEntry[]): Promise<Bundle> {
  return fhir.transaction({ resourceType: 'Bundle', type: 'transaction', entry: [...entries] });
}

/** Writes entries in transactions of at most 8, with `subject` pointing at the patient; their versioned references. */
async function writeForPatient(
  fhir: FhirGateway,
  entries: readonly BundleEntry[],
  patientRef: string,
): Promise<string[]> {
  const refs: string[] = [];
  for (let i = 0; i < entries.length; i += MAX_CONDITIONAL_ENTRIES) {
    const chunk = entries.slice(i, i + MAX_CONDITIONAL_ENTRIES).map((e): BundleEntry => ({
      ...e,
      ...(e.resource
        ? { resource: { ...e.resource, subject: { reference: patientRef } } as typeof e.resource }
        : {}),
    }));
    const response = await transaction(fhir, chunk);
    chunk.forEach((_, j) => {
      const ref = versionedRef(response.entry?.[j]?.response?.location);
      if (ref) refs.push(ref);
    });
  }
  return refs;
}

/** Writes the patient and its history; the patient's reference. */
export async function loadHistory(fhir: FhirGateway, demo: DemoPatient): Promise<string> {
  const response = await transaction(fhir, [demo.patient]);
  const patientRef = versionedRef(response.entry?.[0]?.response?.location)?.split('/_history/')[0];
  if (!patientRef) throw new Error('the FHIR server returned no location for the demo patient');
  await writeForPatient(fhir, demo.observations, patientRef);
  return patientRef;
}

/** Writes the new result(s); their versioned references. */
export async function loadTrigger(
  fhir: FhirGateway,
  demo: DemoPatient,
  patientRef: string,
): Promise<string[]> {
  return writeForPatient(fhir, demo.trigger, patientRef);
}

/** Writes everything and returns the resource event an EHR would send for the new result (tests). */
export async function loadDemoPatient(
  fhir: FhirGateway,
  demo: DemoPatient,
): Promise<ResourceEventMessage | undefined> {
  const patientRef = await loadHistory(fhir, demo);
  const [newest] = await loadTrigger(fhir, demo, patientRef);
  if (!newest) return undefined;
  const [type, id, , versionId] = newest.split('/');
  return {
    v: 1,
    focus: `${type}/${id}`,
    ...(versionId ? { versionId } : {}),
    action: 'create',
    patient: patientRef,
    timestamp: new Date().toISOString(),
  };
}
