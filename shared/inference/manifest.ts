/**
 * The model manifest: one JSON file per model (`models/<id>/manifest.json`) drives the
 * featurizer, the endpoint call, the report and the infrastructure. Adding a model means
 * adding a folder, not code, so this schema must fit all six families (svm, rf, gbm, cnn,
 * rnn, attention) and the three input kinds (tabular, sequence, image).
 */
import * as z from 'zod';

/** ISO 8601 duration such as `P2Y`, `P6M`, `P30D`, `PT12H`. */
export const IsoDurationSchema = z
  .string()
  .regex(
    /^P(?!$)(\d+Y)?(\d+M)?(\d+W)?(\d+D)?(T(?=\d)(\d+H)?(\d+M)?(\d+S)?)?$/,
    'an ISO 8601 duration such as P2Y',
  );

export const CodingSchema = z.object({
  system: z.string().min(1),
  code: z.string().min(1),
  display: z.string().optional(),
});
export type Coding = z.infer<typeof CodingSchema>;

/** How a missing optional feature is filled in before inference. */
export const ImputationSchema = z.discriminatedUnion('strategy', [
  /** No value: the feature is required, or the model cannot take a gap. */
  z.object({ strategy: z.literal('none') }),
  /** A constant, usually the training set's median (stated in the card). */
  z.object({ strategy: z.literal('constant'), value: z.number() }),
  /** Send NaN: the graph imputes (e.g. the random forest's in-graph imputer). */
  z.object({ strategy: z.literal('nan') }),
]);
export type Imputation = z.infer<typeof ImputationSchema>;

export const AggregateSchema = z.enum(['latest', 'mean', 'min', 'max', 'count', 'slope']);
export type Aggregate = z.infer<typeof AggregateSchema>;

/** A feature read from Observations (top-level code or a panel's component code). */
export const ObservationFeatureSchema = z.object({
  name: z.string().min(1),
  source: z.literal('observation'),
  /** Any of these codings matches, on `Observation.code` or on `component.code`. */
  codes: z.array(CodingSchema).min(1),
  /** UCUM unit the model expects; values are converted to it. Omit for unitless values. */
  unit: z.string().optional(),
  /** g/mol, for mass↔molar conversions (glucose 180.156, cholesterol 386.65). */
  molecularWeight: z.number().positive().optional(),
  aggregate: AggregateSchema.default('latest'),
  lookback: IsoDurationSchema,
  required: z.boolean(),
  imputation: ImputationSchema.default({ strategy: 'none' }),
  /** Applied after conversion and aggregation. */
  transform: z.enum(['none', 'ln']).default('none'),
  /** For CodeableConcept and boolean values: `system|code` (or `true`/`false`) → number. */
  valueMap: z.record(z.string(), z.number()).optional(),
  /** Accept `preliminary` results as well as final, amended and corrected. */
  acceptPreliminary: z.boolean().default(false),
});
export type ObservationFeature = z.infer<typeof ObservationFeatureSchema>;

/** A feature read from the Patient resource. */
export const PatientFeatureSchema = z.object({
  name: z.string().min(1),
  source: z.enum(['patient.age', 'patient.sex']),
  required: z.boolean(),
  imputation: ImputationSchema.default({ strategy: 'none' }),
  /** For `patient.sex`: administrative gender → number (e.g. `{ "female": 1, "male": 2 }`). */
  valueMap: z.record(z.string(), z.number()).optional(),
});
export type PatientFeature = z.infer<typeof PatientFeatureSchema>;

export const TabularFeatureSchema = z.discriminatedUnion('source', [
  ObservationFeatureSchema,
  PatientFeatureSchema.extend({ source: z.literal('patient.age') }),
  PatientFeatureSchema.extend({ source: z.literal('patient.sex') }),
]);
export type TabularFeature = z.infer<typeof TabularFeatureSchema>;

export const TabularInputSchema = z.object({
  kind: z.literal('tabular'),
  /** The input tensor that receives the feature vector, in `features` order. */
  tensor: z.string().min(1),
  features: z.array(TabularFeatureSchema).min(1),
});

export const SequenceInputSchema = z.object({
  kind: z.literal('sequence'),
  /** Input tensor `[N, steps, features]` and mask tensor `[N, steps]` (1 = a real step). */
  tensor: z.string().min(1),
  maskTensor: z.string().min(1),
  features: z.array(TabularFeatureSchema).min(1),
  /** Width of one time bin. */
  step: IsoDurationSchema,
  /** Most bins sent to the model (the newest ones). */
  steps: z.number().int().positive(),
  alignment: z.enum(['newest', 'oldest']).default('newest'),
  /** How long a value may be carried forward into later empty bins. */
  carryForward: IsoDurationSchema.optional(),
  /** Fewest bins with data for a prediction. */
  minSteps: z.number().int().positive().default(1),
});

export const ImageInputSchema = z.object({
  kind: z.literal('image'),
  tensor: z.string().min(1),
  modality: z.string().min(1),
  bodySite: CodingSchema.optional(),
  /** Output size `[H, W]` after resampling. */
  size: z.tuple([z.number().int().positive(), z.number().int().positive()]),
  window: z.object({ center: z.number(), width: z.number().positive() }),
  normalisation: z.enum(['unit', 'none']).default('unit'),
  /** Largest rows × columns accepted from a DICOM instance (memory bound). */
  maxPixels: z
    .number()
    .int()
    .positive()
    .default(4096 * 4096),
});

