/**
 * Page-aligned, pre-touched buffers, for speed and for crash safety.
 *
 * Speed: copying from the page cache into a destination that is not page aligned runs several times slower on
 * some machines (measured here: 4 GiB at 1 s vs 0.25 s per 2 GiB), and Node's Buffer.allocUnsafe returns malloc
 * memory 16 bytes past a page boundary. WebAssembly memories are always reserved at page (64 KiB) granularity,
 * so their buffers are aligned whatever the allocator.
 *
 * Crash safety (decision 0009): a SIGKILL during a pwrite whose source pages are not yet mapped (a fresh
 * Buffer.alloc is calloc memory nobody touched) stops the copy into the page cache at a source-page boundary.
 * With malloc's 16-byte offset that boundary falls inside a 512-byte sector of the file, which is then half new,
 * half old. A source that is page aligned with the same phase as the file position can only be cut where the
 * file has a 4 KiB boundary, and one already touched is not faulted in at all. The local store writes only
 * from such sources (`directSource`), copying anything else through an aligned bounce buffer.
 */

import { createRequire } from 'node:module';

const WASM_PAGE = 65536;
/**
 * Buffers from this size up come from the memory helper (native/memory.c) where it is built: huge pages made present
 * in one call instead of a fault per 4 KiB page (about 4 ms per MiB on the VMs measured; decision 0036).
 */
const POPULATED_MIN = 1 << 20;
/** The granularity a cut-short pwrite stops at: the kernel copies a source page at a time. */
export const PAGE = 4096;
/** Length of the shared zero run: zero writes are issued in pieces of at most this. */
export const ZERO_RUN = 1 << 20;

// The ES2022 lib without DOM does not describe WebAssembly; this is the one constructor used here.
declare const WebAssembly: { Memory: new (d: { initial: number; maximum?: number; shared?: boolean }) => { buffer: ArrayBuffer | SharedArrayBuffer } };

/** Backing stores known to start on a page boundary with every page touched. */
const safe = new WeakSet<ArrayBufferLike>();

/** A touched, registered wasm memory of at least `size` bytes, or null where wasm is unavailable. */
function wasmMemory(size: number, shared: boolean): ArrayBufferLike | null {
  const pages = Math.max(1, Math.ceil(size / WASM_PAGE));
  try {
    const mem = new WebAssembly.Memory({ initial: pages, maximum: pages, shared }).buffer;
    // Writing every page maps it now, so a later pwrite from it never waits for a page fault.
    new Uint8Array(mem).fill(0);
    safe.add(mem);
    return mem;
  } catch {
    // --jitless, address-space limits (ulimit -v) or sizes past 4 GiB.
    return null;
  }
}

let memoryHelper: { populated(size: number): ArrayBuffer } | null | undefined;

/** Zeroed memory of `size` bytes on a huge-page boundary with every page present, or null without the helper. */
function populatedMemory(size: number): ArrayBuffer | null {
  if (memoryHelper === undefined) {
    memoryHelper = null;
    if (process.env.VHDSYNC_NATIVE_MEMORY !== '0') {
      try {
        // Two levels above both src/util and dist/util (and dist/bundle), as package.json is for meta/version.ts.
        memoryHelper = createRequire(import.meta.url)('../../build/native/memory.node') as { populated(size: number): ArrayBuffer };
      } catch {
        // Optional: without a C compiler at install time, buffers are faulted in a page at a time.
      }
    }
  }
  if (!memoryHelper) return null;
  try {
    const mem = memoryHelper.populated(size);
    safe.add(mem);
    return mem;
  } catch {
    return null;
  }
}

/**
 * A Buffer of `size` bytes for data about to be read into it: from the memory helper when large (its pages present
 * without a fault each), else an ordinary uninitialised one.
 */
export function allocForRead(size: number): Buffer {
  const mem = size >= POPULATED_MIN ? populatedMemory(size) : null;
  return mem ? Buffer.from(mem, 0, size) : Buffer.allocUnsafe(size);
}

/**
 * A Buffer of `size` bytes starting on a page boundary, every page touched (falls back to an ordinary one where
 * wasm is unavailable; the local store then copies it before writing). Always zeroed: the shared zero run and
 * bitmaps rely on it.
 */
export function allocAligned(size: number): Buffer {
  const mem = size >= POPULATED_MIN ? (populatedMemory(size) ?? wasmMemory(size, false)) : size > 0 ? wasmMemory(size, false) : null;
  return mem ? Buffer.from(mem as ArrayBuffer, 0, size) : Buffer.alloc(size);
}

