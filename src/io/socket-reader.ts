/**
 * Bytes arriving on a socket, pulled rather than pushed: the socket is paused once HIGH_WATER bytes are held until
 * the reader asks for more, so what is held in memory is bounded. The HTTP client (http.ts) and `serve`'s
 * connections (src/serve/connection.ts) read through it.
 */
import type { Socket } from 'node:net';
import { alignedRing } from '../util/aligned.js';

/**
 * Bytes held before the socket is paused. Pausing after every chunk (64 KiB) stopped and restarted the socket's
 * reading for each one: a 1 GiB GET spent most of its time idle that way (docs/performance.md, stream).
 */
export const HIGH_WATER = 1 << 20;

const EMPTY = Buffer.alloc(0);

/** A socket's incoming bytes, waited for on demand. */
export abstract class SocketReader {
  /** What arrived and was not taken yet, oldest first; merged into one buffer only when `buffered` is asked for. */
  private chunks: Buffer[] = [];
  private held = 0;
  protected ended = false;
  protected error: Error | null = null;
  private wake: (() => void) | null = null;

  /**
   * `receive`: the socket was made with `receiveOptions()` (its bytes come through `received`, not 'data' events).
   */
  constructor(
    readonly socket: Socket,
    receive?: ReceiveRing,
  ) {
    if (receive) receive.attach(this);
    else socket.on('data', (d: Buffer) => this.received(d));
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

  /** Holds bytes that arrived; false once enough are held that the socket should stop reading (it is paused). */
  received(d: Buffer): boolean {
    this.chunks.push(d);
    this.held += d.length;
    this.notify();
    if (this.held < HIGH_WATER) return true;
    this.socket.pause();
    return false;
  }

  /** Everything held, as one buffer (for heads and lines; bodies use takeHeld, which does not merge). */
  protected get buffered(): Buffer {
    if (this.chunks.length > 1) this.chunks = [Buffer.concat(this.chunks, this.held)];
    return this.chunks[0] ?? EMPTY;
  }

  protected set buffered(b: Buffer) {
    this.chunks = b.length ? [b] : [];
    this.held = b.length;
  }

  /** Bytes held. */
  protected get heldBytes(): number {
    return this.held;
  }

  /** Takes up to `max` held bytes from the oldest chunk (possibly fewer than held, never merging); empty when none. */
  protected takeHeld(max: number): Buffer {
    const first = this.chunks[0];
    if (!first) return EMPTY;
    const n = Math.min(max, first.length);
    const b = first.subarray(0, n);
    if (n === first.length) this.chunks.shift();
    else this.chunks[0] = first.subarray(n);
    this.held -= n;
    return b;
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
    while (this.held <= have) {
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
      // Usually the line lies in the oldest chunk: found there without merging what else is held.
      const first = this.chunks[0];
      const i = first ? first.indexOf('\r\n') : -1;
      if (i >= 0) {
        const s = first.toString('latin1', 0, i);
        this.takeHeld(i + 2);
        return s;
      }
      const all = this.buffered;
      const j = all.indexOf('\r\n');
      if (j >= 0) {
        const s = all.toString('latin1', 0, j);
        this.takeHeld(j + 2);
        return s;
      }
      if (all.length > max) throw tooLong();
      if (!(await this.moreThan(all.length))) throw ended();
    }
  }
}

/** Bytes of each receive buffer of a ReceiveRing. */
const RECEIVE_PIECE = 512 << 10;
/** A buffer with less room left than this is not read into again: the next one is taken. */
const MIN_ROOM = 64 << 10;
/**
 * Receive buffers per connection. Reads go one after another into each buffer, so every buffer but the current one
 * holds at least RECEIVE_PIECE - MIN_ROOM bytes: what can be held (HIGH_WATER plus the read that crossed it) spans
 * at most 4 buffers plus the current one and a partly taken one, and a consumer may still copy from one more chunk.
 * A chunk stays valid until the ring comes round to its buffer again.
 */
const RECEIVE_BUFFERS = 8;

/**
 * Socket reads into a small ring of reused buffers (`net.connect({ onread })`) instead of one new 64 KiB Buffer per
 * 'data' event: a 1 GiB GET from python3's http.server took 0.98 s this way against 1.5-2.45 s with events (the
 * same run; curl 1.21 s). Consumers of a SocketReader built on it may keep the last piece they took while asking for
 * the next, and must copy what they keep longer (ForwardReader does).
 */
export class ReceiveRing {
  private reader: SocketReader | null = null;
  /** Bytes that came before the reader was attached (copied: the buffer they came in is reused). */
  private early: Buffer[] = [];
  // Never given back to a pool: a consumer may still read the last chunks after the connection closed.
  private readonly next = alignedRing(RECEIVE_BUFFERS, RECEIVE_PIECE);
  private current: Buffer | null = null;
  private used = 0;

  /** The `onread` option of `net.connect`. */
  options(): { buffer: () => Uint8Array; callback: (n: number, buf: Uint8Array) => boolean } {
    return {
      // Called before every read: the room left in the current buffer, or the next buffer.
      buffer: () => {
        if (!this.current || this.current.length - this.used < MIN_ROOM) {
          this.current = this.next();
          this.used = 0;
        }
        return this.current.subarray(this.used);
      },
      callback: (n, buf) => {
        const chunk = Buffer.from(buf.buffer, buf.byteOffset, n);
        this.used += n;
        if (this.reader) return this.reader.received(chunk);
        this.early.push(Buffer.from(chunk));
        return true;
      },
    };
  }

  /** Sends the bytes to `reader` from now on (and what came before). */
  attach(reader: SocketReader): void {
    this.reader = reader;
    for (const b of this.early) reader.received(b);
    this.early = [];
  }
}
