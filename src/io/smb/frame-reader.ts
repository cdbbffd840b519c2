/**
 * Reassembles direct-TCP frames ([MS-SMB2] 2.1: a zero byte and a 24-bit big-endian length) from the chunks
 * a socket delivers, without copying when one chunk holds a whole frame, and optionally copying a frame's
 * tail straight into a buffer chosen by a placer (a READ's data going directly to the caller).
 */
import { IoError } from '../../util/errors.js';

/** Largest frame accepted from a server: 16 MiB, the field's limit, so a bad length cannot make us allocate more. */
export const MAX_FRAME = 0xffffff;

/** How much of a frame the placer sees before deciding: the SMB2 header and a READ response's fixed body. */
export const PLACE_PREFIX = 80;

/**
 * Asked once per frame when its first PLACE_PREFIX bytes have arrived: a buffer of exactly
 * `frameLength - PLACE_PREFIX` bytes to receive the rest of the frame directly, or null to receive it normally.
 */
export type Placer = (prefix: Buffer, frameLength: number) => Buffer | null;

/** Receives a frame; `placed` is set when its tail went into a placer's buffer and `frame` is only the prefix. */
export type FrameHandler = (frame: Buffer, placed?: Buffer) => void;

export class FrameReader {
  private chunks: Buffer[] = [];
  private buffered = 0;
  /** Set while a frame's tail is being copied into a placer's buffer. */
  private placing: { prefix: Buffer; dest: Buffer; got: number } | null = null;
  /** The placer was already asked about the frame at the front. */
  private asked = false;
  private failed = false;
  placer: Placer | null = null;

  constructor(private readonly onFrame: FrameHandler) {}

  /**
   * Feeds one chunk; throws (and stays failed) on a malformed stream or when a handler throws. A `transient`
   * chunk lives in a buffer the caller reuses: nothing is kept pointing into it (placed data is copied once
   * into its destination, everything else that must outlive this call is copied out).
   */
  push(d: Buffer, transient = false): void {
    if (this.failed) return;
    try {
      this.transientMemory = transient ? d.buffer : null;
      this.receive(d);
    } catch (err) {
      this.failed = true;
      throw err;
    } finally {
      if (this.transientMemory) {
        this.chunks = this.chunks.map((c) => this.stable(c));
        this.transientMemory = null;
      }
    }
  }

  /** The memory of the chunk being pushed, when it must not be retained. */
  private transientMemory: ArrayBufferLike | null = null;

  private stable(b: Buffer): Buffer {
    return this.transientMemory && b.buffer === this.transientMemory ? Buffer.from(b) : b;
  }

  private receive(d: Buffer): void {
    if (this.placing) {
      const rest = this.fill(d);
      if (!rest) return;
      d = rest;
    }
    this.chunks.push(d);
    this.buffered += d.length;
    while (this.buffered >= 4) {
      const head = this.peek(4);
      if (head[0] !== 0) throw new IoError('malformed frame from server (not direct TCP SMB)');
      const len = (head[1] << 16) | (head[2] << 8) | head[3];
      if (len > MAX_FRAME) throw new IoError('oversized frame from server');
      if (this.placer && !this.asked && len > PLACE_PREFIX && this.buffered >= 4 + PLACE_PREFIX && this.buffered < 4 + len) {
        this.asked = true;
        const prefix = Buffer.from(this.peek(4 + PLACE_PREFIX).subarray(4, 4 + PLACE_PREFIX));
        const dest = this.placer(prefix, len);
        if (dest && dest.length === len - PLACE_PREFIX) {
          this.consume(4 + PLACE_PREFIX);
          this.placing = { prefix, dest, got: 0 };
          const pendingChunks = this.chunks;
          this.chunks = [];
          this.buffered = 0;
          for (let i = 0; i < pendingChunks.length; i++) {
            const rest = this.fill(pendingChunks[i]);
            if (rest) {
              this.chunks.push(rest, ...pendingChunks.slice(i + 1));
              this.buffered = this.chunks.reduce((n, c) => n + c.length, 0);
              break;
            }
          }
          continue;
        }
      }
      if (this.buffered < 4 + len) return;
      this.consume(4);
      const frame = this.consume(len);
      this.asked = false;
      this.onFrame(this.stable(frame));
    }
  }

  /** Copies the start of `d` into the frame being placed; delivers it when complete; returns what is left of `d`. */
  private fill(d: Buffer): Buffer | null {
    const p = this.placing!;
    const take = Math.min(d.length, p.dest.length - p.got);
    d.copy(p.dest, p.got, 0, take);
    p.got += take;
    if (p.got === p.dest.length) {
      this.placing = null;
      this.asked = false;
      this.onFrame(p.prefix, p.dest);
    }
    return take < d.length ? d.subarray(take) : null;
  }

  private peek(n: number): Buffer {
    return this.chunks[0].length >= n ? this.chunks[0] : Buffer.concat(this.chunks, n);
  }

  /** Takes `n` bytes off the front: a view when the first chunk holds them, else one copy. */
  private consume(n: number): Buffer {
    if (n === 0) return Buffer.alloc(0);
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
