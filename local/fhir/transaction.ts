/**
 * A lean path for the transaction bundles this system writes: creates (conditional or not) and
 * updates by id, linked by `urn:uuid` references. It gives the results, responses, errors and
 * stored state of @medplum/fhir-router's `processBatch` (the same repository calls in the same
 * order: identities resolved in entry order, the 50-update and 8-strict-entry limits, creates then
 * updates inside one repository transaction), without what that costs per transaction: a JSON
 * text of the whole bundle for an event nobody listens to, a copy of every object of every entry
 * to rewrite references (here: the strings that hold one, in place, as `rewriteIdsInString`
 * does), and a route lookup and request object per entry. Any other bundle (deletes, patches,
 * reads, conditional updates, preconditions, other fullUrls) goes through the router as before.
 *
 * Measured (sweep bench, 100,000 patients): Medplum's reference rewriting alone was 7.6 % of the
 * server's CPU in the item phase.
 */
import type { WithId } from '@medplum/core';
import {
  OperationOutcomeError,
  allOk,
  badRequest,
  created,
  getReferenceString,
  getStatus,
  isOk,
  parseSearchRequest,
} from '@medplum/core';
import type { FhirRepository } from '@medplum/fhir-router';
import type { Bundle, BundleEntry, OperationOutcome, Resource } from '@medplum/fhirtypes';

