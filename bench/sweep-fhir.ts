/**
 * The sweep bench's FHIR server in a process of its own, as the FHIR server is a service of its
 * own wherever the sweep runs: the embedded server with `$export`, the synthetic cohort written
 * straight into its repository, and a Group of the first `small` patients.
 *
 * It runs with {@link FHIR_SERVER_NODE_FLAGS}: a young generation sized for a server that holds
 * about a million resources and allocates a few hundred KB per request. With V8's default
 * (16 MB semi-spaces) each transaction's garbage was promoted and the old generation was
 * marked again and again: at 100,000 patients, in the bench's own process (load ≈ 1), the
 * servers' CPU was 872 ms per 1,000 patients with the default and 643 with 64 MB semi-spaces,
 * the sweep's item phase 65.5 s and 48.6 s. BENCH_SWEEP_FHIR_NODE_ARGS replaces the flags.
 *
 * `startFhirProcess()` from bench/sweep.ts; run directly, this file is that process: it answers
 * requests over the IPC channel until told to stop.
 */
import { fork } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { Group } from '@medplum/fhirtypes';
import { procCpuMs } from './sweep-s3.js';

export const FHIR_SERVER_NODE_FLAGS: readonly string[] = process.env.BENCH_SWEEP_FHIR_NODE_ARGS?.split(
  ' ',
).filter(Boolean) ?? ['--max-semi-space-size=64'];

export interface FhirProcessOptions {
  readonly patients: number;
  /** Members of the Group (the first ones). */
  readonly small: number;
  readonly seed: number;
}

export interface FhirProcess {
  readonly baseUrl: string;
  readonly groupId: string;
  /** Time to write the cohort into the repository, in the server's process. */
  readonly loadMs: number;
  /** The process's CPU time so far. */
  cpuMs(): number;
  /** `$export` kick-offs the server has accepted. */
  kickOffs(): Promise<number>;
  /**
   * Deletes the reports a sweep wrote (DiagnosticReports and Observations with an idempotency
   * key, Provenances); returns how many. The next sweep then writes every report again.
   */
  dropReports(): Promise<number>;
  /** A CPU profile of the server process, written to `file` (none without one) when the returned function is called. */
  profile(file: string | undefined): Promise<() => Promise<void>>;
  stop(): Promise<void>;
}

type Request =
  | { readonly id: number; readonly cmd: 'kickOffs' | 'stop' | 'profileStop' | 'dropReports' }
  | { readonly id: number; readonly cmd: 'profileStart'; readonly file: string };
type Reply = { readonly id: number; readonly result?: unknown; readonly error?: string };
type Ready = {
  readonly ready: true;
  readonly baseUrl: string;
  readonly groupId: string;
  readonly loadMs: number;
};

