/**
 * The hashing pipeline: walks a disk block by block, never reading what the allocation tables say is unallocated
 * or zero, keeping several large reads in flight while the current chunk is hashed.
 */
import type { Disk } from '../formats/disk.js';
import { allocAligned } from '../util/aligned.js';
import { prefetch } from '../util/prefetch.js';
import { isAllZero } from '../util/struct.js';
import type { BlockState } from './entries.js';
import { digestBlock, digestSubs, zeroDigest, zeroSubDigests, type HashAlgorithm, type SubAlgorithm } from './hashers.js';
import { HashPool, type PoolDigest } from './hash-pool.js';
import { planRuns, type Run } from './block-runs.js';
import { canHashDirectly, hashDirectGroups, hashDirectly, type DirectThreads } from './hash-direct.js';
import { GroupShape, type HashedGroup } from './hashed-group.js';

/** Reads are at least this large (several blocks at once when blocks are small): few async calls, and buffers small enough to stay warm in cache between the read and the hash (2 MiB measured best; docs/performance.md). */
export const DEFAULT_CHUNK = 2 << 20;
/** Reads in flight besides the chunk being hashed: enough to keep the disk busy, memory = (n + 1) chunks. */
export const DEFAULT_READ_AHEAD = 3;

/** Options for hashDisk. */
export interface HashOptions {
  algorithm: HashAlgorithm;
  blockSize: number;
  /** Also yield each data block's bytes (for a copy that hashes and copies in one pass). */
  withData?: boolean;
  /** Bytes per read (rounded to whole blocks, at least one block). */
  chunkSize?: number;
  readAhead?: number;
  /** Worker threads that compute digests beside the reads; 0 (default) hashes on the calling thread. */
  workers?: number;
  /**
   * Images whose data lies in local files (raw, VHD/VHDX chains; without `withData`) are read and hashed from
   * those files directly (hash-direct.ts, on `workers` threads or this one); false forces the generic pipeline.
   */
  direct?: boolean;
  /** Also digest each block's sub-blocks of `size` bytes (a list's second level), in the same pass. */
  sub?: { algorithm: SubAlgorithm; size: number } | null;
  /** On the direct path, XXH128 (no `workers`): threads hashing, this one included; default defaultHashThreads(). */
  threads?: DirectThreads;
}

/** One hashed block. */
export interface HashedBlock {
  index: number;
  offset: number;
  length: number;
  state: BlockState;
  /** Whether the block was read (false when the allocation tables said unallocated or zero). */
  read: boolean;
  /** The digest of the block's content (for zero and unallocated blocks, the digest of zeros). */
  digest: Buffer;
  /** With `withData`, the bytes of a data block; valid only until the generator is resumed. */
  data?: Buffer;
  /** With `sub`: the block's sub-digests back to back, ceil(length / sub size) of them (of zeros for zero blocks). */
  subDigests?: Buffer;
}

/**
 * Virtual bytes of the pipeline's blocks gathered into one group by hashDiskGroups: progress is reported a group at
 * a time, and a share read at 50 MB/s still moves it every second or so. Its entries are copied, not its data.
 */
const PIPELINE_GROUP_BYTES = 32 << 20;

/**
 * Every block of `disk` in order, like hashDisk (without block data), as groups: the direct path's own groups, or
 * the pipeline's blocks gathered up to PIPELINE_GROUP_BYTES (and GroupShape's cap on digest bytes) at a time.
 */
export async function* hashDiskGroups(disk: Disk, opts: Omit<HashOptions, 'withData'>): AsyncGenerator<HashedGroup> {
  const { blockSize, algorithm } = opts;
  if (opts.direct !== false && (await hashesDirectly(disk))) {
    yield* hashDirectGroups(disk, algorithm, blockSize, directWorkers(opts), opts.sub ?? null, opts.threads);
    return;
  }
  const shape = new GroupShape(algorithm, blockSize, disk.virtualSize, opts.sub ?? null);
  const most = Math.max(1, Math.min(shape.knownGroup, Math.floor(PIPELINE_GROUP_BYTES / blockSize)));
  let pending: HashedBlock[] = [];
  const gather = () => {
    const first = pending[0].index;
    const g = shape.allZero(first, pending.length, 'zero', pending[0].read);
    pending.forEach((b, k) => shape.setBlock(g, k, b));
    pending = [];
    return g;
  };
  for await (const b of hashDisk(disk, { ...opts, direct: false })) {
    // A group holds blocks alike in being read or not (its `read` says which).
    if (pending.length && (pending.length === most || pending[0].read !== b.read)) yield gather();
    pending.push(b);
  }
  if (pending.length) yield gather();
}

/** Worker threads the direct path gets for these options (SHA only; XXH128 is hashed by this thread and its helpers). */
function directWorkers(opts: Pick<HashOptions, 'workers'>): number {
  return Math.min(4, Math.max(0, opts.workers ?? 0));
}

