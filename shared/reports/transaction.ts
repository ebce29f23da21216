/**
 * The write-back: one FHIR `transaction` Bundle per prediction, holding the model's card (a
 * DocumentReference, when the card is given) and Device, the result Observation, the
 * DiagnosticReport and the Provenance (ARCHITECTURE.md "Write-back"; PROTOCOLS.md "AI
 * Transparency": model card and Device before the Provenance).
 *
 * Idempotency (a redelivered event or a re-run must write nothing new):
 * - Model card: conditional create, `ifNoneExist: identifier=<card system>|<modelId>@<version>`;
 *   one per model version. The Device names it (extension), the Provenance lists it (entity).
 * - Device: conditional create, `ifNoneExist: identifier=<device system>|<modelId>@<version>`;
 *   one Device per model version, shared by all its reports.
 * - DiagnosticReport: conditional create on its idempotency-key identifier.
 * - Observation: conditional create on its own identifier (`<key>-score`). `identifier` is a
 *   search parameter of Observation on every server, so this is a true no-op on a re-run
 *   (no new version), and needs no client-assigned ids.
 * - Provenance: R4 has no `identifier` search parameter on Provenance, so a conditional create
 *   cannot find it again; and a plain POST would add a second Provenance on every re-run,
 *   even though the report's conditional create found the old report. So the Provenance is
 *   written with PUT to `Provenance/<id>`, the id a UUID derived from the key: update-as-create
 *   the first time, an overwrite with the same content afterwards, never a duplicate. It needs
 *   a server that allows client-assigned ids on update (HAPI, Medplum, HealthLake do).
 *
 * References between entries are `urn:uuid:` fullUrls; the server rewrites them to the
 * created or found resources. Every UUID is derived from the key (the Device's from its
 * identifier), so the same arguments give a byte-identical bundle.
 */
import type {
  Bundle,
  BundleEntry,
  CodeableConcept,
  Coding,
  Device,
  DiagnosticReport,
  Observation,
  ObservationComponent,
  Provenance,
  ProvenanceEntity,
  Quantity,
  Reference,
} from '@medplum/fhirtypes';
import type { ModelManifest } from '../inference/manifest.js';
import type { FeatureRow, Prediction } from '../types.js';
import { ReportInputError } from './errors.js';
import { deterministicUuid, idempotencyKey } from './idempotency.js';
import { IDEMPOTENCY_KEY_SYSTEM, MODEL_DEVICE_SYSTEM, writtenMeta } from './labels.js';
import {
  MODEL_CARD_ENTITY_ROLE,
  MODEL_CARD_EXTENSION,
  MODEL_CARD_SYSTEM,
  modelCardDocument,
  modelVersionId,
  type ModelCard,
} from './model-card.js';

export const UCUM_SYSTEM = 'http://unitsofmeasure.org';
export const PROVENANCE_PARTICIPANT_TYPE =
  'http://terminology.hl7.org/CodeSystem/provenance-participant-type';
export const PARTICIPANT_AUTHOR = 'author'; // Author
export const V3_DATA_OPERATION = 'http://terminology.hl7.org/CodeSystem/v3-DataOperation';
export const DATA_OPERATION_CREATE = 'CREATE'; // create
export const DEVICE_NAME_TYPE_MODEL = 'model-name'; // Model name
/** Suffix of the score Observation's identifier value after the idempotency key. */
export const SCORE_IDENTIFIER_SUFFIX = '-score';

/** Resource types `Observation.derivedFrom` may point at (R4). */
const DERIVED_FROM_TYPES: ReadonlySet<string> = new Set([
  'Observation',
  'DocumentReference',
  'ImagingStudy',
  'Media',
  'QuestionnaireResponse',
  'MolecularSequence',
]);

const PATIENT_REFERENCE = /^Patient\/[A-Za-z0-9\-.]{1,64}$/;

export interface ReportSystemOptions {
  /** Identifier system of the model Device. Default `urn:fhir-analytics:model`. */
  readonly deviceSystem?: string;
  /** Identifier system of the idempotency key. Default `urn:fhir-analytics:idempotency-key`. */
  readonly keySystem?: string;
  /** Identifier system of model cards. Default `urn:fhir-analytics:model-card`. */
  readonly modelCardSystem?: string;
}

export interface ReportTransactionArgs {
  readonly manifest: ModelManifest;
  /** The subject, `Patient/<id>` (no version). */
  readonly patient: string;
  readonly row: FeatureRow;
  readonly prediction: Prediction;
  /** When the report is issued (`DiagnosticReport.issued`, `Provenance.recorded`). */
  readonly issued: Date;
  readonly system?: ReportSystemOptions;
  /**
   * The model version's card: written (once per version) as a DocumentReference that the Device
   * and the Provenance name. Every write-back from the functions and the sweep passes it.
   */
  readonly modelCard?: ModelCard;
}

