/**
 * Types that cross module boundaries: what the feature extractors hand to inference and to
 * the report builder, and what inference hands back. Kept here so that `features`,
 * `inference`, `reports` and `pipeline` agree without importing each other.
 */

/** A versioned reference to an input resource, e.g. `Observation/123/_history/2`. */
export type VersionedReference = string;

/** Why one candidate resource was not used for a feature (no values, no free text). */
export interface SkippedInput {
  readonly feature: string;
  /** `Observation/123` (unversioned is fine when no version is known). */
  readonly reference: string;
  /** A short machine reason: `status:entered-in-error`, `unit:unconvertible`, `value:missing`, … */
  readonly reason: string;
}

/** One model row, ready for the input tensor, with what it was made from. */
export interface FeatureRow {
  /** Values in manifest feature order (tabular: `[features]`; sequence: `[steps × features]`; image: `[H × W]`). */
  readonly values: Float32Array;
  /** The tensor shape without the batch dimension. */
  readonly shape: readonly number[];
  /** Sequence models: the mask `[steps]`, 1 for a real step. */
  readonly mask?: Float32Array;
  /** Each input resource used, with its version, sorted: the Provenance entities and the idempotency key. */
  readonly inputs: readonly VersionedReference[];
  /** The newest effective time among the inputs (ISO 8601), the report's `effectiveDateTime`. */
  readonly effective: string | undefined;
  /** Per feature: its name and whether it was observed or imputed (never its value). */
  readonly provenance: readonly {
    readonly feature: string;
    readonly imputed: boolean;
    readonly inputs: readonly VersionedReference[];
  }[];
}

export type ExtractResult =
  | { readonly status: 'ok'; readonly row: FeatureRow; readonly skipped: readonly SkippedInput[] }
  | {
      readonly status: 'insufficient-data';
      /** Names of the required features that had no usable value. */
      readonly missing: readonly string[];
      readonly skipped: readonly SkippedInput[];
    };

/** What a model said about one row. */
export interface Prediction {
  /** Probability of the positive class, or the regression score. */
  readonly score: number;
  /** For classifiers: the probability per label, in manifest label order. */
  readonly probabilities?: readonly number[];
}

/** The outcome of processing one patient for one model. */
export type Outcome = 'written' | 'unchanged' | 'insufficient-data' | 'failed' | 'skipped';
