/**
 * The two small HTTP pieces the embedded OAuth servers share (the partner API's JWKS issuer and
 * the SMART Backend Services token server): reading a form body with a size cap, and sending a
 * JSON answer that no cache keeps.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';

/** The request's `application/x-www-form-urlencoded` body, cut at `maxBytes`. */
export async function readForm(req: IncomingMessage, maxBytes: number): Promise<URLSearchParams> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > maxBytes) break;
    chunks.push(chunk as Buffer);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

/** A JSON answer with `cache-control: no-store` unless `headers` says otherwise. */
export function sendJson(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store', ...headers });
  res.end(JSON.stringify(body));
}
