/**
 * What an encoder reads: a disk's virtual size, the ranges whose content must be sent (everything else reads as
 * zeros in a full stream, or is the base's in a delta), and a read function. Built from a Disk here, from a
 * forward-only VHD stream in vhd-stream-source.ts.
 */
import type { Disk, DiskFormat } from '../formats/disk.js';
import type { ParentLocator } from '../formats/vhdx/parent-locator.js';
import { displayLocation } from '../io/location.js';
import { prefetch } from '../util/prefetch.js';
import { isAllZero } from '../util/struct.js';
import { EventLoopTurns } from '../util/event-loop.js';
import { pooledRing } from '../util/aligned.js';
import { canMap, readMapped } from '../formats/mapped-read.js';
import { HoleProbe } from '../io/holes.js';

/** A byte range of the virtual disk. */
export interface ByteRange {
  offset: number;
  length: number;
}

/** The base a delta applies to, as a differencing image must name it. */
export interface DeltaBase {
  /** VHD UniqueId of the base (zeros when the base is not a VHD). */
  uniqueId: Buffer;
  /** VHD timestamp of the base (seconds since 2000-01-01). */
  timestamp: number;
  /** The base's file name, recorded as the parent's name. */
  name: string;
  /** A path to the base for a parent locator (Windows style), or null for none. */
  locatorPath: string | null;
  /** `W2ru` for a path relative to the stream's final place, `W2ku` for an absolute one. */
  locatorCode: 'W2ru' | 'W2ku';
  /** The base's format, and its path as a QCOW2 backing file name: relative to the stream's final place, else its path in its store. */
  format: DiskFormat;
  backingPath: string;
  /** For a VHDX child: the locator naming this base (parent_linkage = its DataWriteGuid) and its sector sizes; absent when the base is no VHDX. */
  vhdxParent?: { locator: ParentLocator; logicalSectorSize: number; physicalSectorSize: number };
}

/** An encoder's input. */
export interface ContentSource {
  readonly virtualSize: number;
  /** Sorted, disjoint, non-empty ranges to send. */
  readonly ranges: readonly ByteRange[];
  /**
   * Set for a delta: the content outside `ranges` is the base's, not zeros. A delta's source is an image and may
   * also be read outside `ranges` (an encoder with coarser units than the ranges reads whole units).
   */
  readonly base: DeltaBase | null;
  /** Parts of `ranges` known from allocation to read as zeros: encoders with a zero flag send them without reading. */
  readonly zeros?: readonly ByteRange[];
  /** A name for messages. */
  readonly name: string;
  /**
   * Reads content inside `ranges`. Encoders call it in ascending offset order and may start the next read before
   * the previous one resolves (forward-only sources serialize them).
   */
  read(offset: number, length: number, into?: Buffer): Promise<Buffer>;
  /** Called once after the last read and before the last byte goes out: a stream source checks its tail here. */
  finish?(): Promise<void>;
  /**
   * Reads worth having in flight at once (default READS_IN_FLIGHT): 1 for sources read synchronously or strictly in
   * order, which would only tie up buffers (each costs page faults) otherwise.
   */
  readonly readsInFlight?: number;
}

/**
 * Serves a source's reads one at a time, in call order: encoders may ask for the next piece before the last one
 * arrived, and a forward-only source (or one that checks block by block) must not see them interleaved. `idle`
 * resolves once every read asked for so far is done (for `finish`).
 */
export function serialReads(readNow: (offset: number, length: number, out: Buffer) => Promise<Buffer>): { read: ContentSource['read']; idle: () => Promise<void> } {
  let queue: Promise<unknown> = Promise.resolve();
  return {
    read(offset, length, into) {
      const out = into ? into.subarray(0, length) : Buffer.allocUnsafe(length);
      const p = queue.then(() => readNow(offset, length, out));
      queue = p.catch(() => {});
      return p;
    },
    idle: async () => {
      await queue;
    },
  };
}