/**
 * A page-aligned, touched Buffer over shared memory (a SharedArrayBuffer), which worker threads can read without
 * a copy.
 */
export function allocShared(size: number): Buffer {
  const mem = wasmMemory(size, true);
  return Buffer.from(mem ?? new SharedArrayBuffer(size), 0, size);
}

let zeroRun: Buffer | null = null;

/** The shared zero run, one page longer than ZERO_RUN so that any page phase of it can be taken. Never write into it. */
function zeroPages(): Buffer {
  zeroRun ??= allocAligned(ZERO_RUN + PAGE);
  return zeroRun;
}

/**
 * `min(length, ZERO_RUN)` zero bytes from the one shared, page-aligned, touched zero run, for zero writes.
 * Read-only: never read into it or change it.
 */
export function zeros(length: number): Buffer {
  return zeroPages().subarray(0, Math.min(length, ZERO_RUN));
}

/**
 * `data` itself, or the same bytes from the shared zero run, when a pwrite of it at `position` can only be cut
 * at a page boundary of the file and never waits for a page fault: the memory is page aligned, touched, and its
 * offset has the same phase within a page as `position`. Null when the bytes must be copied first.
 */
export function directSource(data: Uint8Array, position: number): Uint8Array | null {
  if (!safe.has(data.buffer)) return null;
  if ((data.byteOffset - (position % PAGE) + PAGE) % PAGE === 0) return data;
  if (zeroRun && data.buffer === zeroRun.buffer && data.byteLength <= ZERO_RUN) {
    const phase = position % PAGE;
    return zeroRun.subarray(phase, phase + data.byteLength);
  }
  return null;
}

/**
 * `count` aligned buffers of `size` bytes handed out in turn (each made on first use). With prefetch(depth),
 * count = depth + 1 never hands out a buffer the consumer still holds.
 */
export function alignedRing(count: number, size: number): () => Buffer {
  const ring: Buffer[] = [];
  let next = 0;
  return () => {
    const i = next++ % count;
    ring[i] ??= allocAligned(size);
    return ring[i];
  };
}

/** The smallest buffer a sizedRing makes: one wasm page, the unit aligned memory comes in anyway. */
const SIZED_MIN = WASM_PAGE;

/**
 * Like alignedRing, for callers whose pieces vary in size up to `max`: each call returns a buffer of exactly
 * `length` bytes (at most `max`), a view of the ring's buffer in turn, which is remade larger (doubling, up to
 * `max`) only when a longer piece comes. Small pieces then fault in small buffers: `count` x `max` of touched
 * memory costs tens of milliseconds, which a run of 64 KiB pieces need not pay.
 */
export function sizedRing(count: number, max: number): (length: number) => Buffer {
  const ring: Buffer[] = [];
  let next = 0;
  return (length) => {
    const i = next++ % count;
    if (!ring[i] || ring[i].length < length) {
      let size = Math.max(SIZED_MIN, ring[i]?.length ?? 0);
      while (size < length) size *= 2;
      ring[i] = allocAligned(Math.min(size, Math.max(max, length)));
    }
    return ring[i].subarray(0, length);
  };
}

/** Aligned buffers given back by rings that finished, by size, for the next ring: each new one costs page faults. */
const spare = new Map<number, Buffer[]>();
/** Spare buffers kept per size (a few rings' worth); more are left to the garbage collector. */
const SPARE_PER_SIZE = 8;

/** A ring of aligned buffers whose buffers go back to a shared spare pool once its user is done with them. */
export interface PooledRing {
  /** The next buffer in turn (taken from the spares, or made, on first use). */
  next(): Buffer;
  /** Gives every buffer back; the ring must not be used afterwards. */
  release(): void;
}

/**
 * Like alignedRing, but the buffers come from and go back to a shared spare pool, so code that runs many times
 * (an encoder per request, a property test) does not make and fault in fresh buffers every time.
 */
export function pooledRing(count: number, size: number): PooledRing {
  const ring: Buffer[] = [];
  let next = 0;
  return {
    next() {
      const i = next++ % count;
      ring[i] ??= spare.get(size)?.pop() ?? allocAligned(size);
      return ring[i];
    },
    release() {
      let list = spare.get(size);
      if (!list) spare.set(size, (list = []));
      for (const b of ring) if (b && list.length < SPARE_PER_SIZE) list.push(b);
      ring.length = 0;
    },
  };
}

