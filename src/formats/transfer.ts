import type { Disk } from './disk.js';
import { isAllZero } from '../util/struct.js';
import { pooledRing } from '../util/aligned.js';
import { prefetch } from '../util/prefetch.js';
import { EarlyFlusher } from '../io/early-flush.js';
import { canMap, readMapped } from './mapped-read.js';

/** Reads are this large; several are in flight while one write runs. */
const CHUNK = 4 << 20;
const READS_IN_FLIGHT = 3;

/** What a transfer did, for summaries. */
export interface TransferStats {
  /** Bytes of virtual content examined. */
  scanned: number;
  /** Bytes read from the source (data extents). */
  read: number;
  /** Bytes written to the destination. */
  written: number;
  /** Bytes skipped because they were unallocated or zero. */
  skipped: number;
}

/** Options for copyDiskContent. */
export interface TransferOptions {
  /** Called with the number of virtual bytes handled, for progress bars. */
  onProgress?: (bytes: number) => void;
  /**
   * Granularity of zero detection: a run of this many zero bytes (aligned) is not written. Defaults to the
   * destination's block size, or 64 KiB for raw; smaller runs would fragment the target for little gain.
   */
  zeroGranularity?: number;
}

interface Piece {
  offset: number;
  length: number;
  /** False for ranges the allocation tables say read as zeros: counted, never read. */
  data: boolean;
}

/**
 * Copies all virtual content of `src` into `dst` (same virtual size, freshly created so it reads zeros),
 * skipping what the allocation tables say is unallocated or zero and any aligned all-zero runs, so sparse
 * and dynamic outputs stay small. Reads overlap the single writer: formats need not be concurrency-safe.
 */
export async function copyDiskContent(src: Disk, dst: Disk, opts: TransferOptions = {}): Promise<TransferStats> {
  const stats: TransferStats = { scanned: 0, read: 0, written: 0, skipped: 0 };
  const gran = opts.zeroGranularity ?? zeroGranularity(dst);
  // One buffer per read in flight plus the one being written; page aligned, as copies from the page cache into
  // unaligned memory run several times slower (docs/performance.md, createmeta).
  // Local sources are read synchronously from their files (mapped-read.ts): one read ahead is all that takes.
  const depth = canMap(src) ? 1 : READS_IN_FLIGHT;
  // Live at once: the piece being written and `depth` reads; the read that reuses a buffer starts only after the
  // write of the piece before the one being written has been awaited (below), so depth + 1 buffers suffice.
  const ring = pooledRing(depth + 1, CHUNK);
  const read = (piece: Piece) => (piece.data ? readMapped(src, piece.offset, piece.length, ring.next()) : Promise.resolve(null));
  const flusher = new EarlyFlusher(dst.file);
  // The write of one piece runs (in the thread pool) while the next is read, which for mapped sources happens on
  // this thread: a 4 GiB qcow2 -> raw took read time + write time before (docs/performance.md, QCOW2). One write
  // at a time still: formats need not be concurrency-safe.
  let writing: Promise<void> | null = null;
  const write = async (piece: Piece, buf: Buffer) => {
    const n = await writeNonZero(dst, piece.offset, buf, gran);
    stats.written += n;
    flusher.wrote(n);
    opts.onProgress?.(piece.length);
  };
  try {
    for await (const { item: piece, value: buf } of prefetch(dataPieces(src), read, depth)) {
      if (!buf) {
        opts.onProgress?.(piece.length);
        continue;
      }
      stats.read += piece.length;
      await writing;
      writing = write(piece, buf);
      // Awaited before the next write or after the loop; until then a failure must not surface as unhandled.
      writing.catch(() => {});
    }
    await writing;
  } catch (err) {
    await Promise.allSettled([writing]);
    await flusher.settle();
    throw err;
  } finally {
    ring.release();
  }
  await flusher.done();
  stats.scanned = src.virtualSize;
  stats.skipped = stats.scanned - stats.written;
  return stats;
}

/**
 * Writes `buf` at `offset` of `dst` except its `gran`-aligned all-zero runs (a fresh target reads zeros there),
 * and returns the bytes written. Splitting at multiples of `gran` of the virtual disk lines zero runs up with
 * target blocks; consecutive non-zero runs go out in one write (one 64 KiB write per run cost a thread-pool round
 * trip each: 65 536 of them for 4 GiB).
 */
export async function writeNonZero(dst: Disk, offset: number, buf: Buffer, gran: number): Promise<number> {
  let written = 0;
  let start = -1;
  const flush = async (end: number) => {
    if (start < 0) return;
    await dst.write(offset + start, buf.subarray(start, end));
    written += end - start;
    start = -1;
  };
  for (let off = 0; off < buf.length; ) {
    const end = Math.min(buf.length, off + (gran - ((offset + off) % gran)));
    if (isAllZero(buf.subarray(off, end))) await flush(off);
    else if (start < 0) start = off;
    off = end;
  }
  await flush(buf.length);
  return written;
}

/** The zero-detection granularity for writes into `dst`: its block size up to 1 MiB, or 64 KiB for raw. */
export function zeroGranularity(dst: Disk): number {
  return dst.blockSize > 0 ? Math.min(dst.blockSize, 1 << 20) : 64 << 10;
}

/** Yields the whole disk as data pieces of at most CHUNK bytes and skip pieces for unallocated or zero extents. */
async function* dataPieces(src: Disk): AsyncGenerator<Piece> {
  const STATUS_WINDOW = 1 << 30;
  for (let base = 0; base < src.virtualSize; base += STATUS_WINDOW) {
    const len = Math.min(STATUS_WINDOW, src.virtualSize - base);
    for (const e of await src.status(base, len)) {
      if (e.state !== 'data') {
        yield { offset: e.offset, length: e.length, data: false };
        continue;
      }
      for (let o = 0; o < e.length; o += CHUNK) {
        yield { offset: e.offset + o, length: Math.min(CHUNK, e.length - o), data: true };
      }
    }
  }
}
