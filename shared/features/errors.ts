/**
 * Errors of the feature extractors. They signal programming or manifest errors found while
 * compiling a feature spec; bad patient data is never thrown, it is skipped with a reason.
 */
export class FeatureError extends Error {
  override name = 'FeatureError';
}

/** A manifest feature spec the extractor cannot compile (unknown unit, missing valueMap, …). */
export class FeatureSpecError extends FeatureError {
  override name = 'FeatureSpecError';
}
