/**
 * Write-time checks: the basic shape every stored resource must have, and the resolution of
 * conditional references (`Practitioner?identifier=…`) the way FHIR transactions define them.
 */
import type { SearchRequest } from '@medplum/core';
import {
  OperationOutcomeError,
  badRequest,
  isResourceType,
  multipleMatches,
  parseSearchRequest,
} from '@medplum/core';
import type { OperationOutcome, Resource } from '@medplum/fhirtypes';

const ID = /^[A-Za-z0-9\-.]{1,64}$/;
const ABSTRACT = new Set(['Resource', 'DomainResource']);

/** True for a concrete FHIR R4 resource type name. */
export function isKnownResourceType(name: unknown): name is Resource['resourceType'] {
  return typeof name === 'string' && !ABSTRACT.has(name) && isResourceType(name);
}

/** Throws a 400 OperationOutcome unless the value is an object with a known resourceType and a valid id. */
export function validateBasic(resource: unknown): asserts resource is Resource {
  if (typeof resource !== 'object' || resource === null || Array.isArray(resource)) {
    throw new OperationOutcomeError(badRequest('Resource must be a JSON object'));
  }
  const { resourceType, id, meta } = resource as { resourceType?: unknown; id?: unknown; meta?: unknown };
  if (!isKnownResourceType(resourceType)) {
    const shown = typeof resourceType === 'string' ? resourceType : '<missing>';
    throw new OperationOutcomeError(badRequest(`Unknown resourceType: ${shown}`, 'resourceType'));
  }
  if (id !== undefined && (typeof id !== 'string' || !ID.test(id))) {
    throw new OperationOutcomeError(badRequest('Invalid id', `${resourceType}.id`));
  }
  if (meta !== undefined && (typeof meta !== 'object' || meta === null || Array.isArray(meta))) {
    throw new OperationOutcomeError(badRequest('Invalid meta', `${resourceType}.meta`));
  }
}

interface Searcher {
  searchResources(request: SearchRequest): Promise<{ id: string; resourceType: string }[]>;
}

const CONDITIONAL = /^([A-Z][A-Za-z]+)\?(.+)$/;

/**
 * Replaces each `reference` of the form `Type?search` by the one resource the search finds.
 * None found: 400; several: 412. Both name the reference and where it is.
 */
export async function resolveConditionalReferences(resource: Resource, repo: Searcher): Promise<void> {
  const found: { holder: Record<string, unknown>; reference: string; path: string }[] = [];
  const walk = (value: unknown, path: string): void => {
    if (Array.isArray(value)) {
      value.forEach((v, i) => {
        walk(v, `${path}[${i}]`);
      });
    } else if (typeof value === 'object' && value !== null) {
      const holder = value as Record<string, unknown>;
      for (const [k, v] of Object.entries(holder)) {
        if (k === 'reference' && typeof v === 'string' && CONDITIONAL.test(v)) {
          found.push({ holder, reference: v, path: `${path}.reference` });
        } else {
          walk(v, `${path}.${k}`);
        }
      }
    }
  };
  walk(resource, resource.resourceType);

  const resolved = new Map<string, string>();
  for (const { holder, reference, path } of found) {
    let target = resolved.get(reference);
    if (target === undefined) {
      const type = CONDITIONAL.exec(reference)?.[1];
      if (!isKnownResourceType(type)) continue;
      const request = parseSearchRequest(reference);
      request.count = 2;
      const matches = await repo.searchResources(request);
      const [first] = matches;
      if (!first) {
        throw new OperationOutcomeError(
          badRequest(`Conditional reference '${reference}' did not match any resource`, path),
        );
      }
      if (matches.length > 1) {
        const outcome: OperationOutcome = {
          ...multipleMatches,
          issue: [
            {
              severity: 'error',
              code: 'multiple-matches',
              details: { text: `Conditional reference '${reference}' matched more than one resource` },
              expression: [path],
            },
          ],
        };
        throw new OperationOutcomeError(outcome);
      }
      target = `${first.resourceType}/${first.id}`;
      resolved.set(reference, target);
    }
    holder.reference = target;
  }
}
