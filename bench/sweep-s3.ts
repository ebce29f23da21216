/**
 * The sweep bench's S3 (fauxqs) in a process of its own, as S3 is a service of its own in AWS:
 * in the bench's process, the staged export (~500 MB of part bodies at 100,000 patients,
 * external memory) made V8 collect the FHIR server's heap again and again while the sweep staged.
 * `startS3Process()` from bench/sweep.ts; run directly, this file is that process: fauxqs on
 * loopback, its address on stdout, until its stdin closes.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';

export async function startS3Process(): Promise<{ address: string; cpuMs: () => number; stop: () => void }> {
  const p = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url)], {
    cwd: fileURLToPath(new URL('..', import.meta.url)),
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const address = await new Promise<string>((resolve, reject) => {
    let out = '';
    p.stdout.on('data', (c: Buffer) => {
      out += c.toString('utf8');
      if (out.includes('\n')) resolve(out.trim());
    });
    p.on('error', reject);
    p.on('exit', (code) => {
      reject(new Error(`S3 process exited ${String(code)}`));
    });
  });
  const cpuMs = (): number => procCpuMs(p.pid);
  return { address, cpuMs, stop: () => p.stdin.end() };
}

/** A process's CPU time in ms (Linux: utime + stime, in clock ticks of 10 ms); 0 when unknown. */
export function procCpuMs(pid: number | undefined): number {
  try {
    const fields =
      readFileSync(`/proc/${String(pid)}/stat`, 'utf8')
        .split(') ')[1]
        ?.split(' ') ?? [];
    return (Number(fields[11]) + Number(fields[12])) * 10;
  } catch {
    return 0;
  }
}

async function s3Main(): Promise<void> {
  const { startFauxqs } = await import('fauxqs');
  const fauxqs = await startFauxqs({ port: 0, logger: false, host: '127.0.0.1' });
  process.stdout.write(fauxqs.address + '\n');
  process.stdin.resume();
  await new Promise<void>((resolve) => process.stdin.on('end', resolve));
  await fauxqs.stop();
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  s3Main().then(
    () => process.exit(0),
    (err: unknown) => {
      process.stderr.write(`${String(err)}\n`);
      process.exit(1);
    },
  );
}