export interface ReportTransaction {
  readonly bundle: Bundle;
  readonly idempotencyKey: string;
}

type Threshold = ModelManifest['output']['thresholds'][number];

/** The band of `score`: the highest `atOrAbove` that is ≤ score; `undefined` below every band. */
export function selectBand(thresholds: readonly Threshold[], score: number): Threshold | undefined {
  let band: Threshold | undefined;
  for (const t of [...thresholds].sort((a, b) => a.atOrAbove - b.atOrAbove)) {
    if (t.atOrAbove <= score) band = t;
  }
  return band;
}

/** The score for FHIR: 6 significant digits (a float32 carries about 7; the rest is noise). */
function fhirScore(score: number): number {
  return Number(score.toPrecision(6));
}

/** A short conclusion: band label and score, the model and its status; never patient data. */
export function conclusionText(manifest: ModelManifest, score: number, band: Threshold | undefined): string {
  const shown = String(Number(score.toPrecision(3)));
  const label = band ? (band.conclusion.display ?? band.conclusion.code) : 'Score';
  return `${label} (score ${shown}). AI-generated by ${manifest.id} ${manifest.version}; not for clinical use.`;
}

const concept = (coding: Coding): CodeableConcept => ({
  coding: [{ ...coding }],
  ...(coding.display === undefined ? {} : { text: coding.display }),
});

function quantity(value: number, unit: string): Quantity {
  return { value, unit, system: UCUM_SYSTEM, code: unit };
}

function checkArgs(args: ReportTransactionArgs): void {
  if (!PATIENT_REFERENCE.test(args.patient)) {
    throw new ReportInputError(
      `patient must be a "Patient/<id>" reference, got ${JSON.stringify(args.patient)}`,
    );
  }
  if (!Number.isFinite(args.prediction.score))
    throw new ReportInputError('prediction.score is not a finite number');
  if (!Number.isFinite(args.issued.getTime())) throw new ReportInputError('issued is not a valid date');
  const probabilities = args.prediction.probabilities;
  if (probabilities !== undefined && probabilities.length !== args.manifest.output.labels.length) {
    throw new ReportInputError(
      `prediction has ${probabilities.length} probabilities, manifest ${args.manifest.id} has ${args.manifest.output.labels.length} labels`,
    );
  }
}

/** The UUIDs of a model version's Device and card (a few per process), hashed once each. */
const modelUuids = new Map<string, string>();
function modelUuid(system: string, modelIdentifier: string): string {
  const key = `${system}\u0000${modelIdentifier}`;
  let uuid = modelUuids.get(key);
  if (uuid === undefined) {
    uuid = deterministicUuid(system, modelIdentifier);
    if (modelUuids.size >= 1000) modelUuids.clear();
    modelUuids.set(key, uuid);
  }
  return uuid;
}

