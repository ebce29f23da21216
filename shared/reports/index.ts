/** The write-back: DiagnosticReport, result Observation, Provenance, Device and model card in one transaction. */
export {
  buildReportTransaction,
  conclusionText,
  selectBand,
  type ReportSystemOptions,
  type ReportTransaction,
  type ReportTransactionArgs,
} from './transaction.js';
export { idempotencyKey, deterministicUuid } from './idempotency.js';
export {
  AI_ASSERTED_SECURITY_LABEL,
  WRITTEN_BY_TAG,
  IDEMPOTENCY_KEY_SYSTEM,
  MODEL_DEVICE_SYSTEM,
  isWrittenByFhirAnalytics,
  writtenMeta,
} from './labels.js';
export { ReportError, ReportInputError } from './errors.js';
export { writtenReport, type WrittenReport } from './response.js';
export {
  AI_MODEL_CARD_CS,
  MODEL_CARD_EXTENSION,
  MODEL_CARD_SYSTEM,
  loadModelCards,
  modelCardDocument,
  modelVersionId,
  type ModelCard,
  type ModelCards,
} from './model-card.js';
export {
  createModelResourceCache,
  findStoredModelEntry,
  isModelEntry,
  pointAtStored,
  storedReference,
  type FindStoredModelEntry,
  type ModelResourceCache,
} from './model-resources.js';