/** Reads and writes are split into pieces of at most this size. */
export const PIECE = 4 << 20;
/** Reads in flight while the consumer handles the previous piece. */
export const READS_IN_FLIGHT = 3;

/** Sorts and merges ranges (touching ones included), dropping empty ones. */
export function normalizeRanges(ranges: Iterable<ByteRange>): ByteRange[] {
  const sorted = [...ranges].filter((r) => r.length > 0).sort((a, b) => a.offset - b.offset);
  const out: ByteRange[] = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    if (last && r.offset <= last.offset + last.length) {
      last.length = Math.max(last.length, r.offset + r.length - last.offset);
    } else {
      out.push({ ...r });
    }
  }
  return out;
}

/** Splits ranges into pieces of at most `max` bytes that never cross a multiple of `align` (0: no alignment). */
export function* splitRanges(ranges: readonly ByteRange[], max = PIECE, align = 0): Generator<ByteRange> {
  for (const r of ranges) {
    for (let off = r.offset; off < r.offset + r.length; ) {
      let end = Math.min(r.offset + r.length, off + max);
      if (align > 0) end = Math.min(end, (Math.floor(off / align) + 1) * align);
      yield { offset: off, length: end - off };
      off = end;
    }
  }
}

/** A piece of content with its bytes; `data` is valid only until the next piece is requested. */
export interface ReadPiece {
  offset: number;
  data: Buffer;
}

/**
 * Reads `pieces` from `source` in order, several in flight, into a small rotating set of buffers. They are page
 * aligned: copies from the page cache into malloc's unaligned memory ran several times slower here (performance.md).
 */
export async function* readPieces(source: ContentSource, pieces: Iterable<ByteRange>, max = PIECE): AsyncGenerator<ReadPiece> {
  // Taken on first use from a shared pool: a fresh buffer costs page faults, which are slow on VMs.
  const depth = source.readsInFlight ?? READS_IN_FLIGHT;
  const ring = pooledRing(depth + 1, max);
  const load = (p: ByteRange) => source.read(p.offset, p.length, ring.next().subarray(0, p.length));
  try {
    for await (const { item, value } of prefetch(pieces, load, depth)) yield { offset: item.offset, data: value };
  } finally {
    ring.release();
  }
}

/** Options for diskContent. */
export interface DiskContentOptions {
  /**
   * Drop `granule`-aligned runs of data that read as all zeros (costs a read of the data before streaming).
   * Only layers in `scanLayers` (chain depths) are scanned: formats with allocation tables already say what is empty.
   */
  zeroScan?: { granule: number; scanDepths: (depth: number) => boolean };
}

/** The full content of a disk (its whole chain): data extents from `status`, optionally with all-zero runs dropped. */
export async function diskContent(disk: Disk, opts: DiskContentOptions = {}): Promise<ContentSource> {
  const data: { range: ByteRange; depth: number }[] = [];
  const STATUS_WINDOW = 1 << 30;
  for (let base = 0; base < disk.virtualSize; base += STATUS_WINDOW) {
    for (const e of await disk.status(base, Math.min(STATUS_WINDOW, disk.virtualSize - base))) {
      if (e.state === 'data') data.push({ range: { offset: e.offset, length: e.length }, depth: e.depth });
    }
  }
  let ranges = normalizeRanges(data.map((d) => d.range));
  const scan = opts.zeroScan;
  if (scan) {
    const keep = data.filter((d) => !scan.scanDepths(d.depth)).map((d) => d.range);
    const toScan = normalizeRanges(data.filter((d) => scan.scanDepths(d.depth)).map((d) => d.range));
    keep.push(...(await nonZeroRuns(disk, toScan, scan.granule)));
    ranges = normalizeRanges(keep);
  }
  return contentOfDisk(disk, ranges, null);
}

