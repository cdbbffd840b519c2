/**
 * Bytes arriving on a socket, pulled rather than pushed: the socket is paused after each chunk until the reader
 * asks for more, so what is held in memory is bounded by what the reader keeps. The HTTP client (http.ts) and
 * `serve`'s connections (src/serve/connection.ts) read through it.
 */
import type { Socket } from 'node:net';

/** A socket's incoming bytes, waited for on demand. */
export abstract class SocketReader {
  protected buffered: Buffer = Buffer.alloc(0);
  protected ended = false;
  protected error: Error | null = null;
  private wake: (() => void) | null = null;

  constructor(readonly socket: Socket) {
    socket.on('data', (d: Buffer) => {
      this.buffered = this.buffered.length ? Buffer.concat([this.buffered, d]) : d;
      socket.pause();
      this.notify();
    });
    const end = () => {
      this.ended = true;
      this.notify();
    };
    socket.on('end', end);
    socket.on('close', end);
    socket.on('error', (e) => {
      this.error = e;
      this.notify();
    });
  }

  /** Wakes a reader waiting in moreThan (new bytes, the end, an error, or a subclass's own reason). */
  protected notify(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  /** The error to throw for a socket error. */
  protected abstract failure(err: Error): Error;

  /** Waits until more than `have` bytes are buffered; false when the connection ended first. */
  protected async moreThan(have: number): Promise<boolean> {
    while (this.buffered.length <= have) {
      if (this.error) throw this.failure(this.error);
      if (this.ended || this.socket.destroyed) return false;
      await new Promise<void>((resolve) => {
        this.wake = resolve;
        this.socket.resume();
      });
    }
    return true;
  }

  /** Waits up to `ms` for bytes (or the end of the connection); true when some are buffered. */
  protected async someWithin(ms: number): Promise<boolean> {
    if (this.buffered.length > 0) return true;
    if (this.error || this.ended || this.socket.destroyed) return false;
    const timer = setTimeout(() => this.notify(), ms);
    try {
      await new Promise<void>((resolve) => {
        this.wake = resolve;
        this.socket.resume();
      });
    } finally {
      clearTimeout(timer);
    }
    return this.buffered.length > 0;
  }

  /**
   * Reads one CRLF-terminated line (without the CRLF), as latin1. `tooLong` is thrown once `max` bytes arrived
   * without one, `ended` when the connection ends first.
   */
  protected async line(max: number, tooLong: () => Error, ended: () => Error): Promise<string> {
    for (;;) {
      const i = this.buffered.indexOf('\r\n');
      if (i >= 0) {
        const s = this.buffered.toString('latin1', 0, i);
        this.buffered = this.buffered.subarray(i + 2);
        return s;
      }
      if (this.buffered.length > max) throw tooLong();
      if (!(await this.moreThan(this.buffered.length))) throw ended();
    }
  }
}
