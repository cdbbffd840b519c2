/**
 * The data path of `copy`: reads the changed ranges from the source (whole metafile blocks, or only the sub-blocks
 * that differ when both lists have a second level), checks each against the digest the plan expects, and writes it
 * into the diff (zeros as writeZeroes, so a reader sees zeros over the parent's data). Only these ranges are
 * written, so the drivers mark only their sectors present and the merge moves only them.
 */
import type { Disk } from '../formats/disk.js';
import type { HashAlgorithm, SubAlgorithm } from '../meta/hashers.js';
import { digestBlock, digestSub, zeroDigest, zeroSubDigests } from '../meta/hashers.js';
import { displayLocation } from '../io/location.js';
import { ContentChangedError } from '../util/errors.js';
import { sizedRing } from '../util/aligned.js';
import { prefetch } from '../util/prefetch.js';
import { isAllZero } from '../util/struct.js';
import { EventLoopTurns, dueTurn } from '../util/event-loop.js';

/** Contiguous changed ranges are read together up to this many bytes. */
const RUN_BYTES = 4 << 20;

/** A run whose source extents are more than this is read this many extents at a time (event loop turns between). */
const EXTENTS_PER_READ = 16;
/** ... and, from a local source, at most this many bytes at a time. */
const PIECE_BYTES = 1 << 20;

/** The sub-blocks of a changed block that differ from the target's, each with the digest the source's list records. */
export interface ChangedParts {
  size: number;
  algorithm: SubAlgorithm;
  /** Ascending sub-block numbers inside the block, with their expected digests. */
  changed: Array<{ sub: number; expected: Buffer }>;
}

/** One block to copy, with the digest the source's metafile recorded (null: do not verify). */
export interface ChangedBlock {
  index: number;
  expected: Buffer | null;
  /** When both lists have a second level: only these sub-blocks move. */
  parts?: ChangedParts;
}

/** Where changed ranges go: a differencing image, or a chunked diff's frame writer. */
export type DiffSink = Pick<Disk, 'write' | 'writeZeroes'>;

/** Options for copyChangedBlocks. */
export interface CopyBlocksOptions {
  blockSize: number;
  algorithm: HashAlgorithm;
  onProgress?: (bytes: number) => void;
}

/** What copyChangedBlocks did. */
export interface CopyBlocksStats {
  blocks: number;
  /** Bytes written as data into the diff. */
  dataBytes: number;
  /** Bytes written as zeros (writeZeroes) into the diff. */
  zeroBytes: number;
  /** Bytes read from the source (zero/unallocated ranges are known from its allocation tables and not read). */
  readBytes: number;
}

/** A range checked against one digest: a whole block (`sub` null) or one sub-block. */
interface Unit {
  index: number;
  offset: number;
  length: number;
  expected: Buffer | null;
  sub: SubAlgorithm | null;
}

interface Run {
  units: Unit[];
  offset: number;
  length: number;
}

/** The ranges to copy, in order: a block's changed sub-blocks, or the whole block. */
async function* unitsOf(blocks: AsyncIterable<ChangedBlock> | Iterable<ChangedBlock>, bs: number, size: number): AsyncGenerator<Unit> {
  let last = -1;
  for await (const b of blocks) {
    if (b.index <= last) throw new RangeError('changed blocks must be ascending');
    const offset = b.index * bs;
    const length = Math.min(bs, size - offset);
    if (length <= 0) throw new RangeError(`block ${b.index} is past the end of the disk`);
    last = b.index;
    if (!b.parts) {
      yield { index: b.index, offset, length, expected: b.expected, sub: null };
      continue;
    }
    let prev = -1;
    for (const c of b.parts.changed) {
      const at = offset + c.sub * b.parts.size;
      if (c.sub <= prev || at >= offset + length) throw new RangeError(`sub-block ${c.sub} of block ${b.index} is out of order or past the block`);
      prev = c.sub;
      yield { index: b.index, offset: at, length: Math.min(b.parts.size, offset + length - at), expected: c.expected, sub: b.parts.algorithm };
    }
  }
}

/** Groups ascending units into contiguous runs of at most RUN_BYTES (a single larger block is a run of its own). */
async function* runsOf(units: AsyncIterable<Unit>): AsyncGenerator<Run> {
  let run: Run | null = null;
  for await (const u of units) {
    if (run && u.offset === run.offset + run.length && run.length + u.length <= RUN_BYTES) {
      run.units.push(u);
      run.length += u.length;
    } else {
      if (run) yield run;
      run = { units: [u], offset: u.offset, length: u.length };
    }
  }
  if (run) yield run;
}

/**
 * Reads a run into `into` (aligned, so the diff's store writes it without a bounce copy), skipping the read when
 * the source's allocation tables say it is all zeros.
 */
