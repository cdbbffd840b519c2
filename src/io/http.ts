/**
 * A small HTTP/1.1 client over plain sockets, for disk transfers: GET a body as a byte stream, PUT a body whose
 * length is known (or, for XAPI's chunked protocol, ends when the connection does). It can wait for the server's
 * response before sending the body, as XAPI's import handlers need (they answer 200 first, then read), which
 * Node's http client cannot do. One redirect (3xx with Location) is followed, keeping the query.
 */
import * as net from 'node:net';
import * as tls from 'node:tls';
import { readFileSync } from 'node:fs';
import { IoError, UsageError } from '../util/errors.js';
import { ReceiveRing, SocketReader } from './socket-reader.js';
import { redactUrl } from '../util/redact-url.js';

/** Connection settings. */
export interface HttpOptions {
  user?: string;
  password?: string;
  /** PEM file of CAs to trust instead of the system's. */
  caCert?: string;
  /** Skip certificate verification. */
  insecure?: boolean;
  /** Extra request headers. */
  headers?: Record<string, string>;
}

/** A response's status line and headers (names lower case). */
export interface HttpHead {
  status: number;
  reason: string;
  headers: Record<string, string>;
}

/** An open connection with a reader of what the server sends. */
class Connection extends SocketReader {
  constructor(
    socket: net.Socket,
    readonly name: string,
    receive?: ReceiveRing,
  ) {
    super(socket, receive);
  }

  protected failure(err: Error): Error {
    return netError(err, this.name);
  }

  /** Waits for more bytes; false at end of stream. Throws on a socket error. */
  async more(): Promise<boolean> {
    return this.heldBytes > 0 || this.moreThan(0);
  }

  /** Takes up to `max` buffered bytes (from the oldest chunk held: possibly fewer). */
  take(max = Infinity): Buffer {
    return this.takeHeld(max);
  }

  /** Reads the response head (status line and headers); 1xx interim responses are skipped. */
  async readHead(): Promise<HttpHead> {
    for (;;) {
      let text = '';
      for (;;) {
        const end = this.buffered.indexOf('\r\n\r\n');
        if (end >= 0) {
          text = this.buffered.toString('latin1', 0, end);
          this.buffered = this.buffered.subarray(end + 4);
          break;
        }
        if (this.buffered.length > 64 << 10) throw new IoError('HTTP response headers longer than 64 KiB', this.name);
        const before = this.buffered.length;
        this.socket.resume();
        if (!(await this.moreThan(before))) throw new IoError('the server closed the connection without an HTTP response', this.name);
      }
      const [statusLine, ...lines] = text.split('\r\n');
      const m = /^HTTP\/1\.[01] (\d{3}) ?(.*)$/.exec(statusLine);
      if (!m) throw new IoError(`not an HTTP response: '${statusLine.slice(0, 80)}'`, this.name);
      const headers: Record<string, string> = {};
      for (const l of lines) {
        const i = l.indexOf(':');
        if (i > 0) headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
      }
      const status = Number(m[1]);
      if (status >= 100 && status < 200) continue;
      return { status, reason: m[2], headers };
    }
  }

  /** The body as a stream of buffers: Content-Length bytes, HTTP chunked, or up to the connection's end. */
  async *body(head: HttpHead): AsyncGenerator<Buffer> {
    const te = head.headers['transfer-encoding'];
    if (te && /chunked/i.test(te)) {
      yield* this.chunkedBody();
      return;
    }
    const cl = head.headers['content-length'];
    let left = cl !== undefined ? Number(cl) : Infinity;
    while (left > 0) {
      if (!(await this.more())) {
        if (left !== Infinity) throw new IoError(`the server closed the connection ${left} bytes before the end of the body`, this.name);
        return;
      }
      const b = this.take(left);
      left -= b.length;
      yield b;
    }
  }

  private chunkLine(): Promise<string> {
    return this.line(
      64 << 10,
      () => new IoError('malformed chunked HTTP body: chunk header line too long', this.name),
      () => new IoError('the server closed the connection inside a chunked body', this.name),
    );
  }

  private async *chunkedBody(): AsyncGenerator<Buffer> {
    for (;;) {
      const size = parseInt(await this.chunkLine(), 16);
      if (!Number.isFinite(size) || size < 0) throw new IoError('malformed chunked HTTP body', this.name);
      if (size === 0) return;
      for (let left = size; left > 0; ) {
        if (!(await this.more())) throw new IoError('the server closed the connection inside a chunked body', this.name);
        const b = this.take(left);
        left -= b.length;
        yield b;
      }
      await this.chunkLine();
    }
  }