export async function startFhirProcess(opts: FhirProcessOptions): Promise<FhirProcess> {
  const p = fork(fileURLToPath(import.meta.url), [JSON.stringify(opts)], {
    cwd: fileURLToPath(new URL('..', import.meta.url)),
    execArgv: [...FHIR_SERVER_NODE_FLAGS, '--import', 'tsx'],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  let next = 0;
  const ready = await new Promise<Ready>((resolve, reject) => {
    p.on('message', (m: Ready | Reply) => {
      if ('ready' in m) {
        resolve(m);
        return;
      }
      const waiter = pending.get(m.id);
      pending.delete(m.id);
      if (m.error !== undefined) waiter?.reject(new Error(m.error));
      else waiter?.resolve(m.result);
    });
    p.on('error', reject);
    p.on('exit', (code) => {
      const err = new Error(`FHIR server process exited ${String(code)}`);
      reject(err);
      for (const w of pending.values()) w.reject(err);
      pending.clear();
    });
  });
  type Call =
    { cmd: 'kickOffs' | 'stop' | 'profileStop' | 'dropReports' } | { cmd: 'profileStart'; file: string };
  const call = (req: Call): Promise<unknown> =>
    new Promise((resolve, reject) => {
      const id = ++next;
      pending.set(id, { resolve, reject });
      p.send({ ...req, id });
    });
  return {
    baseUrl: ready.baseUrl,
    groupId: ready.groupId,
    loadMs: ready.loadMs,
    cpuMs: () => procCpuMs(p.pid),
    kickOffs: async () => Number(await call({ cmd: 'kickOffs' })),
    dropReports: async () => Number(await call({ cmd: 'dropReports' })),
    profile: async (file) => {
      if (!file) return async () => {};
      await call({ cmd: 'profileStart', file });
      return async () => {
        await call({ cmd: 'profileStop' });
      };
    },
    stop: async () => {
      const exited = new Promise((resolve) => p.once('exit', resolve));
      await call({ cmd: 'stop' }).catch(() => undefined);
      await exited;
    },
  };
}

async function fhirMain(opts: FhirProcessOptions): Promise<void> {
  const { Operator } = await import('@medplum/core');
  const { IDEMPOTENCY_KEY_SYSTEM } = await import('../shared/reports/labels.js');
  const { installBulkExport } = await import('../local/fhir/export.js');
  const { loadSyntheticCohort } = await import('../local/fhir/export-cohort.js');
  const { startFhirServer } = await import('../local/fhir/server.js');
  const fhir = await startFhirServer({ port: 0 });
  const bulk = installBulkExport(fhir, { retryAfterSeconds: 1, chunkSize: 50_000 });
  const started = Date.now();
  const ids = await loadSyntheticCohort(fhir.repo, { patients: opts.patients, seed: opts.seed });
  const loadMs = Date.now() - started;
  const group = await fhir.repo.createResource<Group>({
    resourceType: 'Group',
    type: 'person',
    actual: true,
    member: ids.slice(0, opts.small).map((id) => ({ entity: { reference: `Patient/${id}` } })),
  });
  const { Session } = await import('node:inspector/promises');
  let session: InstanceType<typeof Session> | undefined;
  let profileFile = '';
  const handle = async (req: Request): Promise<unknown> => {
    switch (req.cmd) {
      case 'kickOffs':
        return bulk.kickOffs();
      case 'dropReports': {
        let dropped = 0;
        for (const type of ['DiagnosticReport', 'Observation', 'Provenance'] as const) {
          const filters =
            type === 'Provenance'
              ? []
              : [{ code: 'identifier', operator: Operator.EQUALS, value: `${IDEMPOTENCY_KEY_SYSTEM}|` }];
          for (const r of await fhir.repo.searchResources({ resourceType: type, filters })) {
            await fhir.repo.deleteResource(type, r.id);
            dropped++;
          }
        }
        return dropped;
      }
      case 'profileStart':
        session = new Session();
        session.connect();
        profileFile = req.file;
        await session.post('Profiler.enable');
        await session.post('Profiler.start');
        return true;
      case 'profileStop': {
        if (!session) return false;
        const { profile } = await session.post('Profiler.stop');
        writeFileSync(profileFile, JSON.stringify(profile));
        session.disconnect();
        session = undefined;
        return true;
      }
      case 'stop':
        await bulk.close();
        await fhir.close();
        setImmediate(() => process.exit(0));
        return true;
    }
  };
  process.on('message', (req: Request) => {
    handle(req).then(
      (result) => process.send?.({ id: req.id, result }),
      (err: unknown) => process.send?.({ id: req.id, error: String(err) }),
    );
  });
  process.send?.({ ready: true, baseUrl: fhir.baseUrl, groupId: group.id, loadMs } satisfies Ready);
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  fhirMain(JSON.parse(process.argv[2] ?? '{}') as FhirProcessOptions).catch((err: unknown) => {
    process.stderr.write(`${String(err)}\n`);
    process.exit(1);
  });
}