/** Whether hashDisk takes the direct path for `disk` when asked for no block data (hash-direct.ts). */
export async function hashesDirectly(disk: Disk): Promise<boolean> {
  // An empty range tells whether the driver maps at all now (a writable open or a replayed log does not).
  return canHashDirectly(disk) && (await disk.mapFile!(0, 0)) !== null;
}

interface Loaded {
  run: Run;
  data: Buffer | null;
  buffer: Buffer | null;
  /** With workers: per block of the run, its digest in progress, or null when the block is all zero. */
  digests?: Array<Promise<PoolDigest> | null>;
}

/**
 * Yields every block of `disk` in order with its state and digest. Unallocated and zero blocks (from
 * `disk.status`) are not read; data blocks found all zero are reported as `zero`. Memory is
 * (readAhead + 1) × chunk whatever the disk's size.
 */
export async function* hashDisk(disk: Disk, opts: HashOptions): AsyncGenerator<HashedBlock> {
  const { blockSize, algorithm } = opts;
  if (!opts.withData && opts.direct !== false && (await hashesDirectly(disk))) {
    yield* hashDirectly(disk, algorithm, blockSize, directWorkers(opts), opts.sub ?? null, opts.threads);
    return;
  }
  const sub = opts.sub ?? null;
  const zeroSubs = (length: number) => (sub ? { subDigests: zeroSubDigests(sub.algorithm, sub.size, length) } : {});
  const blocksPerRead = Math.max(1, Math.floor((opts.chunkSize ?? DEFAULT_CHUNK) / blockSize));
  const workers = Math.max(0, opts.workers ?? 0);
  // Workers only help when several blocks wait for them at once.
  const readAhead = Math.max(1, opts.readAhead ?? (workers ? 2 * workers + 2 : DEFAULT_READ_AHEAD));
  const blockLength = (i: number) => Math.min(blockSize, disk.virtualSize - i * blockSize);
  const plan = planRuns(disk, blockSize, blocksPerRead);
  const hashPool = workers > 0 ? new HashPool(workers) : null;
  const alloc = hashPool ? HashPool.alloc : allocAligned;
  const pool: Buffer[] = [];

  const load = async (run: Run): Promise<Loaded> => {
    if (run.kind !== 'read') return { run, data: null, buffer: null };
    const offset = run.first * blockSize;
    const length = Math.min(run.count * blockSize, disk.virtualSize - offset);
    const buffer = pool.pop() ?? alloc(blocksPerRead * blockSize);
    const data = await disk.read(offset, length, buffer.subarray(0, length));
    if (!hashPool) return { run, data, buffer };
    // Start every block's digest as soon as its bytes are here, so workers hash while the next reads run.
    const shared = data.buffer === buffer.buffer ? buffer : HashPool.copyIn(data, buffer);
    const digests = [];
    for (let k = 0; k < run.count; k++) {
      const len = blockLength(run.first + k);
      const at = k * blockSize;
      digests.push(isAllZero(shared.subarray(at, at + len)) ? null : hashPool.digest(algorithm, shared, at, len, sub));
    }
    for (const d of digests) d?.catch(() => {});
    return { run, data: shared, buffer, digests };
  };

  try {
    // readAhead runs in flight while one is hashed; a buffer returns to the pool before the next read starts.
    for await (const { value } of prefetch(plan, load, readAhead + 1)) {
      const { run, data, buffer, digests } = value;
      for (let k = 0; k < run.count; k++) {
        const index = run.first + k;
        const length = blockLength(index);
        const offset = index * blockSize;
        if (!data) {
          yield { index, offset, length, state: run.kind as BlockState, read: false, digest: zeroDigest(algorithm, length), ...zeroSubs(length) };
          continue;
        }
        const bytes = data.subarray(k * blockSize, k * blockSize + length);
        if (digests) {
          const d = digests[k];
          if (!d) yield { index, offset, length, state: 'zero', read: true, digest: zeroDigest(algorithm, length), ...zeroSubs(length) };
          else {
            const got = await d;
            yield { index, offset, length, state: 'data', read: true, digest: got.digest, data: opts.withData ? bytes : undefined, ...(got.subs ? { subDigests: got.subs } : {}) };
          }
        } else if (isAllZero(bytes)) {
          yield { index, offset, length, state: 'zero', read: true, digest: zeroDigest(algorithm, length), ...zeroSubs(length) };
        } else {
          const subDigests = sub ? { subDigests: digestSubs(sub.algorithm, sub.size, bytes) } : {};
          yield { index, offset, length, state: 'data', read: true, digest: digestBlock(algorithm, bytes), data: opts.withData ? bytes : undefined, ...subDigests };
        }
      }
      if (buffer) pool.push(buffer);
    }
  } finally {
    await hashPool?.close();
  }
}
