/**
 * Codes and labels every resource we write carries: the AI-transparency security label
 * (HL7 AI Transparency on FHIR) and the tag by which the event handler recognises, and
 * ignores, our own writes so that they never trigger another prediction.
 */
import type { Coding, Meta, Resource } from '@medplum/fhirtypes';

export const V3_OBSERVATION_VALUE = 'http://terminology.hl7.org/CodeSystem/v3-ObservationValue';
export const SECURITY_AIAST = 'AIAST'; // Artificial Intelligence asserted

/** `meta.security`: the content was asserted by an AI. */
export const AI_ASSERTED_SECURITY_LABEL: Readonly<Coding> = Object.freeze({
  system: V3_OBSERVATION_VALUE,
  code: SECURITY_AIAST,
  display: 'Artificial Intelligence asserted',
});

export const FHIR_ANALYTICS_TAG_SYSTEM = 'urn:fhir-analytics:tag';
export const TAG_WRITTEN_BY = 'written-by-fhir-analytics'; // Written by fhir-analytics

/** `meta.tag`: written by this system; its event handler skips resources that carry it. */
export const WRITTEN_BY_TAG: Readonly<Coding> = Object.freeze({
  system: FHIR_ANALYTICS_TAG_SYSTEM,
  code: TAG_WRITTEN_BY,
  display: 'Written by fhir-analytics',
});

/** Identifier system of the idempotency key on DiagnosticReports (and, suffixed, on Observations). */
export const IDEMPOTENCY_KEY_SYSTEM = 'urn:fhir-analytics:idempotency-key';

/** Identifier system of model Devices; the value is `<modelId>@<version>`. */
export const MODEL_DEVICE_SYSTEM = 'urn:fhir-analytics:model';

/** A fresh `meta` with both labels (new arrays each time, so resources never share them). */
export function writtenMeta(): Meta {
  return { security: [{ ...AI_ASSERTED_SECURITY_LABEL }], tag: [{ ...WRITTEN_BY_TAG }] };
}

/** Whether a resource carries our `written-by` tag (the event handler's loop guard). */
export function isWrittenByFhirAnalytics(resource: Pick<Resource, 'meta'> | undefined): boolean {
  const tags: unknown = resource?.meta?.tag;
  return (
    Array.isArray(tags) &&
    (tags as Coding[]).some((t) => t.system === FHIR_ANALYTICS_TAG_SYSTEM && t.code === TAG_WRITTEN_BY)
  );
}
