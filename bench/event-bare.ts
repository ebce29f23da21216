/**
 * The event bench's reference (bench/event-path.ts): the irreducible calls of one event made
 * bare, sequentially, through the pipeline's own ports: focus read (GET Observation), patient
 * search (Observation?subject=&code=), InvokeEndpoint (one row through the SDK), transaction
 * (as the pipeline sends it, through its model cache: without Device and card once stored).
 * The patient read the features need is made too, untimed (the pipeline overlaps it with the
 * search).
 */
import { performance } from 'node:perf_hooks';
import type { WithId } from '@medplum/core';
import type { Bundle, Observation, Patient } from '@medplum/fhirtypes';
import { observationSearchCodes } from '../shared/features/search-codes.js';
import type { ModelManifest } from '../shared/inference/manifest.js';
import type { createPipelinePorts } from '../shared/ports.js';
import { round, stats, type Stats } from './event-common.js';

export interface BareSamples {
  focusRead: number[];
  patientSearch: number[];
  invokeEndpoint: number[];
  transaction: number[];
}

export const newBareSamples = (): BareSamples => ({
  focusRead: [],
  patientSearch: [],
  invokeEndpoint: [],
  transaction: [],
});

export function bareStats(s: BareSamples): { calls: Record<keyof BareSamples, Stats>; p50Sum: number } {
  const calls = {
    focusRead: stats(s.focusRead),
    patientSearch: stats(s.patientSearch),
    invokeEndpoint: stats(s.invokeEndpoint),
    transaction: stats(s.transaction),
  };
  return { calls, p50Sum: round(Object.values(calls).reduce((sum, x) => sum + x.p50, 0)) };
}

type PipelinePorts = Awaited<ReturnType<typeof createPipelinePorts>>;

const time = async <T>(into: number[], fn: () => Promise<T>): Promise<T> => {
  const t = performance.now();
  const out = await fn();
  into.push(performance.now() - t);
  return out;
};

/**
 * The bare calls for one patient (`Patient/<id>`, history and new result loaded, no event),
 * timed into `bare`. Returns the focus read (the patient's newest matching Observation).
 */
export function bareCalls(
  ports: PipelinePorts,
  manifest: ModelManifest,
): (ref: string, bare: BareSamples) => Promise<WithId<Observation>> {
  const codes = observationSearchCodes([manifest]).join(',');
  return async (ref, bare) => {
    const patientId = ref.slice('Patient/'.length);
    const observations = await time(bare.patientSearch, () =>
      ports.fhir.searchAll<Observation>('Observation', { subject: ref, code: codes, _count: '1000' }),
    );
    const focusId = observations[0]?.id ?? '';
    const focus = await time(bare.focusRead, () => ports.fhir.read<Observation>('Observation', focusId));
    if (!focus?.id) throw new Error(`bare focus ${focusId} not readable`);
    const patient = await ports.fhir.read<Patient>('Patient', patientId);
    const extracted = ports.extractor(manifest).extract(patient, observations, new Date());
    if (extracted.status !== 'ok') throw new Error(`bare patient ${ref} has insufficient data`);
    const [prediction] = await time(bare.invokeEndpoint, () =>
      ports.inference.predict(manifest, [extracted.row]),
    );
    if (!prediction) throw new Error('no prediction');
    const { bundle } = ports.buildReport({
      manifest,
      patient: ref,
      row: extracted.row,
      prediction,
      issued: new Date(),
    });
    const send = (b: Bundle): Promise<Bundle> => time(bare.transaction, () => ports.fhir.transaction(b));
    const { response } = await (ports.modelResources?.write(bundle, send) ??
      send(bundle).then((r) => ({ response: r })));
    if (!response.entry?.some((e) => e.response?.status.startsWith('201')))
      throw new Error('bare transaction created nothing');
    return focus as WithId<Observation>;
  };
}