  /** Writes `data`, resolving once the socket has taken it (so the buffer may be reused). */
  write(data: Buffer): Promise<void> {
    if (this.error) return Promise.reject(netError(this.error, this.name));
    if (this.ended || this.socket.destroyed) return Promise.reject(new IoError('the server closed the connection early', this.name));
    return new Promise((resolve, reject) => this.socket.write(data, (e) => (e ? reject(netError(e, this.name)) : resolve())));
  }

  close(): void {
    this.socket.destroy();
  }
}

function netError(e: Error, name: string): IoError {
  const code = (e as NodeJS.ErrnoException).code;
  if (code === 'EPIPE' || code === 'ECONNRESET') return new IoError('the server closed the connection early', name);
  if (code === 'ECONNREFUSED') return new IoError('connection refused', name);
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') return new IoError('host not found', name);
  if (code && /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS/.test(code)) return new IoError(`TLS certificate not trusted (${code}): use --ca-cert FILE, or --insecure`, name);
  return new IoError(e.message.split('\n')[0], name);
}

async function connect(url: URL, opts: HttpOptions): Promise<Connection> {
  const https = url.protocol === 'https:';
  const port = Number(url.port || (https ? 443 : 80));
  const host = url.hostname.replace(/^\[|\]$/g, '');
  const name = redactUrl(url);
  // Plain connections read into a ring of reused buffers (socket-reader.ts); TLS sockets deliver 'data' events.
  const receive = https ? undefined : new ReceiveRing();
  return new Promise((resolve, reject) => {
    const socket = https
      ? tls.connect({
          host,
          port,
          servername: net.isIP(host) ? undefined : host,
          ca: opts.caCert ? readFileSync(opts.caCert) : undefined,
          rejectUnauthorized: !opts.insecure,
        })
      : net.connect({ host, port, onread: receive!.options() });
    const fail = (e: Error) => reject(netError(e, name));
    socket.once('error', fail);
    socket.once(https ? 'secureConnect' : 'connect', () => {
      socket.off('error', fail);
      socket.setNoDelay(true);
      resolve(new Connection(socket, name, receive));
    });
  });
}

