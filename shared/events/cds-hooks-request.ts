/**
 * CDS Hooks 2.0 (https://cds-hooks.hl7.org/2.0/), what a CDS service receives: the service
 * request, the `patient-view` context and feedback, parsed on every call (unknown fields, the
 * extensions, are ignored); and the pieces every shape shares. The strict shapes the service
 * sends (discovery, cards, the response) are in `cds-hooks.ts`, which re-exports this module:
 * the partner API builds its answers as plain objects, so its cold start never builds those.
 */
import * as z from 'zod';

/** A non-empty string: the spec's JSON rule (no `""` for an attribute without a value). */
export const nonEmpty = z.string().min(1);
/** A FHIR resource id (R4 `id` datatype). */
export const FHIR_ID = /^[A-Za-z0-9\-.]{1,64}$/;
/** `http(s)` absolute URLs only. */
export const httpUrl = z.url({ protocol: /^https?$/ });

/** An `extension` holds a pre-coordinated JSON object (spec "Extensions"). */
export const ExtensionSchema = z.record(z.string(), z.unknown()).optional();

// ─── Request ─────────────────────────────────────────────────────────────────────────────

/** `fhirAuthorization`: every field REQUIRED; `token_type` is fixed to `Bearer`. */
export const FhirAuthorizationSchema = z.object({
  access_token: nonEmpty,
  token_type: z.literal('Bearer'),
  expires_in: z.number().int().nonnegative(),
  scope: nonEmpty,
  subject: nonEmpty,
});

/** A CDS Service call. `fhirServer` is REQUIRED when `fhirAuthorization` is given. */
export const CdsHookRequestSchema = z
  .object({
    hook: nonEmpty.max(256),
    /** A UUID for this hook call. */
    hookInstance: z.guid(),
    fhirServer: httpUrl.optional(),
    fhirAuthorization: FhirAuthorizationSchema.optional(),
    context: z.record(z.string(), z.unknown()),
    /** Prefetch key → FHIR resource (or searchset Bundle), or `null` when the client had no data. */
    prefetch: z.record(z.string(), z.unknown()).optional(),
    extension: ExtensionSchema,
  })
  .refine((r) => r.fhirAuthorization === undefined || r.fhirServer !== undefined, {
    path: ['fhirServer'],
    error: 'fhirServer is required when fhirAuthorization is given',
  });
export type CdsHookRequest = z.infer<typeof CdsHookRequestSchema>;

/** `patient-view` context (hook version 1.0): `userId` and `patientId` REQUIRED, `encounterId` OPTIONAL. */
export const PatientViewContextSchema = z.object({
  userId: nonEmpty,
  patientId: z.string().regex(FHIR_ID, 'a FHIR resource id'),
  encounterId: nonEmpty.optional(),
});
export type PatientViewContext = z.infer<typeof PatientViewContextSchema>;

// ─── Feedback ────────────────────────────────────────────────────────────────────────────

export const CdsFeedbackItemSchema = z
  .object({
    /** The `card.uuid` the feedback is about. */
    card: nonEmpty.max(128),
    outcome: z.enum(['accepted', 'overridden']),
    acceptedSuggestions: z
      .array(z.object({ id: nonEmpty.max(128) }))
      .min(1)
      .optional(),
    overrideReason: z
      .object({
        reason: z.object({ code: nonEmpty, system: nonEmpty, display: nonEmpty.optional() }).optional(),
        userComment: z.string().max(4000).optional(),
      })
      .optional(),
    outcomeTimestamp: z.iso.datetime({ offset: true }),
    extension: ExtensionSchema,
  })
  .refine((f) => f.outcome !== 'accepted' || f.acceptedSuggestions !== undefined, {
    path: ['acceptedSuggestions'],
    error: 'acceptedSuggestions is required for accepted outcomes',
  });

export const CdsFeedbackSchema = z.object({
  feedback: z.array(CdsFeedbackItemSchema).min(1).max(1000),
});
export type CdsFeedback = z.infer<typeof CdsFeedbackSchema>;

/** The first issue of a failed parse as `path: message`, naming the path only (never the value). */
export function firstIssue(error: z.ZodError): { path: string; message: string } {
  const issue = error.issues[0];
  const path = issue?.path.length ? issue.path.map(String).join('.') : '(root)';
  return { path, message: issue?.message ?? 'invalid' };
}
