/**
 * Timing and HTTP helpers of the inference benchmark (bench/inference.ts): medians, round-robin
 * medians, a bare node:http POST and an echo server for the HTTP floors.
 */
import { createServer, request, type Agent, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

/** Median ms of `fn` over repeats (after one warm-up), at least `minMs` of work and 3 repeats. */
export async function measure(fn: () => unknown, minMs: number, maxReps = 200): Promise<number> {
  await fn();
  const samples: number[] = [];
  const start = performance.now();
  while (samples.length < 3 || (performance.now() - start < minMs && samples.length < maxReps)) {
    const t0 = performance.now();
    await fn();
    samples.push(performance.now() - t0);
  }
  samples.sort((a, b) => a - b);
  return samples[Math.floor(samples.length / 2)] ?? Number.NaN;
}

/**
 * Medians of alternatives measured round-robin (a, b, c, a, b, c, …), so that load drifting on
 * a shared machine weighs on all alike: the fair way to take their ratios.
 */
export async function measureRound(
  fns: readonly (() => unknown)[],
  minMs: number,
  maxReps = 100,
): Promise<{ medians: number[]; reps: number }> {
  for (let warm = 0; warm < 3; warm++) for (const fn of fns) await fn();
  const samples: number[][] = fns.map(() => []);
  const start = performance.now();
  let reps = 0;
  while (reps < 5 || (performance.now() - start < fns.length * minMs && reps < maxReps)) {
    for (const [i, fn] of fns.entries()) {
      const t0 = performance.now();
      await fn();
      samples[i]?.push(performance.now() - t0);
    }
    reps++;
  }
  const median = (xs: number[]): number => xs.sort((x, y) => x - y)[Math.floor(xs.length / 2)] ?? Number.NaN;
  return { medians: samples.map(median), reps };
}

/** One POST with node:http over the keep-alive agent; resolves with the response. */
export function post(
  agent: Agent,
  url: string,
  body: Uint8Array,
  contentType: string,
): Promise<{ body: Buffer; contentType: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      { method: 'POST', agent, headers: { 'Content-Type': contentType, 'Content-Length': body.length } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          resolve({ body: Buffer.concat(chunks), contentType: res.headers['content-type'] ?? '' });
        });
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

export async function startEcho(): Promise<{
  server: Server;
  url: string;
  state: { responseBytes: number };
}> {
  const state = { responseBytes: 0 };
  const server = createServer((req, res) => {
    req.on('data', () => undefined);
    req.on('end', () => {
      const body = Buffer.alloc(state.responseBytes);
      res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': body.length });
      res.end(body);
    });
  });
  server.keepAliveTimeout = 60_000; // as the endpoint server's
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, url: `http://127.0.0.1:${String((server.address() as AddressInfo).port)}`, state };
}
