/**
 * CDS Hooks 2.0 shapes (https://cds-hooks.hl7.org/2.0/): the service request, discovery,
 * cards and the response, and feedback. Field names, optionality and constraints follow the
 * specification's tables; request schemas ignore unknown fields (extensions), response
 * schemas are strict, so that what this service sends is exactly what the spec allows.
 *
 * The spec's JSON rule: optional attributes without a value are omitted, never `null`, `""`,
 * `[]` or `{}` — the response schemas below enforce it with non-empty strings and arrays.
 */
import * as z from 'zod';

const nonEmpty = z.string().min(1);
/** A FHIR resource id (R4 `id` datatype). */
export const FHIR_ID = /^[A-Za-z0-9\-.]{1,64}$/;
/** `http(s)` absolute URLs only. */
const httpUrl = z.url({ protocol: /^https?$/ });

/** The CDS Hooks Coding: `code` and `system` required; `display` required for override reasons. */
export const CdsCodingSchema = z.strictObject({
  code: nonEmpty,
  system: nonEmpty,
  display: nonEmpty.optional(),
});
export type CdsCoding = z.infer<typeof CdsCodingSchema>;

/** An `extension` holds a pre-coordinated JSON object (spec "Extensions"). */
const ExtensionSchema = z.record(z.string(), z.unknown()).optional();

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

// ─── Discovery ───────────────────────────────────────────────────────────────────────────

export const CdsServiceSchema = z.strictObject({
  hook: nonEmpty,
  title: nonEmpty.optional(),
  description: nonEmpty,
  /** The `{id}` of `{baseUrl}/cds-services/{id}`. */
  id: z.string().regex(/^[A-Za-z0-9._~-]{1,128}$/, 'a URL path segment'),
  /** Prefetch key → FHIR query template with `{{context.*}}` tokens. */
  prefetch: z.record(z.string().min(1), nonEmpty).optional(),
  /** Human-readable requirements the client should meet before using the service (2.0). */
  usageRequirements: nonEmpty.optional(),
  extension: ExtensionSchema,
});
export type CdsService = z.infer<typeof CdsServiceSchema>;

export const CdsDiscoverySchema = z.strictObject({ services: z.array(CdsServiceSchema) });
export type CdsDiscovery = z.infer<typeof CdsDiscoverySchema>;

// ─── Cards and response ──────────────────────────────────────────────────────────────────

export const CdsActionSchema = z
  .strictObject({
    type: z.enum(['create', 'update', 'delete']),
    description: nonEmpty,
    resource: z.looseObject({ resourceType: nonEmpty }).optional(),
    resourceId: nonEmpty.optional(),
    extension: ExtensionSchema,
  })
  .refine((a) => a.type === 'delete' || a.resource !== undefined, {
    path: ['resource'],
    error: 'create and update actions carry a resource',
  });

export const CdsSuggestionSchema = z.strictObject({
  label: nonEmpty,
  uuid: z.guid().optional(),
  isRecommended: z.boolean().optional(),
  actions: z.array(CdsActionSchema).min(1).optional(),
  extension: ExtensionSchema,
});

export const CdsSourceSchema = z.strictObject({
  label: nonEmpty,
  url: httpUrl.optional(),
  icon: httpUrl.optional(),
  topic: CdsCodingSchema.optional(),
  extension: ExtensionSchema,
});

export const CdsLinkSchema = z
  .strictObject({
    label: nonEmpty,
    url: httpUrl,
    type: z.enum(['absolute', 'smart']),
    appContext: nonEmpty.optional(),
    extension: ExtensionSchema,
  })
  .refine((l) => l.appContext === undefined || l.type === 'smart', {
    path: ['appContext'],
    error: 'appContext is only valid for smart links',
  });

export const CdsCardSchema = z
  .strictObject({
    uuid: z.guid().optional(),
    /** One sentence, fewer than 140 characters. */
    summary: nonEmpty.max(139),
    /** GitHub-flavoured Markdown. */
    detail: nonEmpty.optional(),
    indicator: z.enum(['info', 'warning', 'critical']),
    source: CdsSourceSchema,
    suggestions: z.array(CdsSuggestionSchema).min(1).optional(),
    selectionBehavior: z.enum(['at-most-one', 'any']).optional(),
    overrideReasons: z
      .array(CdsCodingSchema.required({ display: true }))
      .min(1)
      .optional(),
    links: z.array(CdsLinkSchema).min(1).optional(),
    extension: ExtensionSchema,
  })
  .refine((c) => c.suggestions === undefined || c.selectionBehavior !== undefined, {
    path: ['selectionBehavior'],
    error: 'selectionBehavior is required when suggestions are present',
  });
export type CdsCard = z.infer<typeof CdsCardSchema>;

export const CdsResponseSchema = z.strictObject({
  cards: z.array(CdsCardSchema),
  systemActions: z.array(CdsActionSchema).min(1).optional(),
  extension: ExtensionSchema,
});
export type CdsResponse = z.infer<typeof CdsResponseSchema>;

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
