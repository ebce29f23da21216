/**
 * Loads demo patients into a FHIR server with conditional creates, so loading twice changes
 * nothing, and returns the resource event an EHR's subscription would send for each patient
 * (its newest Observation). Transactions stay at 8 entries or fewer: servers such as Medplum
 * refuse larger transactions that contain conditional creates.
 */
import type { Bundle, BundleEntry, Observation } from '@medplum/fhirtypes';
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

export async function loadDemoPatient(
  fhir: FhirGateway,
  demo: DemoPatient,
): Promise<ResourceEventMessage | undefined> {
  const patientResponse = await transaction(fhir, [demo.patient]);
  const patientRef = versionedRef(patientResponse.entry?.[0]?.response?.location)?.split('/_history/')[0];
  if (!patientRef) throw new Error('the FHIR server returned no location for the demo patient');

  let newest: { effective: string; ref: string } | undefined;
  for (let i = 0; i < demo.observations.length; i += MAX_CONDITIONAL_ENTRIES) {
    const chunk = demo.observations
      .slice(i, i + MAX_CONDITIONAL_ENTRIES)
      .map((e): BundleEntry<Observation> => ({
        ...e,
        ...(e.resource ? { resource: { ...e.resource, subject: { reference: patientRef } } } : {}),
      }));
    const response = await transaction(fhir, chunk);
    chunk.forEach((entry, j) => {
      const ref = versionedRef(response.entry?.[j]?.response?.location);
      const effective = entry.resource?.effectiveDateTime ?? '';
      if (ref && (!newest || effective > newest.effective)) newest = { effective, ref };
    });
  }
  if (!newest) return undefined;
  const [type, id, , versionId] = newest.ref.split('/');
  return {
    v: 1,
    focus: `${type}/${id}`,
    ...(versionId ? { versionId } : {}),
    action: 'create',
    patient: patientRef,
    timestamp: new Date().toISOString(),
  };
}
