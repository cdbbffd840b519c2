/**
 * An HTTP/1.x request head as `serve` reads it: request line, headers, and XAPI's parameters, which may come from
 * the query or from cookies (xapi-http-notes 1.1, P5). Pure functions over bytes, so the fuzzer can drive them.
 */
import { RequestError } from '../util/errors.js';

/** Longest request head accepted (request line and headers). */
export const MAX_HEAD = 32 << 10;
/** Most header lines accepted. */
const MAX_HEADERS = 100;

/** A parsed request head. */
export interface RequestHead {
  method: string;
  /** The request target as sent (path and query), for logs after redaction. */
  target: string;
  /** The decoded path, without the query. */
  path: string;
  /** Minor HTTP version: 0 or 1. */
  minor: number;
  /** Header values by lower-case name; repeated headers joined with ", " (cookies with "; "). */
  headers: Map<string, string>;
  /** Query parameters (repeated keys joined with ",", as XAPI does). */
  query: Map<string, string>;
  cookies: Map<string, string>;
}

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

/** Parses the bytes of a request head (up to, not including, the blank line). Throws RequestError 400/505. */
export function parseRequestHead(bytes: Buffer): RequestHead {
  if (bytes.length > MAX_HEAD) throw new RequestError(431, 'request head too large');
  const text = bytes.toString('latin1');
  const lines = text.split('\r\n');
  // Tolerate leading empty lines (RFC 9112 2.2).
  while (lines.length && lines[0] === '') lines.shift();
  const m = /^([A-Z]+) (\S+) HTTP\/1\.(\d)$/.exec(lines[0] ?? '');
  if (!m) {
    if (/^[A-Z]+ \S+ HTTP\/\d/.test(lines[0] ?? '')) throw new RequestError(505, 'only HTTP/1.0 and HTTP/1.1 are spoken here');
    throw new RequestError(400, 'malformed request line');
  }
  const [, method, target, minorText] = m;
  if (lines.length - 1 > MAX_HEADERS) throw new RequestError(431, `more than ${MAX_HEADERS} header lines`);
  const headers = new Map<string, string>();
  for (const line of lines.slice(1)) {
    if (line === '') continue;
    const i = line.indexOf(':');
    const name = i > 0 ? line.slice(0, i) : '';
    // Obsolete line folding and names with spaces are refused: they are how request smuggling starts.
    if (!TOKEN.test(name)) throw new RequestError(400, 'malformed header line');
    const value = line.slice(i + 1).trim();
    if (/[\x00-\x08\x0a-\x1f\x7f]/.test(value)) throw new RequestError(400, 'control character in a header value');
    const key = name.toLowerCase();
    const prev = headers.get(key);
    headers.set(key, prev === undefined ? value : `${prev}${key === 'cookie' ? '; ' : ', '}${value}`);
  }
  const { path, query } = parseTarget(target);
  return { method, target, path, minor: Number(minorText), headers, query, cookies: parseCookies(headers.get('cookie') ?? '') };
}

/** Splits a request target into its decoded path and query. Absolute-form targets (`http://host/p`) are accepted. */
export function parseTarget(target: string): { path: string; query: Map<string, string> } {
  let t = target;
  const abs = /^https?:\/\/[^/?#]*/i.exec(t);
  if (abs) t = t.slice(abs[0].length) || '/';
  if (!t.startsWith('/')) throw new RequestError(400, 'request target is not a path');
  const hash = t.indexOf('#');
  if (hash >= 0) t = t.slice(0, hash);
  const q = t.indexOf('?');
  const rawPath = q >= 0 ? t.slice(0, q) : t;
  let path: string;
  try {
    path = decodeURIComponent(rawPath);
  } catch {
    throw new RequestError(400, 'malformed percent-encoding in the path');
  }
  const query = new Map<string, string>();
  if (q >= 0) {
    for (const part of t.slice(q + 1).split('&')) {
      if (!part) continue;
      const eq = part.indexOf('=');
      const k = decodeComponent(eq >= 0 ? part.slice(0, eq) : part);
      const v = decodeComponent(eq >= 0 ? part.slice(eq + 1) : '');
      const prev = query.get(k);
      query.set(k, prev === undefined ? v : `${prev},${v}`);
    }
  }
  return { path, query };
}

function decodeComponent(s: string): string {
  try {
    return decodeURIComponent(s.replace(/\+/g, ' '));
  } catch {
    throw new RequestError(400, 'malformed percent-encoding in the query');
  }
}

/** Cookie pairs of a Cookie header (`a=b; c=d`); later duplicates are ignored. */
export function parseCookies(header: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    const k = (eq >= 0 ? part.slice(0, eq) : part).trim();
    if (!k || out.has(k)) continue;
    let v = eq >= 0 ? part.slice(eq + 1).trim() : '';
    if (v.length >= 2 && v.startsWith('"') && v.endsWith('"')) v = v.slice(1, -1);
    try {
      v = decodeURIComponent(v);
    } catch {
      // A cookie that is not percent-encoding is taken as it is.
    }
    out.set(k, v);
  }
  return out;
}

