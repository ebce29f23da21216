/** The feature extractors: compile a manifest's input spec once, extract rows many times. */
import type { ImageInput, ModelManifest } from '../inference/manifest.js';
import { FeatureSpecError } from './errors.js';
import { compileSequence, type SequenceExtractor } from './sequence.js';
import { compileTabular, type TabularExtractor } from './tabular.js';
import { UnitConverterCache } from './units.js';

export { compileTabular, type CompileOptions, type TabularExtractor } from './tabular.js';
export {
  compileSequence,
  durationMs,
  readFractionalAge,
  type SequenceCompileOptions,
  type SequenceExtractor,
} from './sequence.js';
export {
  compileImageExtractor,
  type ImageExtractor,
  type ImageExtractorOptions,
  type ImageExtractResult,
} from './image.js';
// decodeDicomImage: from './dicom.js' (image.ts loads it on the first image, not at init).
export type { DecodedImage, DicomDecodeOutcome } from './dicom.js';
export { parseMultipartRelated, type MultipartPart } from './multipart.js';
export { checkAllowed, type AllowList } from './allow-list.js';
export { parseIsoDuration, subtractDuration, DurationError, type IsoDuration } from './duration.js';
export { UnitConverterCache, UCUM_SYSTEM, IDENTITY_CONVERTER, type UnitConverter } from './units.js';
export { FeatureError, FeatureSpecError } from './errors.js';
export { parseFhirDateTime, type FhirTime } from './fhir-time.js';
export {
  createNdjsonPrefilter,
  parseNdjsonLines,
  type CodeValues,
  type NdjsonPrefilter,
  type ParsedLines,
} from './ndjson.js';

/** What `compileExtractor` gives for a tabular or sequence model. */
export type ObservationExtractor = TabularExtractor | SequenceExtractor;

/**
 * The one entry point for Observation-driven models: a tabular or sequence manifest compiled
 * into `{ extract(patient, observations, asOf) → ExtractResult }`. Image models need the async
 * DICOMweb extractor (`compileImageExtractor`): asking for one here throws a `FeatureSpecError`.
 */
export function compileExtractor(
  manifest: Pick<ModelManifest, 'id' | 'input'>,
  options: { readonly units?: UnitConverterCache } = {},
): ObservationExtractor {
  const units = options.units ?? new UnitConverterCache();
  const input = manifest.input;
  switch (input.kind) {
    case 'tabular':
      return compileTabular(input, { units });
    case 'sequence':
      return compileSequence(input, { units });
    case 'image':
      return imageRefused(manifest.id, input);
  }
}

function imageRefused(id: string, _input: ImageInput): never {
  throw new FeatureSpecError(
    `model "${id}": image inputs are extracted from ImagingStudies with compileImageExtractor, not compileExtractor`,
  );
}