function requestHead(method: string, url: URL, opts: HttpOptions, extra: Record<string, string>): string {
  const headers: Record<string, string> = { Host: url.host, 'User-Agent': 'vhdsync', Connection: 'close', ...opts.headers, ...extra };
  if (opts.user !== undefined) headers.Authorization = 'Basic ' + Buffer.from(`${opts.user}:${opts.password ?? ''}`).toString('base64');
  const lines = [`${method} ${url.pathname}${url.search} HTTP/1.1`, ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`)];
  return lines.join('\r\n') + '\r\n\r\n';
}

/** The URL a redirect leads to; the original query is kept when the new location has none (XAPI's 302 keeps it). */
function redirectTarget(from: URL, head: HttpHead): URL | null {
  const loc = head.headers.location;
  if (![301, 302, 303, 307, 308].includes(head.status) || !loc) return null;
  const to = new URL(loc, from);
  if (!to.search && from.search) to.search = from.search;
  return to;
}

/** A one-line error for a failed response, with the start of its body's text when it has one. */
async function statusError(conn: Connection, head: HttpHead): Promise<IoError> {
  let text = '';
  try {
    for await (const b of conn.body(head)) {
      text += b.toString('utf8');
      if (text.length > 4096) break;
    }
  } catch {
    // The status is what matters; a body cut short adds nothing.
  }
  const detail = htmlText(text).slice(0, 200);
  return new IoError(`HTTP ${head.status} ${head.reason}${detail ? `: ${detail}` : ''}`, conn.name);
}

/** Plain text of an HTML (or plain) error body, on one line. */
export function htmlText(text: string): string {
  return text
    .replace(/<(script|style)[\s\S]*?<\/\1>/gi, ' ')
    .replace(/<[^>]*>/g, ' ')
    .replace(/&nbsp;/g, ' ')
    .replace(/\s+/g, ' ')
    .trim();
}

/** A GET response body. */
export interface HttpBody {
  name: string;
  /** Content-Length when the server sent one. */
  length: number | null;
  bytes: AsyncIterable<Buffer>;
  head: HttpHead;
}

/**
 * GETs `url`. Non-2xx statuses fail with their text; so does a 200 whose body is an error page (XAPI writes a
 * second `HTTP/1.1 500 ...` response into an export body when it fails after the headers).
 */
export async function httpGet(text: string, opts: HttpOptions = {}): Promise<HttpBody> {
  let url = new URL(text);
  for (let hop = 0; ; hop++) {
    const conn = await connect(url, opts);
    await conn.write(Buffer.from(requestHead('GET', url, opts, {}), 'latin1'));
    const head = await conn.readHead();
    const next = hop === 0 ? redirectTarget(url, head) : null;
    if (next) {
      conn.close();
      url = next;
      continue;
    }
    if (head.status < 200 || head.status >= 300) {
      const err = await statusError(conn, head);
      conn.close();
      throw err;
    }
    const body = conn.body(head);
    const first = await body.next();
    const start = first.done ? Buffer.alloc(0) : first.value;
    if (/^\s*(HTTP\/|<!doctype html|<html)/i.test(start.toString('latin1', 0, Math.min(start.length, 64)))) {
      let page = start.toString('utf8');
      for await (const b of body) {
        page += b.toString('utf8');
        if (page.length > 4096) break;
      }
      conn.close();
      throw new IoError(`the server sent an error page instead of data: ${htmlText(page).slice(0, 200)}`, conn.name);
    }
    const length = head.headers['content-length'] !== undefined ? Number(head.headers['content-length']) : null;
    async function* all(): AsyncGenerator<Buffer> {
      try {
        if (start.length) yield start;
        yield* body;
      } finally {
        conn.close();
      }
    }
    return { name: conn.name, length, bytes: all(), head };
  }
}

/** How to PUT a body. */
export interface PutShape {
  /** Content-Length to send, or null for none (the body then ends with the connection, as XAPI's chunked import wants). */
  length: number | null;
  /** Wait for the server's response before sending the body (XAPI answers 200 first, then reads). */
  responseFirst: boolean;
  headers?: Record<string, string>;
}

/** Where a PUT body goes. */
export interface BodyWriter {
  write(data: Buffer): Promise<void>;
}

/**
 * PUTs a body produced by `writeBody`. With `responseFirst`, the headers go out, the response is read and must be
 * 2xx (a redirect is followed once) before the body is sent; otherwise the body follows the headers and the
 * response is read after it (or as soon as the server answers early with an error).
 */
export async function httpPut(text: string, shape: PutShape, opts: HttpOptions, writeBody: (w: BodyWriter) => Promise<void>): Promise<HttpHead> {
  let url = new URL(text);
  const extra: Record<string, string> = { ...shape.headers };
  if (shape.length !== null) extra['Content-Length'] = String(shape.length);
  for (let hop = 0; ; hop++) {
    const conn = await connect(url, opts);
    try {
      await conn.write(Buffer.from(requestHead('PUT', url, opts, extra), 'latin1'));
      if (shape.responseFirst) {
        const head = await conn.readHead();
        const next = hop === 0 ? redirectTarget(url, head) : null;
        if (next) {
          url = next;
          continue;
        }
        if (head.status < 200 || head.status >= 300) throw await statusError(conn, head);
        await writeBody(conn);
        conn.socket.end();
        // XAPI ends its (empty) response by closing the connection once the import is done.
        while (await conn.more()) conn.take();
        return head;
      }
      // The server may answer before the body is complete (401, 413, ...): notice it instead of writing into a void.
      let early: HttpHead | null = null;
      const headPromise = conn.readHead().then((h) => (early = h));
      headPromise.catch(() => {});
      try {
        await writeBody({ write: (d) => (early && (early as HttpHead).status >= 300 ? Promise.reject(new IoError('answered early', conn.name)) : conn.write(d)) });
      } catch (err) {
        const h = await Promise.race([headPromise.catch(() => null), new Promise<null>((r) => setTimeout(() => r(null), 2000))]);
        if (h && (h.status < 200 || h.status >= 300)) throw await statusError(conn, h);
        throw err;
      }
      const head = await headPromise;
      const next = hop === 0 ? redirectTarget(url, head) : null;
      if (next) throw new UsageError(`the server redirects to ${redactUrl(next)} after the body was sent: use that URL`);
      if (head.status < 200 || head.status >= 300) throw await statusError(conn, head);
      return head;
    } finally {
      conn.close();
    }
  }
}