/** Medplum's placeholder pattern (`processBatch`), `%3A`-encoded colons included. */
const UUID_PATTERN = /urn(:|%3A)uuid(:|%3A)[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/;
/** Medplum's limits: updates per transaction, entries of a transaction that needs strict isolation. */
const MAX_UPDATES = 50;
const MAX_STRICT_ENTRIES = 8;

type Step =
  | { readonly kind: 'create'; readonly type: string }
  | { readonly kind: 'update'; readonly type: string; readonly id: string };

const TYPE = /^[A-Z][A-Za-z]+$/;
const TYPE_ID = /^([A-Z][A-Za-z]+)\/([A-Za-z0-9\-.]{1,64})$/;

/** What the lean path does with an entry, or undefined when the entry needs the router. */
function stepOf(entry: BundleEntry): Step | undefined {
  const req = entry.request;
  const value: unknown = entry.resource;
  if (!req || typeof value !== 'object' || value === null || Array.isArray(value)) return undefined;
  const resource = value as Resource;
  if (req.ifMatch !== undefined || req.ifNoneMatch !== undefined || req.ifModifiedSince !== undefined) {
    return undefined;
  }
  const fullUrl: unknown = entry.fullUrl;
  if (fullUrl !== undefined && (typeof fullUrl !== 'string' || !fullUrl.startsWith('urn:uuid:')))
    return undefined;
  const url: unknown = req.url;
  if (typeof url !== 'string') return undefined;
  if (req.method === 'POST' && TYPE.test(url) && resource.resourceType === url) {
    if (req.ifNoneExist !== undefined && typeof req.ifNoneExist !== 'string') return undefined;
    return { kind: 'create', type: url };
  }
  const m = req.method === 'PUT' ? TYPE_ID.exec(url) : null;
  if (m?.[1] && m[2] && resource.resourceType === m[1] && resource.id === m[2]) {
    return { kind: 'update', type: m[1], id: m[2] };
  }
  return undefined;
}

/** The steps of a transaction the lean path can run, or undefined (the router runs it). */
export function leanSteps(body: unknown): readonly Step[] | undefined {
  const bundle = body as Bundle | undefined;
  if (bundle?.resourceType !== 'Bundle' || bundle.type !== 'transaction' || !bundle.entry?.length) {
    return undefined;
  }
  const steps: Step[] = [];
  for (const entry of bundle.entry) {
    const step = stepOf(entry);
    if (!step) return undefined;
    steps.push(step);
  }
  return steps;
}

/** `rewriteIdsInString`: the first placeholder in the string, every occurrence of it, when resolved. */
function rewriteString(s: string, resolved: ReadonlyMap<string, string>): string {
  const match = UUID_PATTERN.exec(s)?.[0];
  if (!match) return s;
  const reference = resolved.get(match.replaceAll('%3A', ':'));
  return reference ? s.replaceAll(match, reference) : s;
}

/** Rewrites placeholders in every string under `node` (values, not keys), in place. */
function rewriteInPlace(node: unknown, resolved: ReadonlyMap<string, string>): void {
  if (Array.isArray(node)) {
    for (let i = 0; i < node.length; i++) {
      const v: unknown = node[i];
      if (typeof v === 'string') node[i] = rewriteString(v, resolved);
      else if (typeof v === 'object' && v !== null) rewriteInPlace(v, resolved);
    }
    return;
  }
  const obj = node as Record<string, unknown>;
  for (const key of Object.keys(obj)) {
    const v = obj[key];
    if (typeof v === 'string') obj[key] = rewriteString(v, resolved);
    else if (typeof v === 'object' && v !== null) rewriteInPlace(v, resolved);
  }
}

const fail = (outcome: OperationOutcome): never => {
  throw new OperationOutcomeError(outcome);
};

/**
 * Runs a transaction whose `steps` came from {@link leanSteps} on `body`; returns the
 * transaction-response. Throws OperationOutcomeError as the router's batch would (the caller
 * normalises it as the router does). The body's entries are changed (ids, references).
 */
export async function runLeanTransaction(
  repo: FhirRepository,
  body: Bundle,
  steps: readonly Step[],
): Promise<Bundle> {
  const entries = body.entry ?? [];
  const resolved = new Map<string, string>();
  const seen = new Set<string>();
  let strict = false;
  let updates = 0;
  // Identities, in entry order (Medplum's preprocessBundle).
  for (const [i, step] of steps.entries()) {
    const entry = entries[i] as BundleEntry;
    const resource = entry.resource as Resource;
    let reference: string;
    if (step.kind === 'update') {
      updates++;
      reference = `${step.type}/${step.id}`;
    } else {
      const condition = entry.request?.ifNoneExist;
      let found: WithId<Resource> | undefined;
      if (condition) {
        strict = true;
        const matches = await repo.searchResources(parseSearchRequest(`${step.type}?${condition}`));
        if (matches.length === 1) found = matches[0];
      }
      const id = found ? found.id : (resource.id = repo.generateId());
      reference = `${step.type}/${id}`;
    }
    resolved.set(entry.fullUrl ?? '', reference);
    if (seen.has(reference)) fail(badRequest('Duplicate resource identity found in Bundle'));
    seen.add(reference);
  }
  if (updates > MAX_UPDATES) fail(badRequest('Transaction contains more update operations than allowed'));
  if (strict && entries.length > MAX_STRICT_ENTRIES) {
    fail(badRequest('Transaction requires strict isolation but has too many entries'));
  }
  const order = [
    ...steps.flatMap((s, i) => (s.kind === 'create' ? [i] : [])),
    ...steps.flatMap((s, i) => (s.kind === 'update' ? [i] : [])),
  ];
  const out: BundleEntry[] = new Array<BundleEntry>(entries.length);
  await repo.withTransaction(async () => {
    for (const i of order) {
      const entry = entries[i] as BundleEntry;
      rewriteInPlace(entry, resolved);
      const step = steps[i] as Step;
      const resource = entry.resource as Resource;
      let outcome: OperationOutcome;
      let stored: WithId<Resource>;
      const condition = entry.request?.ifNoneExist;
      if (step.kind === 'update') {
        stored = await repo.updateResource(resource, { ifMatch: undefined });
        outcome = allOk;
      } else if (condition) {
        const result = await repo.conditionalCreate(
          resource,
          parseSearchRequest(`${step.type}?${condition}`),
          {
            assignedId: true,
          },
        );
        stored = result.resource;
        outcome = result.outcome;
      } else {
        stored = await repo.createResource(resource, { assignedId: true });
        outcome = created;
      }
      if (!isOk(outcome)) fail(outcome);
      out[i] = {
        response: {
          outcome,
          status: getStatus(outcome).toString(),
          ...(stored.id ? { location: getReferenceString(stored) } : {}),
        },
        resource: stored,
      };
    }
  });
  return { resourceType: 'Bundle', type: 'transaction-response', entry: out };
}
