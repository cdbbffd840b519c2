/**
 * The data path of `copy`: reads the changed metafile blocks from the source, checks each against the digest
 * the plan expects, and writes it into the diff (zeros as writeZeroes, so a reader sees zeros over the
 * parent's data). Only these ranges are written, so the drivers mark only their sectors present.
 */
import type { Disk } from '../formats/disk.js';
import type { HashAlgorithm } from '../meta/hashers.js';
import { digestBlock, zeroDigest } from '../meta/hashers.js';
import { displayLocation } from '../io/location.js';
import { ContentChangedError } from '../util/errors.js';
import { alignedRing } from '../util/aligned.js';
import { prefetch } from '../util/prefetch.js';
import { isAllZero } from '../util/struct.js';

/** Contiguous changed blocks are read together up to this many bytes. */
const RUN_BYTES = 4 << 20;

/** One block to copy, with the digest the source's metafile recorded (null: do not verify). */
export interface ChangedBlock {
  index: number;
  expected: Buffer | null;
}

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

interface Run {
  first: number;
  blocks: ChangedBlock[];
  offset: number;
  length: number;
}

/** Groups ascending changed blocks into contiguous runs of at most RUN_BYTES. */
async function* runsOf(blocks: AsyncIterable<ChangedBlock> | Iterable<ChangedBlock>, bs: number, size: number): AsyncGenerator<Run> {
  let run: Run | null = null;
  let last = -2;
  for await (const b of blocks) {
    if (b.index <= last) throw new RangeError('changed blocks must be ascending');
    const offset = b.index * bs;
    const length = Math.min(bs, size - offset);
    if (length <= 0) throw new RangeError(`block ${b.index} is past the end of the disk`);
    if (run && b.index === last + 1 && run.length + length <= Math.max(RUN_BYTES, bs)) {
      run.blocks.push(b);
      run.length += length;
    } else {
      if (run) yield run;
      run = { first: b.index, blocks: [b], offset, length };
    }
    last = b.index;
  }
  if (run) yield run;
}

/**
 * Reads a run into `into` (aligned, so the diff's store writes it without a bounce copy), skipping the read when
 * the source's allocation tables say it is all zeros.
 */
async function readRun(source: Disk, run: Run, into: () => Buffer): Promise<Buffer | null> {
  const ext = await source.status(run.offset, run.length);
  if (ext.every((e) => e.state !== 'data')) return null;
  return source.read(run.offset, run.length, into().subarray(0, run.length));
}

/**
 * Copies the listed source blocks (ascending indexes) into `diff`, verifying each digest. Throws
 * ContentChangedError on the first block whose content is not what the metafile says.
 */
export async function copyChangedBlocks(source: Disk, diff: Disk, blocks: AsyncIterable<ChangedBlock> | Iterable<ChangedBlock>, opts: CopyBlocksOptions): Promise<CopyBlocksStats> {
  const { blockSize: bs, algorithm } = opts;
  const stats: CopyBlocksStats = { blocks: 0, dataBytes: 0, zeroBytes: 0, readBytes: 0 };
  // One run read ahead while the previous one is verified and written.
  const buffer = alignedRing(3, Math.max(RUN_BYTES, bs));
  for await (const { item: run, value: data } of prefetch(runsOf(blocks, bs, source.virtualSize), (r) => readRun(source, r, buffer), 2)) {
    if (data) stats.readBytes += run.length;
    // Consecutive blocks of one kind go to the diff in one call.
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
    for (const b of run.blocks) {
      const off = b.index * bs;
      const len = Math.min(bs, source.virtualSize - off);
      const piece = data ? data.subarray(off - run.offset, off - run.offset + len) : null;
      const zero = !piece || isAllZero(piece);
      if (b.expected) {
        const got = zero ? zeroDigest(algorithm, len) : digestBlock(algorithm, piece!);
        if (!got.equals(b.expected)) {
          throw new ContentChangedError(
            `block ${b.index} (offset ${off}) changed since its metafile was made; run createmeta again or use copy --createmeta`,
            displayLocation(source.location),
          );
        }
      }
      if (pendZero !== zero) {
        await flushPending();
        pendStart = off;
        pendLen = 0;
        pendZero = zero;
      }
      pendLen += len;
      stats.blocks++;
    }
    await flushPending();
    opts.onProgress?.(run.length);
  }
  return stats;
}
