/**
 * CDS Hooks 2.0 shapes (https://cds-hooks.hl7.org/2.0/): the service request, discovery,
 * cards and the response, and feedback. Field names, optionality and constraints follow the
 * specification's tables; request schemas ignore unknown fields (extensions), response
 * schemas are strict, so that what this service sends is exactly what the spec allows.
 *
 * The spec's JSON rule: optional attributes without a value are omitted, never `null`, `""`,
 * `[]` or `{}` — the response schemas below enforce it with non-empty strings and arrays.
 *
 * The request side (what the service parses on every call) is `cds-hooks-request.ts`,
 * re-exported here; this module adds the strict shapes the service sends, which the OpenAPI
 * document and the tests use.
 */
import * as z from 'zod';
import { ExtensionSchema, httpUrl, nonEmpty } from './cds-hooks-request.js';

export * from './cds-hooks-request.js';

/** The CDS Hooks Coding: `code` and `system` required; `display` required for override reasons. */
export const CdsCodingSchema = z.strictObject({
  code: nonEmpty,
  system: nonEmpty,
  display: nonEmpty.optional(),
});
export type CdsCoding = z.infer<typeof CdsCodingSchema>;

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