async function readRun(source: Disk, run: Run, into: (length: number) => Buffer): Promise<Buffer | null> {
  const ext = await source.status(run.offset, run.length);
  if (ext.every((e) => e.state !== 'data')) return null;
  const out = into(run.length);
  // A local source reads on the calling thread, and one run of a fragmented image is many small reads: hundreds of a
  // chain's extents, or one extent of a QCOW2 whose clusters are scattered in its file. Read in pieces of at most 16
  // extents and 1 MiB, the event loop gets turns between them, so a slow disk cannot hold off the lock's renewals for
  // the whole run. Other stores' reads wait on the network, which gives turns; there one read keeps a run's requests
  // in flight together.
  if (source.location.store.kind !== 'local' || (ext.length <= EXTENTS_PER_READ && run.length <= PIECE_BYTES)) return source.read(run.offset, run.length, out);
  let e = 0;
  for (let from = 0; from < run.length; ) {
    while (e + 1 < ext.length && ext[e + 1].offset - run.offset <= from) e++;
    const byExtents = e + EXTENTS_PER_READ < ext.length ? ext[e + EXTENTS_PER_READ].offset - run.offset : run.length;
    const to = Math.min(byExtents, from + PIECE_BYTES, run.length);
    if (to <= from) throw new Error(`internal: extents of ${displayLocation(source.location)} are not in ascending order`);
    await source.read(run.offset + from, to - from, out.subarray(from, to));
    from = to;
    await dueTurn();
  }
  return out;
}

/** The digest a unit's bytes have (`piece` null or all zero: zeros). */
function digestOf(u: Unit, algorithm: HashAlgorithm, piece: Buffer | null): Buffer {
  if (u.sub) return piece ? digestSub(u.sub, piece) : zeroSubDigests(u.sub, u.length, u.length);
  return piece ? digestBlock(algorithm, piece) : zeroDigest(algorithm, u.length);
}

/**
 * Copies the listed source blocks (ascending indexes; only their changed sub-blocks when given) into `diff`,
 * verifying each digest. Throws ContentChangedError on the first range whose content is not what the metafile says.
 */
export async function copyChangedBlocks(source: Disk, diff: DiffSink, blocks: AsyncIterable<ChangedBlock> | Iterable<ChangedBlock>, opts: CopyBlocksOptions): Promise<CopyBlocksStats> {
  const { blockSize: bs, algorithm } = opts;
  const stats: CopyBlocksStats = { blocks: 0, dataBytes: 0, zeroBytes: 0, readBytes: 0 };
  // One run read ahead while the previous one is verified and written. Buffers grow to the runs met: scattered
  // 64 KiB changes never touch 3 x 4 MiB of fresh aligned memory (about 40 ms of page faults here).
  const buffer = sizedRing(3, Math.max(RUN_BYTES, bs));
  let lastBlock = -1;
  // Local sources and diffs read and write on the calling thread (copy opens them with syncIo): timers (the lock's
  // renewals, progress) get turns all the same.
  const turns = new EventLoopTurns();
  for await (const { item: run, value: data } of prefetch(runsOf(unitsOf(blocks, bs, source.virtualSize)), (r) => readRun(source, r, buffer), 2)) {
    if (data) stats.readBytes += run.length;
    // Consecutive ranges of one kind go to the diff in one call.
    let pendStart = run.offset;
    let pendZero: boolean | null = null;
    let pendLen = 0;
    const flushPending = async () => {
      if (!pendLen) return;
      if (pendZero) {
        await diff.writeZeroes(pendStart, pendLen);
        stats.zeroBytes += pendLen;
      } else {
        await diff.write(pendStart, data!.subarray(pendStart - run.offset, pendStart - run.offset + pendLen));
        stats.dataBytes += pendLen;
      }
    };
    for (const u of run.units) {
      const piece = data ? data.subarray(u.offset - run.offset, u.offset - run.offset + u.length) : null;
      const zero = !piece || isAllZero(piece);
      if (u.expected && !digestOf(u, algorithm, zero ? null : piece).equals(u.expected)) {
        const what = u.sub ? `block ${u.index} (its sub-block at offset ${u.offset})` : `block ${u.index} (offset ${u.offset})`;
        throw new ContentChangedError(`${what} changed since its metafile was made; run createmeta again or use copy --createmeta`, displayLocation(source.location));
      }
      if (pendZero !== zero) {
        await flushPending();
        pendStart = u.offset;
        pendLen = 0;
        pendZero = zero;
      }
      pendLen += u.length;
      if (u.index !== lastBlock) stats.blocks++;
      lastBlock = u.index;
    }
    await flushPending();
    opts.onProgress?.(run.length);
    await turns.after(run.length);
  }
  return stats;
}
