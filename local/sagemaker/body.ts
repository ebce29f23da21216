/** The endpoint server's request body reader. */
import type { IncomingMessage } from 'node:http';
import type { BufferPool } from '../../shared/inference/buffer-pool.js';
import { MAX_PAYLOAD_BYTES } from './errors.js';

/**
 * Reads the body (to the end even past the limit, so that the client gets the answer rather than
 * a reset). With a Content-Length, which the SDK always sends and Node's parser holds the body
 * to, the chunks are copied once into a buffer of that size, reused for large bodies (see
 * buffer-pool.ts; `pooled` bodies go back once the invocation is over).
 */
export async function readBody(
  req: IncomingMessage,
  pool: BufferPool,
): Promise<{ body: Uint8Array; tooLarge: boolean; size: number; pooled: boolean }> {
  const declared = Number(req.headers['content-length'] ?? Number.NaN);
  const into =
    Number.isSafeInteger(declared) && declared <= MAX_PAYLOAD_BYTES ? pool.acquire(declared) : undefined;
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    if (into && size + chunk.length <= into.length) into.set(chunk, size);
    else if (!into && size + chunk.length <= MAX_PAYLOAD_BYTES) chunks.push(chunk);
    size += chunk.length;
  }
  const tooLarge = size > MAX_PAYLOAD_BYTES;
  if (into && size === into.length) return { body: into, tooLarge, size, pooled: true };
  if (into) pool.release(into);
  const body = tooLarge || into ? new Uint8Array() : Buffer.concat(chunks);
  return { body, tooLarge, size, pooled: false };
}
