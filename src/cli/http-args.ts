/**
 * HTTP(S) options of `stream` and how a stream is PUT: credentials (environment, a file, or the URL with a
 * warning), TLS verification, and the request shape XAPI's import handlers want.
 */
import type { Argv, Options } from 'yargs';
import { readFileSync } from 'node:fs';
import type { HttpBody, HttpOptions } from '../io/http.js';
import type { EncodedStream } from '../stream/encoded.js';
import { sendToSink } from '../stream/sink.js';
import { UsageError } from '../util/errors.js';
import { redactUrl } from '../util/redact-url.js';

/** The options. */
export interface HttpArgs {
  'http-credentials'?: string;
  'ca-cert'?: string;
  insecure?: boolean;
}

/** The HTTP options as yargs option specs (read by yargs and by the fast path, fast-args.ts). */
export const HTTP_OPTIONS = {
  'http-credentials': { type: 'string', describe: 'file with username= and password= lines for http(s):// (or set VHDSYNC_HTTP_USER / VHDSYNC_HTTP_PASSWORD)' },
  'ca-cert': { type: 'string', describe: 'PEM file of certificate authorities to trust for https://' },
  insecure: { type: 'boolean', describe: 'do not verify https:// certificates (prints a warning)' },
} satisfies Record<string, Options>;

/** Adds the HTTP options to a command. */
export function withHttpOptions<T>(y: Argv<T>): Argv<T & HttpArgs> {
  return y.options(HTTP_OPTIONS) as Argv<T & HttpArgs>;
}

/** Credentials and TLS settings from options and environment; the URL's own credentials are read per URL. */
export function httpOptionsFrom(args: HttpArgs): HttpOptions {
  const opts: HttpOptions = { caCert: args['ca-cert'], insecure: Boolean(args.insecure) };
  if (args['http-credentials']) {
    const file = args['http-credentials'];
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      throw new UsageError(`cannot read the credentials file`, file);
    }
    for (const line of text.split(/\r?\n/)) {
      const m = /^\s*(username|user|password|pass)\s*=\s*(.*?)\s*$/i.exec(line);
      if (!m) continue;
      if (/^user/i.test(m[1])) opts.user = m[2];
      else opts.password = m[2];
    }
    if (opts.user === undefined) throw new UsageError('no username= line in the credentials file', file);
  } else if (process.env.VHDSYNC_HTTP_USER) {
    opts.user = process.env.VHDSYNC_HTTP_USER;
    opts.password = process.env.VHDSYNC_HTTP_PASSWORD ?? '';
  }
  if (opts.insecure) process.stderr.write('vhdsync: warning: --insecure: https:// certificates are not verified\n');
  return opts;
}

/** The URL without credentials, and the options with the URL's credentials when it carries some (with a warning). */
function fromUrl(url: string, opts: HttpOptions): { url: string; opts: HttpOptions } {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new UsageError('not a valid URL', url.replace(/\/\/[^@/]*@/, '//'));
  }
  if (!u.username && !u.password) return { url, opts };
  process.stderr.write('vhdsync: warning: credentials in the URL are visible to other users of this machine (ps); use VHDSYNC_HTTP_USER / VHDSYNC_HTTP_PASSWORD or --http-credentials\n');
  const withCreds = { ...opts, user: decodeURIComponent(u.username), password: decodeURIComponent(u.password) };
  return { url: redactUrl(u), opts: withCreds };
}

/** GETs a stream source. */
export async function httpSource(url: string, opts: HttpOptions): Promise<HttpBody> {
  const r = fromUrl(url, opts);
  // The HTTP client (and node:tls under it) is loaded only for a URL: files and pipes start faster without it.
  const { httpGet } = await import('../io/http.js');
  return httpGet(r.url, r.opts);
}

/** True for XAPI's import endpoints (prefix match, as XAPI routes them). */
export function isXapiImport(url: URL): boolean {
  return /^\/import_(raw_)?vdi(\/|$)/.test(url.pathname);
}

/**
 * PUTs an encoded stream. XAPI imports get what XAPI wants: raw and VHD with an exact Content-Length, chunked frames
 * with `chunked=true` and no length (XAPI refuses any Transfer-Encoding), `format=` added when absent, and the body
 * only after the 200, as vhd-tool sends it. Other URLs get a plain PUT with Content-Length.
 */
export async function httpDestination(url: string, stream: EncodedStream, opts: HttpOptions, onProgress: (n: number) => void): Promise<void> {
  const r = fromUrl(url, opts);
  const u = new URL(r.url);
  const xapi = isXapiImport(u);
  const headers: Record<string, string> = { 'Content-Type': 'application/octet-stream' };
  let length: number | null = stream.length;
  if (xapi) {
    if (stream.format === 'vhdx') throw new UsageError(`XAPI imports raw, vhd, qcow2 or chunked frames, not VHDX: use --destination-format vhd`);
    if (!u.searchParams.has('format')) u.searchParams.set('format', stream.format === 'vhd' || stream.format === 'qcow2' ? stream.format : 'raw');
    if (stream.format === 'chunked') {
      if (!u.searchParams.has('chunked')) u.searchParams.set('chunked', 'true');
      headers.Cookie = 'chunked=true';
      length = null;
    }
  }
  const { httpPut } = await import('../io/http.js');
  await httpPut(u.toString(), { length, responseFirst: xapi, headers }, r.opts, (w) => sendToSink(stream, w, onProgress).then(() => {}));
}