/** Builds the write-back transaction for one prediction. Throws `ReportInputError` on inconsistent arguments. */
export function buildReportTransaction(args: ReportTransactionArgs): ReportTransaction {
  checkArgs(args);
  const { manifest, patient, row, prediction } = args;
  const deviceSystem = args.system?.deviceSystem ?? MODEL_DEVICE_SYSTEM;
  const keySystem = args.system?.keySystem ?? IDEMPOTENCY_KEY_SYSTEM;
  const inputs = [...new Set(row.inputs)].sort();
  const key = idempotencyKey(manifest.id, manifest.version, patient, inputs);
  const issued = args.issued.toISOString();
  const modelIdentifier = modelVersionId(manifest);
  const cardSystem = args.system?.modelCardSystem ?? MODEL_CARD_SYSTEM;

  const deviceUrl = `urn:uuid:${modelUuid(deviceSystem, modelIdentifier)}`;
  const cardUrl = `urn:uuid:${modelUuid(cardSystem, modelIdentifier)}`;
  const scoreUrl = `urn:uuid:${deterministicUuid(key, 'observation:score')}`;
  const reportUrl = `urn:uuid:${deterministicUuid(key, 'diagnostic-report')}`;
  const provenanceId = deterministicUuid(key, 'provenance');
  const deviceRef: Reference<Device> = {
    reference: deviceUrl,
    display: `${manifest.title} ${manifest.version}`,
  };
  const subject = { reference: patient };
  const effective = row.effective === undefined ? {} : { effectiveDateTime: row.effective };

  const device: Device = {
    resourceType: 'Device',
    meta: writtenMeta(),
    ...(args.modelCard
      ? { extension: [{ url: MODEL_CARD_EXTENSION, valueReference: { reference: cardUrl } }] }
      : {}),
    identifier: [{ system: deviceSystem, value: modelIdentifier }],
    status: 'active',
    deviceName: [{ name: manifest.title, type: DEVICE_NAME_TYPE_MODEL }],
    modelNumber: manifest.id,
    version: [{ value: manifest.version }],
    type: { text: `Machine-learning model (${manifest.family})` },
    note: [{ text: `${manifest.intendedUse} Not for clinical use.` }],
  };

  const band = selectBand(manifest.output.thresholds, prediction.score);
  const components: ObservationComponent[] = (prediction.probabilities ?? []).map((p, i) => ({
    code: concept((manifest.output.labels[i] as { code: Coding }).code),
    valueQuantity: quantity(fhirScore(p), '1'),
  }));
  const derivedFrom = inputs.filter((ref) => DERIVED_FROM_TYPES.has(ref.split('/')[0] ?? ''));
  const score: Observation = {
    resourceType: 'Observation',
    meta: writtenMeta(),
    identifier: [{ system: keySystem, value: `${key}${SCORE_IDENTIFIER_SUFFIX}` }],
    status: 'preliminary',
    code: concept(manifest.output.code),
    subject,
    ...effective,
    issued,
    valueQuantity: quantity(fhirScore(prediction.score), manifest.output.unit),
    device: deviceRef,
    ...(derivedFrom.length > 0 ? { derivedFrom: derivedFrom.map((reference) => ({ reference })) } : {}),
    ...(components.length > 0 ? { component: components } : {}),
  };

  const report: DiagnosticReport = {
    resourceType: 'DiagnosticReport',
    meta: writtenMeta(),
    identifier: [{ system: keySystem, value: key }],
    status: manifest.report.status,
    category: manifest.report.category.map(concept),
    code: concept(manifest.report.code),
    subject,
    ...effective,
    issued,
    // No `performer`: R4 allows only Practitioner, PractitionerRole, Organization or CareTeam
    // there, and servers that check reference targets refuse a Device. The model is named by
    // the result Observation's `device` and by the Provenance agent, both of which take a Device.
    result: [{ reference: scoreUrl }],
    conclusion: conclusionText(manifest, prediction.score, band),
    ...(band ? { conclusionCode: [concept(band.conclusion)] } : {}),
  };

  const provenance: Provenance = {
    resourceType: 'Provenance',
    id: provenanceId,
    meta: writtenMeta(),
    target: [{ reference: reportUrl }, { reference: scoreUrl }],
    recorded: issued,
    activity: { coding: [{ system: V3_DATA_OPERATION, code: DATA_OPERATION_CREATE, display: 'create' }] },
    agent: [
      {
        type: {
          coding: [{ system: PROVENANCE_PARTICIPANT_TYPE, code: PARTICIPANT_AUTHOR, display: 'Author' }],
        },
        who: deviceRef,
      },
    ],
    entity: [
      ...inputs.map((reference): ProvenanceEntity => ({ role: 'source', what: { reference } })),
      ...(args.modelCard
        ? [{ role: MODEL_CARD_ENTITY_ROLE, what: { reference: cardUrl } } satisfies ProvenanceEntity]
        : []),
    ],
  };

  const entries: BundleEntry[] = [
    ...(args.modelCard
      ? [
          {
            fullUrl: cardUrl,
            resource: modelCardDocument(manifest, args.modelCard, cardSystem),
            request: {
              method: 'POST',
              url: 'DocumentReference',
              ifNoneExist: `identifier=${cardSystem}|${modelIdentifier}`,
            },
          } satisfies BundleEntry,
        ]
      : []),
    {
      fullUrl: deviceUrl,
      resource: device,
      request: {
        method: 'POST',
        url: 'Device',
        ifNoneExist: `identifier=${deviceSystem}|${modelIdentifier}`,
      },
    },
    {
      fullUrl: scoreUrl,
      resource: score,
      request: {
        method: 'POST',
        url: 'Observation',
        ifNoneExist: `identifier=${keySystem}|${key}${SCORE_IDENTIFIER_SUFFIX}`,
      },
    },
    {
      fullUrl: reportUrl,
      resource: report,
      request: { method: 'POST', url: 'DiagnosticReport', ifNoneExist: `identifier=${keySystem}|${key}` },
    },
    {
      fullUrl: `urn:uuid:${provenanceId}`,
      resource: provenance,
      request: { method: 'PUT', url: `Provenance/${provenanceId}` },
    },
  ];
  return { bundle: { resourceType: 'Bundle', type: 'transaction', entry: entries }, idempotencyKey: key };
}
