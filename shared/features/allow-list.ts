/**
 * The allow-list of DICOMweb base URLs an image extractor may fetch from (no SSRF): the scheme
 * must be http or https, the URL must carry no credentials, and it must lie on one of the
 * allowed bases (same scheme, host and port; path equal to the base's or under it, after the
 * URL parser has resolved `.` and `..` segments, percent-encoded ones included).
 */

/** Base URLs such as `http://127.0.0.1:8082/dicomweb` (a trailing slash is ignored). */
export type AllowList = readonly string[];

export type AllowOutcome =
  { readonly ok: true; readonly url: URL } | { readonly ok: false; readonly reason: string };

interface Base {
  readonly origin: string;
  readonly path: string;
}

function parseBase(base: string): Base | undefined {
  let url: URL;
  try {
    url = new URL(base);
  } catch {
    return undefined;
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return undefined;
  if (url.username !== '' || url.password !== '' || url.search !== '' || url.hash !== '') return undefined;
  return { origin: url.origin, path: url.pathname.replace(/\/+$/, '') };
}

/** Compiles the allow-list once; entries that are not plain http(s) base URLs are refused by throwing. */
export function compileAllowList(list: AllowList): (url: string) => AllowOutcome {
  const bases = list.map((entry) => {
    const base = parseBase(entry);
    if (base === undefined) throw new TypeError(`allow-list entry is not an http(s) base URL: ${entry}`);
    return base;
  });
  return (raw) => checkAgainst(raw, bases);
}

function checkAgainst(raw: string, bases: readonly Base[]): AllowOutcome {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return { ok: false, reason: 'url:invalid' };
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return { ok: false, reason: 'url:scheme' };
  if (url.username !== '' || url.password !== '') return { ok: false, reason: 'url:credentials' };
  const path = url.pathname;
  const allowed = bases.some(
    (b) => b.origin === url.origin && (path === b.path || path.startsWith(`${b.path}/`)),
  );
  return allowed ? { ok: true, url } : { ok: false, reason: 'url:not-allowed' };
}

/** One-off check of a URL against an allow-list. */
export function checkAllowed(url: string, list: AllowList): AllowOutcome {
  return compileAllowList(list)(url);
}
