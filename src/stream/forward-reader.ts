/** A forward-only byte source (a pipe, an HTTP body) read in exact amounts, with its position and known length, if any. */
import { CorruptImageError } from '../util/errors.js';

/** Reads exact byte counts from an async iterable of buffers, never going back. */
export class ForwardReader {
  private readonly it: AsyncIterator<Uint8Array>;
  private pending: Buffer = Buffer.alloc(0);
  private ended = false;
  /** Bytes consumed so far. */
  position = 0;

  constructor(
    source: AsyncIterable<Uint8Array>,
    /** Names the input in errors. */
    readonly name: string,
    /** The total length when the transport says it (a file's size, a Content-Length), else null. */
    readonly length: number | null = null,
  ) {
    this.it = source[Symbol.asyncIterator]();
  }

  /** Fills `pending` with at least `n` bytes unless the input ends first; returns whether it did. */
  private async fill(n: number): Promise<boolean> {
    while (this.pending.length < n && !this.ended) {
      const r = await this.it.next();
      if (r.done) {
        this.ended = true;
        break;
      }
      const b = Buffer.from(r.value.buffer, r.value.byteOffset, r.value.byteLength);
      this.pending = this.pending.length ? Buffer.concat([this.pending, b]) : b;
    }
    return this.pending.length >= n;
  }

  /** Reads exactly `n` bytes (`what` says what was expected, for the truncation error), into `into` when given. */
  async read(n: number, what: string, into?: Buffer): Promise<Buffer> {
    const out = into ? into.subarray(0, n) : Buffer.allocUnsafe(n);
    let got = 0;
    while (got < n) {
      if (!this.pending.length && !(await this.fill(1))) throw this.truncated(what);
      const take = Math.min(n - got, this.pending.length);
      this.pending.copy(out, got, 0, take);
      this.pending = this.pending.subarray(take);
      got += take;
      this.position += take;
    }
    return out;
  }

  /** Reads what is available, at least 1 and at most `max` bytes, into `into`; 0 only at the end of the input. */
  async readSome(max: number, into: Buffer): Promise<number> {
    if (!this.pending.length && !(await this.fill(1))) return 0;
    const take = Math.min(max, this.pending.length, into.length);
    this.pending.copy(into, 0, 0, take);
    this.pending = this.pending.subarray(take);
    this.position += take;
    return take;
  }

  /** Skips forward to absolute position `to`. */
  async skipTo(to: number, what: string): Promise<void> {
    if (to < this.position) throw new CorruptImageError(`${what} at byte ${to} lies behind the stream's position ${this.position} (out of order)`, this.name);
    while (this.position < to) {
      if (!this.pending.length && !(await this.fill(1))) throw this.truncated(what);
      const take = Math.min(to - this.position, this.pending.length);
      this.pending = this.pending.subarray(take);
      this.position += take;
    }
  }

  /** Reads to the end, keeping only the last `keep` bytes (at most), and returns them. */
  async tail(keep: number): Promise<Buffer> {
    let last: Buffer = Buffer.alloc(0);
    for (;;) {
      if (!this.pending.length && !(await this.fill(1))) break;
      const chunk = this.pending;
      this.position += chunk.length;
      this.pending = Buffer.alloc(0);
      last = chunk.length >= keep ? Buffer.from(chunk.subarray(chunk.length - keep)) : Buffer.concat([last, chunk]).subarray(-keep);
    }
    return last;
  }

  /** True when no byte is left. */
  async atEnd(): Promise<boolean> {
    return !(await this.fill(1));
  }

  /** The error for input that ended early. */
  truncated(what: string): CorruptImageError {
    return new CorruptImageError(`stream is truncated: it ended at byte ${this.position} while reading ${what}`, this.name);
  }
}
