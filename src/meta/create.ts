/** Hashing an image into its metafile: identity before, the pipeline streamed into the file, identity after. */
import { availableParallelism } from 'node:os';
import type { Disk } from '../formats/disk.js';
import { displayLocation, type Location } from '../io/location.js';
import { ContentChangedError, UsageError } from '../util/errors.js';
import { formatSize } from '../util/units.js';
import { stateName, type BlockState } from './entries.js';
import { identityProblem } from './fresh.js';
import type { DirectThreads } from './hash-direct.js';
import { hashDisk, hashDiskGroups, type HashedBlock } from './hash-disk.js';
import { defaultSubLevel, type HashAlgorithm } from './hashers.js';
import { blockSizeProblem } from './header.js';
import { metafileLocationFor, writeMetafile, type BlockRecord, type MetafileLayout, type RecordGroup } from './metafile.js';
import { VBB_BLOCK_SIZE } from './vbb.js';

/** The default block size of native metafiles (VhdBlockBackup's, and a VHD's). */
export const DEFAULT_BLOCK_SIZE = 2 << 20;

/** Options for createMetafile. */
export interface CreateMetafileOptions {
  layout?: MetafileLayout;
  /** Native only: `xxh128` (default) or `sha256`. */
  algorithm?: 'xxh128' | 'sha256';
  /** Native only; default 2 MiB. */
  blockSize?: number;
  /** Where to write; default `<image>.blocklist.bin`. */
  target?: Location;
  /** Called with the virtual bytes of each block as it is hashed. */
  onProgress?: (bytes: number) => void;
  /** Called for each block after it is hashed (with `data` for data blocks, unless `withData` is false), for a one-pass copy. */
  onBlock?: (block: HashedBlock) => void | Promise<void>;
  /** With onBlock: give data blocks' bytes (default true); false lets a local image take the direct path. */
  withData?: boolean;
  chunkSize?: number;
  readAhead?: number;
  /** Hashing worker threads (see hashDisk); default: none for XXH128, which keeps up with reads on one core. */
  workers?: number;
  /** XXH128 on the direct path: how many threads hash (`count`, default 2 where there are 2+ cores; hash-direct.ts). */
  threads?: DirectThreads;
  /**
   * Native only: record the second level (sub-block digests, metafile version 3; decision 0019). Default true;
   * false writes a list older vhdsync reads (version 1).
   */
  subBlocks?: boolean;
}

/** What createMetafile did. */
export interface CreateMetafileResult {
  metafile: Location;
  layout: MetafileLayout;
  algorithm: HashAlgorithm;
  blockSize: number;
  virtualSize: number;
  blockCount: number;
  /** The sub-block size of the second level, 0 without one. */
  subBlockSize: number;
  blocks: Record<BlockState, number>;
  /** Virtual bytes read from the image (unallocated and zero extents are never read). */
  bytesRead: number;
}

/** Settles the layout, algorithm and block size from options, refusing contradictions with a usage error. */
export function resolveHashSettings(opts: CreateMetafileOptions, logicalSectorSize: number): { layout: MetafileLayout; algorithm: HashAlgorithm; blockSize: number } {
  const layout = opts.layout ?? 'native';
  if (layout === 'vbb') {
    if (opts.algorithm !== undefined) throw new UsageError('--hash cannot be combined with --format vbb (VhdBlockBackup lists are SHA-1)');
    if (opts.blockSize !== undefined && opts.blockSize !== VBB_BLOCK_SIZE) {
      throw new UsageError('--block-size cannot be combined with --format vbb (VhdBlockBackup lists use 2 MiB blocks)');
    }
    return { layout, algorithm: 'sha1-16', blockSize: VBB_BLOCK_SIZE };
  }
  const blockSize = opts.blockSize ?? DEFAULT_BLOCK_SIZE;
  const problem = blockSizeProblem(blockSize, logicalSectorSize);
  if (problem) throw new UsageError(`invalid --block-size: ${problem}`);
  return { layout, algorithm: opts.algorithm ?? 'xxh128', blockSize };
}

/**
 * Hashes `disk` and writes its metafile atomically. If the image's identity changes while it is being hashed,
 * nothing is written (ContentChangedError).
 */
export async function createMetafile(disk: Disk, opts: CreateMetafileOptions = {}): Promise<CreateMetafileResult> {
  const { layout, algorithm, blockSize } = resolveHashSettings(opts, disk.logicalSectorSize);
  const target = opts.target ?? metafileLocationFor(disk.location);
  const level = layout === 'native' && opts.subBlocks !== false ? defaultSubLevel(algorithm) : null;
  // Blocks no larger than a sub-block have nothing to split.
  const sub = level && level.size < blockSize && level.size % disk.logicalSectorSize === 0 ? level : null;
  const before = await disk.identity();
  const result: CreateMetafileResult = {
    metafile: target,
    layout,
    algorithm,
    blockSize,
    virtualSize: disk.virtualSize,
    blockCount: Math.ceil(disk.virtualSize / blockSize),
    subBlockSize: sub?.size ?? 0,
    blocks: { unallocated: 0, zero: 0, data: 0 },
    bytesRead: 0,
  };
  const hashing = { algorithm, blockSize, chunkSize: opts.chunkSize, readAhead: opts.readAhead, workers: opts.workers ?? defaultWorkers(algorithm), sub, threads: opts.threads };
  async function* records(): AsyncGenerator<BlockRecord | RecordGroup> {
    if (!opts.onBlock) {
      // Nobody looks at single blocks: the hashed groups go to the list as they are.
      for await (const g of hashDiskGroups(disk, hashing)) {
        for (let k = 0; k < g.count; k++) result.blocks[stateName(g.states[k])]++;
        if (g.read) result.bytesRead += g.bytes;
        opts.onProgress?.(g.bytes);
        yield g;
      }
    } else {
      for await (const b of hashDisk(disk, { ...hashing, withData: opts.withData !== false })) {
        result.blocks[b.state]++;
        if (b.read) result.bytesRead += b.length;
        await opts.onBlock(b);
        opts.onProgress?.(b.length);
        yield b;
      }
    }
    // Checked before the rename: a metafile of content that moved under us must never be published.
    const why = identityProblem(before, await disk.identity(), true);
    if (why) throw new ContentChangedError(`the image changed while it was being hashed (${why}); run createmeta again when nothing writes to it`, displayLocation(disk.location));
  }
  await writeMetafile(target, { layout, algorithm, blockSize, logicalSectorSize: disk.logicalSectorSize, virtualSize: disk.virtualSize, identity: before, subBlockSize: sub?.size ?? 0 }, records());
  return result;
}

/**
 * Worker threads for an algorithm: SHA-256 and SHA-1 run at about 1-2 GB/s per core, well below the disk, so they
 * get up to 4 workers where there are cores to spare; XXH128 hashes faster than the reads arrive (docs/performance.md).
 */
export function defaultWorkers(algorithm: HashAlgorithm): number {
  if (algorithm === 'xxh128') return 0;
  const cores = availableParallelism();
  return cores > 1 ? Math.min(4, cores) : 0;
}

/** One line describing a created metafile. */
export function describeCreated(r: CreateMetafileResult, seconds: number): string {
  const kind = r.layout === 'vbb' ? 'VhdBlockBackup SHA-1' : r.algorithm;
  const data = r.blocks.data;
  return `${displayLocation(r.metafile)}: ${r.blockCount} blocks of ${formatSize(r.blockSize)} (${kind}): ${data} data, ${r.blocks.zero} zero, ${r.blocks.unallocated} unallocated; ${seconds.toFixed(2)} s`;
}
