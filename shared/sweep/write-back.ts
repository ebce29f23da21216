/**
 * Batched write-back of report transactions (each from `buildReportTransaction`: model card,
 * Device, score Observation, DiagnosticReport, Provenance).
 *
 * Measured on the embedded server (2,000 reports, bench in the commit message): one
 * transaction per report 178/s at 8 in flight (288/s one at a time: the server serialises
 * transactions); without the Device entry 341/s; two reports per transaction 543/s. A `batch`
 * bundle cannot carry them (no reference resolution between batch entries), and servers such as
 * Medplum refuse transactions of more than 8 entries with conditional creates. So:
 * - the model's Device and card are created (conditionally, as the builder asks) once per sweep
 *   process, and each report's `urn:uuid:` references to them are replaced by `Device/<id>` and
 *   `DocumentReference/<id>`, which is what the server would have stored anyway;
 * - the other three entries of `REPORTS_PER_TRANSACTION` reports go in one transaction
 *   (6 entries ≤ 8), several transactions in flight; each report stays whole in one
 *   transaction, conditional creates keep re-runs idempotent (200, not 201);
 * - a transaction that fails is retried one report at a time, so one bad report fails alone.
 */
import type { Bundle, BundleEntry } from '@medplum/fhirtypes';
import { isModelEntry, replaceReferences, storedReference } from '../reports/model-resources.js';
import type { TransactionPoster } from './transaction-client.js';

export const REPORTS_PER_TRANSACTION = 2;
const MAX_CONDITIONAL_ENTRIES = 8;

/** A report transaction, built (`bundle`) or to be built when a worker takes it (`build`). */
export type ReportWrite = { readonly bundle: Bundle } | { readonly build: () => Bundle };

/** Per report: true created (201), false found (200), or the error. */
export type WriteResult = { ok: true; created: boolean } | { ok: false; error: Error };

export interface ReportWriter {
  write(reports: readonly ReportWrite[]): Promise<WriteResult[]>;
}

function statusOf(entry: BundleEntry | undefined): boolean | undefined {
  const status = entry?.response?.status;
  return status === undefined ? undefined : status.startsWith('201');
}

export function createReportWriter(
  fhir: TransactionPoster,
  opts: { concurrency?: number } = {},
): ReportWriter {
  /** The model entries' fullUrls (deterministic per model version) → their references on the server. */
  const models = new Map<string, Promise<Map<string, string>>>();

  const modelRefs = (model: BundleEntry[]): Promise<Map<string, string>> => {
    const key = model.map((e) => e.fullUrl ?? '').join(' ');
    let refs = models.get(key);
    if (!refs) {
      refs = fhir.transaction({ resourceType: 'Bundle', type: 'transaction', entry: model }).then((res) => {
        const out = new Map<string, string>();
        model.forEach((e, i) => {
          const ref = storedReference(e, res.entry?.[i]);
          if (!ref) throw new Error(`the server named no ${e.resource?.resourceType ?? 'resource'}`);
          out.set(e.fullUrl ?? '', ref);
        });
        return out;
      });
      refs.catch(() => models.delete(key));
      models.set(key, refs);
    }
    return refs;
  };

  /**
   * The report's entries without the model's Device and card, references pointing at the stored
   * ones (in place: a `bundle` given built may be shared, so it is copied first).
   */
  const entriesOf = async (report: ReportWrite): Promise<BundleEntry[]> => {
    const bundle = 'build' in report ? report.build() : structuredClone<Bundle>(report.bundle);
    const entries = bundle.entry ?? [];
    const model = entries.filter((e) => isModelEntry(e) && e.fullUrl);
    const rest = entries.filter((e) => !model.includes(e));
    if (!model.length) return rest;
    return replaceReferences(rest, await modelRefs(model));
  };

  const reportIndex = (entries: readonly BundleEntry[]): number =>
    entries.findIndex((e) => e.resource?.resourceType === 'DiagnosticReport');

  const writeGroup = async (group: readonly BundleEntry[][]): Promise<WriteResult[]> => {
    const entry = group.flat();
    // Only each entry's status is read: the stored resources need not come back.
    const response = await fhir.transaction(
      { resourceType: 'Bundle', type: 'transaction', entry },
      { minimal: true },
    );
    let offset = 0;
    return group.map((entries) => {
      const created = statusOf(response.entry?.[offset + reportIndex(entries)]);
      offset += entries.length;
      return { ok: true, created: created !== false };
    });
  };

  /** Writes one group; when the transaction fails, each report alone, so one bad report fails alone. */
  const writeWithFallback = async (
    group: readonly { index: number; entries: BundleEntry[] }[],
    results: WriteResult[],
  ): Promise<void> => {
    if (group.length === 0) return;
    try {
      const out = await writeGroup(group.map((g) => g.entries));
      group.forEach(
        (g, k) => (results[g.index] = out[k] ?? { ok: false, error: new Error('no response entry') }),
      );
    } catch (err) {
      if (group.length === 1) {
        results[group[0]?.index ?? 0] = { ok: false, error: err as Error };
        return;
      }
      for (const g of group) {
        try {
          const [one] = await writeGroup([g.entries]);
          results[g.index] = one ?? { ok: false, error: new Error('no response entry') };
        } catch (e) {
          results[g.index] = { ok: false, error: e as Error };
        }
      }
    }
  };

  return {
    async write(reports) {
      const results = new Array<WriteResult>(reports.length);
      let next = 0;
      /** Takes the next report and builds it; undefined when none is left. */
      const take = async (): Promise<{ index: number; entries: BundleEntry[] } | undefined> => {
        while (next < reports.length) {
          const index = next++;
          try {
            return { index, entries: await entriesOf(reports[index] as ReportWrite) };
          } catch (err) {
            results[index] = { ok: false, error: err as Error };
          }
        }
        return undefined;
      };
      // Each worker fills a transaction with up to REPORTS_PER_TRANSACTION reports (at most
      // MAX_CONDITIONAL_ENTRIES entries), writes it, and takes the next ones.
      const worker = async (): Promise<void> => {
        let carry: { index: number; entries: BundleEntry[] } | undefined;
        for (;;) {
          const first = carry ?? (await take());
          carry = undefined;
          if (!first) return;
          const group = [first];
          let size = first.entries.length;
          while (group.length < REPORTS_PER_TRANSACTION) {
            const more = await take();
            if (!more) break;
            if (size + more.entries.length > MAX_CONDITIONAL_ENTRIES) {
              carry = more;
              break;
            }
            group.push(more);
            size += more.entries.length;
          }
          await writeWithFallback(group, results);
        }
      };
      await Promise.all(
        Array.from({ length: Math.max(1, Math.min(opts.concurrency ?? 8, reports.length)) }, worker),
      );
      return results;
    },
  };
}