/** A ContentSource reading `ranges` of a disk. */
export function contentOfDisk(disk: Disk, ranges: ByteRange[], base: DeltaBase | null, zeros: ByteRange[] = []): ContentSource {
  return {
    virtualSize: disk.virtualSize,
    ranges,
    base,
    zeros,
    name: displayLocation(disk.location),
    readsInFlight: canMap(disk) ? 1 : READS_IN_FLIGHT,
    // Local images are read synchronously from their files where the driver can map them (formats/mapped-read.ts).
    read: (offset, length, into) => readMapped(disk, offset, length, into ?? Buffer.allocUnsafe(length)),
  };
}

/** Bytes read first from a granule: data rarely starts with a whole page of zeros, so most data granules are known by it. */
const PROBE = 4096;

/**
 * The parts of `ranges` (widened to whole granules) whose granules are not all zero. A granule lying in holes of
 * its local files is not read at all; others are read only until their first non-zero piece (a page, then pieces
 * of up to PIECE): granules holding data cost a page each, not their size; only zero granules are read whole.
 */
async function nonZeroRuns(disk: Disk, ranges: ByteRange[], granule: number): Promise<ByteRange[]> {
  const widened = normalizeRanges(
    ranges.map((r) => {
      const start = Math.floor(r.offset / granule) * granule;
      const end = Math.min(disk.virtualSize, Math.ceil((r.offset + r.length) / granule) * granule);
      return { offset: start, length: end - start };
    }),
  );
  // Local images are read synchronously (one at a time is all there is); others keep reads in flight.
  const mapped = canMap(disk);
  const depth = mapped ? 1 : READS_IN_FLIGHT;
  // Probes go to page-sized buffers; larger ones are taken only for granules whose first page is zero. Their size
  // is the stream's block size (at most PIECE), the size the encoders' rings ask the shared pool for afterwards:
  // fresh memory costs a page fault per page on VMs (50-170 ms for the 16 MiB this scan used to take).
  const piece = Math.min(PIECE, granule);
  const probes = pooledRing(depth + 1, PROBE);
  const ring = pooledRing(depth + 1, piece);
  // A granule that lies in holes of its files is zeros without a read (io/holes.ts).
  const holes = mapped ? new HoleProbe() : null;
  const inHoles = async (g: ByteRange): Promise<boolean> => {
    const runs = await disk.mapFile!(g.offset, g.length);
    return runs !== null && runs.every((r) => r.path === null || holes!.isHole(r.path, r.fileOffset, r.length));
  };
  const hasData = async (g: ByteRange): Promise<boolean> => {
    if (holes && (await inHoles(g))) return false;
    const first = Math.min(PROBE, g.length);
    if (!isAllZero(await readMapped(disk, g.offset, first, probes.next()))) return true;
    const buf = first < g.length ? ring.next() : null;
    for (let o = first; o < g.length; ) {
      const n = Math.min(piece, g.length - o);
      const part = await readMapped(disk, g.offset + o, n, buf!);
      if (!isAllZero(part)) return true;
      o += n;
    }
    return false;
  };
  const out: ByteRange[] = [];
  const turns = new EventLoopTurns();
  try {
    for await (const { item, value } of prefetch(splitRanges(widened, granule, granule), hasData, depth)) {
      if (value) out.push(item);
      await turns.after(item.length);
    }
  } finally {
    probes.release();
    ring.release();
    holes?.close();
  }
  return normalizeRanges(out);
}

/**
 * One whole block of a block-based output: the next `pieces` pieces from `reads` (all inside the block, in order),
 * with counts of zero bytes for the gaps around them, `blockSize` bytes in all.
 */
export async function* blockChunks(reads: AsyncIterator<ReadPiece>, start: number, blockSize: number, pieces: number): AsyncGenerator<Buffer | number> {
  let pos = start;
  for (let i = 0; i < pieces; i++) {
    const next = await reads.next();
    if (next.done) throw new Error(`internal: the content ended inside the block at ${start}`);
    const p = next.value;
    if (p.offset > pos) yield p.offset - pos;
    yield p.data;
    pos = p.offset + p.data.length;
  }
  if (pos < start + blockSize) yield start + blockSize - pos;
}
