/**
 * What the lean-transaction tests share: a repository whose new ids come from a counter (so two
 * repositories fed the same bundles name new resources alike), and one bundle run through
 * Medplum's router or through the lean path, each answering `[outcome, result]`.
 */
import { normalizeOperationOutcome } from '@medplum/core';
import { FhirRouter } from '@medplum/fhir-router';
import type { Bundle } from '@medplum/fhirtypes';
import { IndexedRepository } from '../../local/fhir/indexed-repository.js';
import { leanSteps, runLeanTransaction } from '../../local/fhir/transaction.js';

/** Ids from a counter, so that both sides name new resources alike. */
export class CountingRepository extends IndexedRepository {
  private n = 0;
  override generateId(): string {
    return `id-${String(++this.n)}`;
  }
}

export type Outcome = [unknown, unknown];
const router = new FhirRouter();

/** Through Medplum's router (`processBatch`), as the server did before the lean path. */
export async function viaRouter(repo: IndexedRepository, bundle: Bundle): Promise<Outcome> {
  const [outcome, result] = await router.handleRequest(
    {
      method: 'POST',
      url: '',
      pathname: '',
      params: {},
      query: {},
      body: bundle,
      config: { transactions: true },
    },
    repo,
  );
  return [outcome, result];
}

/** Through the lean path; an error becomes the outcome the router would have normalised. */
export async function viaLean(repo: IndexedRepository, bundle: Bundle): Promise<Outcome> {
  const steps = leanSteps(bundle);
  if (!steps) throw new Error('not a lean bundle');
  try {
    return [{ ok: true }, await runLeanTransaction(repo, bundle, steps)];
  } catch (err) {
    return [normalizeOperationOutcome(err), undefined];
  }
}
