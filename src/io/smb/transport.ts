/**
 * Direct-TCP transport ([MS-SMB2] 2.1): each message is preceded by a zero byte and a 24-bit big-endian
 * length. Frames are reassembled without copying when one TCP chunk holds a whole frame.
 */
import * as net from 'node:net';
import { IoError } from '../../util/errors.js';

/** Largest frame accepted from a server: 16 MiB, the field's limit, so a bad length cannot make us allocate more. */
const MAX_FRAME = 0xffffff;

/** A connected socket delivering whole frames. */
export class Transport {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private closed = false;

  private constructor(
    private readonly socket: net.Socket,
    private readonly onFrame: (frame: Buffer) => void,
    private readonly onClose: (err: Error) => void,
  ) {
    socket.setNoDelay(true);
    socket.on('data', (d: Buffer) => this.receive(d));
    socket.on('error', (err) => this.shut(err));
    socket.on('close', () => this.shut(new Error('connection closed by server')));
  }

  /** Connects to host:port, failing after `timeoutMs`. */
  static connect(
    host: string,
    port: number,
    timeoutMs: number,
    onFrame: (frame: Buffer) => void,
    onClose: (err: Error) => void,
  ): Promise<Transport> {
    return new Promise((resolve, reject) => {
      const socket = net.connect({ host, port });
      const timer = setTimeout(() => {
        socket.destroy();
        reject(new IoError(`cannot connect to ${host}:${port}: timed out after ${timeoutMs / 1000} s`));
      }, timeoutMs);
      socket.once('error', (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        const why = err.code === 'ECONNREFUSED' ? 'connection refused' : err.code === 'ENOTFOUND' ? 'unknown host' : err.message;
        reject(new IoError(`cannot connect to ${host}:${port}: ${why}`));
      });
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.removeAllListeners('error');
        resolve(new Transport(socket, onFrame, onClose));
      });
    });
  }

  /** Sends one frame made of `parts` (their total is the frame length). */
  send(parts: Buffer[]): void {
    if (this.closed) return;
    const len = parts.reduce((n, p) => n + p.length, 0);
    if (len > MAX_FRAME) throw new IoError(`SMB message too large (${len} bytes)`);
    const prefix = Buffer.from([0, (len >> 16) & 0xff, (len >> 8) & 0xff, len & 0xff]);
    this.socket.cork();
    this.socket.write(prefix);
    for (const p of parts) this.socket.write(p);
    this.socket.uncork();
  }

  /** Lets the process exit while idle (true) or keeps it alive while requests are in flight (false). */
  idle(isIdle: boolean): void {
    if (isIdle) this.socket.unref();
    else this.socket.ref();
  }

  close(): void {
    this.socket.end();
    this.socket.destroy();
  }

  private shut(err: Error): void {
    if (this.closed) return;
    this.closed = true;
    this.socket.destroy();
    this.onClose(err);
  }

  private receive(d: Buffer): void {
    this.chunks.push(d);
    this.buffered += d.length;
    while (this.buffered >= 4) {
      const head = this.peek(4);
      if (head[0] !== 0) return this.shut(new IoError('malformed frame from server (not direct TCP SMB)'));
      const len = (head[1] << 16) | (head[2] << 8) | head[3];
      if (len > MAX_FRAME || this.buffered < 4 + len) return;
      this.consume(4);
      const frame = this.consume(len);
      try {
        this.onFrame(frame);
      } catch (err) {
        return this.shut(err as Error);
      }
    }
  }

  private peek(n: number): Buffer {
    return this.chunks[0].length >= n ? this.chunks[0] : Buffer.concat(this.chunks, n);
  }

  /** Takes `n` bytes off the front: a view when the first chunk holds them, else one copy. */
  private consume(n: number): Buffer {
    this.buffered -= n;
    const first = this.chunks[0];
    if (first.length >= n) {
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    const out = Buffer.allocUnsafe(n);
    let done = 0;
    while (done < n) {
      const c = this.chunks[0];
      const take = Math.min(c.length, n - done);
      c.copy(out, done, 0, take);
      done += take;
      if (take === c.length) this.chunks.shift();
      else this.chunks[0] = c.subarray(take);
    }
    return out;
  }
}
