/**
 * One client connection of `serve`, read by hand rather than through node:http, because XAPI's clients need what
 * node:http cannot do: answer 200 before reading a body that has neither Content-Length nor Transfer-Encoding
 * (vhd-tool, HTTP/1.0 clients: the body simply follows and ends with the connection), write 100 Continue then a
 * final response while the body is still coming, and stop reading the socket while the disk catches up (the body
 * is pulled, so memory stays flat whatever the upload's size).
 */
import type { Socket } from 'node:net';
import { IoError, RequestError } from '../util/errors.js';
import { SocketReader } from '../io/socket-reader.js';
import { MAX_HEAD, parseRequestHead, type BodyFraming, type RequestHead } from './request.js';

/** A request that did not arrive whole in time, or a connection that went quiet. */
export class TimeoutError extends IoError {}

/** Reads requests and writes responses on one socket; one request per connection (XAPI's Connection: close). */
export class ServerConnection extends SocketReader {
  /** Bytes of the body consumed so far. */
  bodyBytes = 0;
  /** Set once a response head has been written. */
  responded = false;

  constructor(
    socket: Socket,
    /** The client's address, for logs and the rate limit. */
    readonly address: string,
  ) {
    super(socket);
    socket.pause();
  }

  protected failure(err: Error): Error {
    return new IoError(`connection failed: ${err.message}`, this.address);
  }

  /** Reads and parses the request head within `timeoutMs` (slow or silent clients are cut off). */
  async readHead(timeoutMs: number): Promise<RequestHead | null> {
    const timer = setTimeout(() => {
      // Wakes the reader with the error; the socket stays open for the 408.
      this.error ??= new TimeoutError('request head not received in time');
      this.socket.pause();
      this.notify();
    }, timeoutMs);
    try {
      for (;;) {
        const end = this.buffered.indexOf('\r\n\r\n');
        if (end >= 0) {
          const head = this.buffered.subarray(0, end);
          this.buffered = this.buffered.subarray(end + 4);
          return parseRequestHead(head);
        }
        if (this.buffered.length > MAX_HEAD) throw new RequestError(431, 'request head too large');
        if (!(await this.moreThan(this.buffered.length))) {
          if (this.buffered.length === 0) return null;
          throw new RequestError(400, 'connection ended inside the request head');
        }
      }
    } catch (err) {
      if (this.error instanceof TimeoutError) throw new RequestError(408, 'request head not received in time');
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  /** The body as buffers, framed as the head says. A buffer is valid until the next one is asked for. */
  async *body(framing: BodyFraming): AsyncGenerator<Buffer> {
    if (framing.kind === 'chunked') {
      yield* this.chunkedBody();
      return;
    }
    let left = framing.kind === 'length' ? framing.length : Infinity;
    while (left > 0) {
      if (!this.heldBytes && !(await this.moreThan(0))) {
        if (left !== Infinity) throw new IoError(`the client stopped ${left} bytes before the end of the body`, this.address);
        return;
      }
      const b = this.take(left);
      left -= b.length;
      yield b;
    }
  }

  private take(max: number): Buffer {
    const b = this.takeHeld(max);
    this.bodyBytes += b.length;
    return b;
  }

  private chunkLine(): Promise<string> {
    return this.line(
      4096,
      () => new IoError('malformed chunked body: chunk header line too long', this.address),
      () => new IoError('the client stopped inside a chunked body', this.address),
    );
  }

  /** HTTP/1.1 chunked transfer coding: size lines (extensions ignored), data, CRLF; trailers after the last. */
  private async *chunkedBody(): AsyncGenerator<Buffer> {
    for (;;) {
      const sizeText = (await this.chunkLine()).split(';')[0].trim();
      if (!/^[0-9a-fA-F]{1,12}$/.test(sizeText)) throw new IoError('malformed chunked body: bad chunk size', this.address);
      const size = parseInt(sizeText, 16);
      if (size === 0) {
        while ((await this.chunkLine()) !== '');
        return;
      }
      for (let left = size; left > 0; ) {
        if (!this.heldBytes && !(await this.moreThan(0))) throw new IoError('the client stopped inside a chunked body', this.address);
        const b = this.take(left);
        left -= b.length;
        yield b;
      }
      if ((await this.chunkLine()) !== '') throw new IoError('malformed chunked body: no CRLF after a chunk', this.address);
    }
  }

  /**
   * True when the body is on its way without a word from us: bytes already here or arriving within `ms`. A client
   * that waits for the 200 before sending (vhd-tool, `vhdsync stream` to XAPI URLs) sends nothing until then.
   */
  bodyArriving(ms: number): Promise<boolean> {
    return this.someWithin(ms);
  }

  /** Writes `data`, resolving once the socket has taken it (so the buffer may be reused). */
  write(data: Buffer | string): Promise<void> {
    if (this.socket.destroyed) return Promise.reject(new IoError('the client went away', this.address));
    return new Promise((resolve, reject) =>
      this.socket.write(data, (e) => (e ? reject(new IoError(`the client went away (${e.message})`, this.address)) : resolve())),
    );
  }

  /** Writes a response head. */
  async writeHead(status: number, headers: Record<string, string | number>): Promise<void> {
    this.responded = true;
    const lines = [`HTTP/1.1 ${status} ${REASONS[status] ?? 'Status'}`];
    for (const [k, v] of Object.entries(headers)) lines.push(`${k}: ${v}`);
    await this.write(lines.join('\r\n') + '\r\n\r\n');
  }

  /** Sends `100 Continue` (curl waits a second for it before sending a body otherwise). */
  async writeContinue(): Promise<void> {
    await this.write('HTTP/1.1 100 Continue\r\n\r\n');
  }

  /** Ends the connection after what was written has gone out; drops what the client still sends. */
  finish(): Promise<void> {
    return new Promise((resolve) => {
      if (this.socket.destroyed) return resolve();
      const done = () => resolve();
      this.socket.once('close', done);
      this.socket.end();
      // A client still sending a body it will not get to finish must not keep the socket open.
      this.socket.resume();
      setTimeout(() => this.socket.destroy(), 2000).unref();
    });
  }

  /** Drops the connection at once (a truncated response is what the client must see). */
  abort(): void {
    this.socket.destroy();
  }
}

/** Reason phrases of the statuses `serve` sends. */
export const REASONS: Record<number, string> = {
  100: 'Continue',
  200: 'OK',
  206: 'Partial Content',
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  408: 'Request Timeout',
  409: 'Conflict',
  413: 'Content Too Large',
  416: 'Range Not Satisfiable',
  422: 'Unprocessable Content',
  429: 'Too Many Requests',
  431: 'Request Header Fields Too Large',
  500: 'Internal Error',
  501: 'Not Implemented',
  503: 'Service Unavailable',
  505: 'HTTP Version Not Supported',
};
