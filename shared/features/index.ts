/** The feature extractors: compile a manifest's input spec once, extract rows many times. */
export { compileTabular, type CompileOptions, type TabularExtractor } from './tabular.js';
export { parseIsoDuration, subtractDuration, DurationError, type IsoDuration } from './duration.js';
export { UnitConverterCache, UCUM_SYSTEM, IDENTITY_CONVERTER, type UnitConverter } from './units.js';
export { FeatureError, FeatureSpecError } from './errors.js';
export { parseFhirDateTime, type FhirTime } from './fhir-time.js';
