/**
 * `multipart/related` bodies (RFC 2387) as DICOMweb WADO-RS sends them: the boundary from the
 * Content-Type, each part's headers and its bytes (views into the body, no copies).
 */

export interface MultipartPart {
  /** Header names in lower case. */
  readonly headers: ReadonlyMap<string, string>;
  readonly body: Uint8Array;
}

/** The media type and parameters of a Content-Type (`type`, `boundary`, … unquoted; names lower case). */
export function parseContentType(header: string): { mediaType: string; params: Map<string, string> } {
  const [head = '', ...rest] = splitParams(header);
  const params = new Map<string, string>();
  for (const p of rest) {
    const eq = p.indexOf('=');
    if (eq <= 0) continue;
    const name = p.slice(0, eq).trim().toLowerCase();
    let value = p.slice(eq + 1).trim();
    if (value.startsWith('"') && value.endsWith('"') && value.length >= 2) {
      value = value.slice(1, -1).replace(/\\(.)/g, '$1');
    }
    params.set(name, value);
  }
  return { mediaType: head.trim().toLowerCase(), params };
}

/** Splits on `;` outside double quotes. */
function splitParams(header: string): string[] {
  const out: string[] = [];
  let current = '';
  let quoted = false;
  for (let i = 0; i < header.length; i++) {
    const ch = header[i] as string;
    if (ch === '"' && header[i - 1] !== '\\') quoted = !quoted;
    if (ch === ';' && !quoted) {
      out.push(current);
      current = '';
    } else current += ch;
  }
  out.push(current);
  return out;
}

function indexOf(haystack: Uint8Array, needle: Uint8Array, from: number): number {
  const first = needle[0];
  const last = haystack.length - needle.length;
  outer: for (
    let i = haystack.indexOf(first as number, from);
    i !== -1 && i <= last;
    i = haystack.indexOf(first as number, i + 1)
  ) {
    for (let k = 1; k < needle.length; k++) if (haystack[i + k] !== needle[k]) continue outer;
    return i;
  }
  return -1;
}

const CRLF_CRLF = new Uint8Array([13, 10, 13, 10]);

/**
 * Splits a multipart body into its parts; `undefined` when the body does not follow the
 * boundary (no opening delimiter, a part without headers' end, no closing delimiter).
 */
export function parseMultipartRelated(body: Uint8Array, boundary: string): MultipartPart[] | undefined {
  if (boundary === '' || boundary.length > 70) return undefined;
  const encoder = new TextEncoder();
  const opening = encoder.encode(`--${boundary}`);
  const delimiter = encoder.encode(`\r\n--${boundary}`);
  let pos = indexOf(body, opening, 0);
  if (pos !== 0 && pos !== -1) {
    // A preamble is allowed: the first delimiter then follows a CRLF.
    pos = indexOf(body, delimiter, 0);
    if (pos !== -1) pos += 2;
  }
  if (pos === -1) return undefined;
  const parts: MultipartPart[] = [];
  const decoder = new TextDecoder('latin1');
  let cursor = pos + opening.length;
  for (;;) {
    // After a delimiter: `--` closes, else optional whitespace then CRLF opens a part.
    if (body[cursor] === 45 && body[cursor + 1] === 45) return parts;
    while (body[cursor] === 32 || body[cursor] === 9) cursor++;
    if (body[cursor] !== 13 || body[cursor + 1] !== 10) return undefined;
    cursor += 2;
    let headerEnd: number;
    let headerText: string;
    if (body[cursor] === 13 && body[cursor + 1] === 10) {
      headerEnd = cursor + 2;
      headerText = '';
    } else {
      const end = indexOf(body, CRLF_CRLF, cursor);
      if (end === -1) return undefined;
      headerText = decoder.decode(body.subarray(cursor, end));
      headerEnd = end + 4;
    }
    const next = indexOf(body, delimiter, headerEnd);
    if (next === -1) return undefined;
    const headers = new Map<string, string>();
    for (const line of headerText.split('\r\n')) {
      const colon = line.indexOf(':');
      if (colon > 0) headers.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
    }
    parts.push({ headers, body: body.subarray(headerEnd, next) });
    cursor = next + delimiter.length;
  }
}