export const ModelInputSchema = z.discriminatedUnion('kind', [
  TabularInputSchema,
  SequenceInputSchema,
  ImageInputSchema,
]);
export type ModelInput = z.infer<typeof ModelInputSchema>;
export type TabularInput = z.infer<typeof TabularInputSchema>;
export type SequenceInput = z.infer<typeof SequenceInputSchema>;
export type ImageInput = z.infer<typeof ImageInputSchema>;

export const TriggerSchema = z.discriminatedUnion('resourceType', [
  z.object({ resourceType: z.literal('Observation'), codes: z.array(CodingSchema).min(1) }),
  z.object({ resourceType: z.literal('ImagingStudy'), modality: z.string().min(1) }),
]);
export type Trigger = z.infer<typeof TriggerSchema>;

export const TensorDataTypeSchema = z.enum(['FP32', 'FP64', 'INT64', 'INT32', 'BOOL']);
export type TensorDataType = z.infer<typeof TensorDataTypeSchema>;

export const TensorSpecSchema = z.object({
  name: z.string().min(1),
  datatype: TensorDataTypeSchema,
  /** Dimensions without the batch dimension; -1 for a dynamic one. */
  dims: z.array(z.number().int()),
});
export type TensorSpec = z.infer<typeof TensorSpecSchema>;

export const ThresholdSchema = z.object({
  /** The score at or above which this band applies. */
  atOrAbove: z.number(),
  indicator: z.enum(['info', 'warning', 'critical']),
  conclusion: CodingSchema,
});

export const ModelOutputSchema = z.object({
  /**
   * `probability`: the tensor holds class probabilities `[N, labels.length]`, or `[N]` /
   * `[N, 1]` for the positive class; `regression`: one score per row.
   */
  kind: z.enum(['probability', 'regression']),
  /** Output tensor to read the score from. */
  tensor: z.string().min(1),
  /** For classifiers, the class labels in tensor column order; the last is the positive class. */
  labels: z.array(z.object({ code: CodingSchema })).default([]),
  /** Bands ordered by `atOrAbove` ascending; the highest matched wins. */
  thresholds: z.array(ThresholdSchema).min(1),
  /** UCUM unit of the score (`1` for probabilities, `{score}` for a regression score). */
  unit: z.string().default('1'),
  /** Code of the result Observation that carries the score. */
  code: CodingSchema,
});
export type ModelOutput = z.infer<typeof ModelOutputSchema>;

export const ModelManifestSchema = z.object({
  id: z.string().regex(/^[a-z0-9][a-z0-9-]{1,62}$/, 'lowercase letters, digits and dashes'),
  version: z.string().regex(/^\d+\.\d+\.\d+$/, 'a semantic version such as 1.0.0'),
  family: z.enum(['svm', 'rf', 'gbm', 'cnn', 'rnn', 'attention']),
  task: z.enum(['classification', 'regression']),
  title: z.string().min(1),
  intendedUse: z.string().min(1),
  notForClinicalUse: z.literal(true),
  triggers: z.array(TriggerSchema).min(1),
  input: ModelInputSchema,
  output: ModelOutputSchema,
  report: z.object({
    code: CodingSchema,
    category: z.array(CodingSchema).min(1),
    status: z.literal('preliminary').default('preliminary'),
  }),
  serving: z.object({
    tritonModelName: z.string().min(1),
    instanceType: z.string().regex(/^ml\./),
    maxBatchSize: z.number().int().positive(),
    inputs: z.array(TensorSpecSchema).min(1),
    outputs: z.array(TensorSpecSchema).min(1),
  }),
  /** Held-out metrics the training script measured, copied into the card. */
  metrics: z.record(z.string(), z.number()).default({}),
});
export type ModelManifest = z.infer<typeof ModelManifestSchema>;

/** Parses a manifest; the error names the file and the failing path. */
export class ManifestError extends Error {
  override name = 'ManifestError';
}

export function parseManifest(raw: unknown, file: string): ModelManifest {
  const result = ModelManifestSchema.safeParse(raw);
  if (!result.success) {
    const issues = result.error.issues
      .map((i) => `${i.path.length ? i.path.join('.') : '(root)'}: ${i.message}`)
      .join('; ');
    throw new ManifestError(`${file}: invalid manifest: ${issues}`);
  }
  const m = result.data;
  const inputNames = new Set(m.serving.inputs.map((t) => t.name));
  const needed = m.input.kind === 'sequence' ? [m.input.tensor, m.input.maskTensor] : [m.input.tensor];
  for (const name of needed) {
    if (!inputNames.has(name)) {
      throw new ManifestError(`${file}: invalid manifest: input: tensor "${name}" is not in serving.inputs`);
    }
  }
  if (!m.serving.outputs.some((t) => t.name === m.output.tensor)) {
    throw new ManifestError(
      `${file}: invalid manifest: output.tensor: "${m.output.tensor}" is not in serving.outputs`,
    );
  }
  return m;
}
