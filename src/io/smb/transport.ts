/** Direct-TCP transport ([MS-SMB2] 2.1) over a socket; frame reassembly is frame-reader.ts. */
import * as net from 'node:net';
import { IoError } from '../../util/errors.js';
import { FrameReader, MAX_FRAME, type FrameHandler, type Placer } from './frame-reader.js';

/** Size of the one receive buffer each connection reuses: large reads mean fewer syscalls and no garbage per read. */
const RECEIVE_BUFFER = 1 << 20;

/** A connected socket delivering whole frames. */
export class Transport {
  private closed = false;

  private constructor(
    private readonly socket: net.Socket,
    private readonly reader: FrameReader,
    private readonly onClose: (err: Error) => void,
  ) {
    socket.setNoDelay(true);
    socket.on('error', (err) => this.shut(err));
    socket.on('close', () => this.shut(new Error('connection closed by server')));
  }

  /** Connects to host:port, failing after `timeoutMs`. */
  static connect(
    host: string,
    port: number,
    timeoutMs: number,
    onFrame: FrameHandler,
    onClose: (err: Error) => void,
  ): Promise<Transport> {
    const reader = new FrameReader(onFrame);
    let transport: Transport | null = null;
    return new Promise((resolve, reject) => {
      const socket = net.connect({
        host,
        port,
        // Node reads into this buffer and calls back; the reader copies out what it keeps.
        onread: {
          buffer: Buffer.allocUnsafe(RECEIVE_BUFFER),
          callback: (n: number, buf: Uint8Array) => {
            try {
              reader.push(Buffer.from(buf.buffer, buf.byteOffset, n), true);
            } catch (err) {
              transport?.shut(err as Error);
              return false;
            }
            return true;
          },
        },
      });
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
        transport = new Transport(socket, reader, onClose);
        resolve(transport);
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

  /** Installs the placer that may route a frame's tail straight into a caller's buffer. */
  set placer(p: Placer) {
    this.reader.placer = p;
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

  /** Ends the connection because of `err`, telling the owner once. */
  shut(err: Error): void {
    if (this.closed) return;
    this.closed = true;
    this.socket.destroy();
    this.onClose(err);
  }
}