/**
 * A parameter as XAPI looks it up: `session_id` and `task_id` from the cookie first, everything else from the
 * query first (xapi-http-notes 1.1).
 */
export function param(req: RequestHead, name: string): string | undefined {
  const cookieFirst = name === 'session_id' || name === 'task_id';
  const a = cookieFirst ? req.cookies.get(name) : req.query.get(name);
  const b = cookieFirst ? req.query.get(name) : req.cookies.get(name);
  return a ?? b;
}

/** The endpoints, matched by prefix as XAPI's router does (`/import_raw_vdi/` and longer paths included). */
export type Route = 'import' | 'export' | 'session' | 'task' | 'disks' | null;

/** Which endpoint a path names. */
export function routeOf(path: string): Route {
  if (/^\/import_(raw_)?vdi(\/|$)/.test(path)) return 'import';
  if (/^\/export_raw_vdi(\/|$)/.test(path)) return 'export';
  if (/^\/session\/?$/.test(path)) return 'session';
  if (/^\/task\/[^/]+\/?$/.test(path)) return 'task';
  if (path === '/' || /^\/disks\/?$/.test(path)) return 'disks';
  return null;
}

/** How the request body is framed. */
export type BodyFraming = { kind: 'length'; length: number } | { kind: 'chunked' } | { kind: 'close' };

/** The Content-Length Xen Orchestra sends for a body whose length it does not know. */
export const XO_UNKNOWN_LENGTH = 1125899906842624;

/** The body's framing from Content-Length / Transfer-Encoding; conflicting or malformed framing is refused (400). */
export function bodyFraming(req: RequestHead): BodyFraming {
  const te = req.headers.get('transfer-encoding');
  const cl = req.headers.get('content-length');
  if (te !== undefined) {
    if (cl !== undefined) throw new RequestError(400, 'both Content-Length and Transfer-Encoding');
    if (!/^chunked$/i.test(te.trim())) throw new RequestError(501, `Transfer-Encoding '${te.slice(0, 40)}' is not supported (only chunked)`);
    return { kind: 'chunked' };
  }
  if (cl !== undefined) {
    if (!/^\d{1,16}$/.test(cl.trim())) throw new RequestError(400, 'malformed Content-Length');
    const length = Number(cl.trim());
    if (!Number.isSafeInteger(length)) throw new RequestError(400, 'Content-Length too large');
    // Xen Orchestra's "1 PiB hack": a body of unknown length announced as 2^50 bytes, the connection closed after
    // the data (xapi-http-notes 4.1). The body then ends with the connection, as a body without framing does.
    if (length === XO_UNKNOWN_LENGTH) return { kind: 'close' };
    return { kind: 'length', length };
  }
  return { kind: 'close' };
}

/** A byte range of a `Range: bytes=` header against a body of `size` bytes; null when absent or not one simple range. */
export function parseRange(header: string | undefined, size: number): { start: number; end: number } | 'unsatisfiable' | null {
  if (!header) return null;
  const m = /^bytes=(\d{0,16})-(\d{0,16})$/.exec(header.trim());
  // Several ranges, or another unit: answering with the whole body is what RFC 9110 allows.
  if (!m || (m[1] === '' && m[2] === '')) return null;
  let start: number;
  let end: number;
  if (m[1] === '') {
    const n = Number(m[2]);
    if (n === 0) return 'unsatisfiable';
    start = Math.max(0, size - n);
    end = size - 1;
  } else {
    start = Number(m[1]);
    end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
    if (m[2] !== '' && Number(m[2]) < start) return null;
  }
  if (start >= size || end < start) return 'unsatisfiable';
  return { start, end };
}

/** The target for logs: `session_id` values (bearer tokens) replaced by `***`. */
export function redactTarget(target: string): string {
  return target.replace(/([?&]session_id=)[^&#]*/gi, '$1***');
}
