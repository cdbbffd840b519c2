/**
 * The direct path: when a disk can say where its blocks lie in local files (`Disk.mapFile`: a raw file, the BAT of
 * a VHD or VHDX and their parents, sector bitmaps included, QCOW2 clusters), the mapped file ranges are read with
 * synchronous reads into small cache-resident buffers and each piece is hashed while it is still in the CPU's cache,
 * as xxhsum does (hash-sync.ts). The async pipeline (hash-disk.ts) copies each 2 MiB chunk into memory on a
 * thread-pool thread and hashes it later on the main thread: on a 2-core machine 1.3-2.8x xxhsum's time.
 *
 * This thread keeps the allocation tables: it plans the blocks from `status` exactly as the pipeline does
 * (unallocated and zero blocks are never read) and maps each group of blocks to file runs. XXH128 groups are hashed
 * here and, on a machine with a second core, by one helper thread: whenever the helper has enough queued, this
 * thread hashes the next group itself, so the split follows what each thread gets of the CPU and a helper that
 * starts late or runs slowly never holds the others up for long (decision 0025). SHA groups go to worker threads.
 * A group the disk cannot map (compressed clusters, a log replayed in memory) is read and hashed here through the
 * driver. Digests land by block index: the result never depends on which thread or path hashed a block.
 */
import { availableParallelism } from 'node:os';
import type { Disk, FileRun } from '../formats/disk.js';
import { HoleProbe } from '../io/holes.js';
import { fromSystemError } from '../util/errors.js';
import { isAllZero } from '../util/struct.js';
import { planRuns, type Run } from './block-runs.js';
import type { HashedBlock } from './hash-disk.js';
import { GroupShape, type HashedGroup } from './hashed-group.js';
import { digestBlock, digestSubs, type HashAlgorithm, type SubAlgorithm } from './hashers.js';
import { DirectPool, hashGroupSync, localHasher, type Digests, type GroupDigests } from './hash-sync.js';

/** Bytes per synchronous read: small enough to stay in L2 until hashed. */
const PIECE = 1 << 20;
/** Bytes of blocks a thread takes at a time: few messages, reads mostly sequential. */
const GROUP_BYTES = 16 << 20;
/** Groups posted ahead of the one being yielded, per worker: keeps every worker busy, memory is a few digests. */
const AHEAD_PER_WORKER = 3;
/** Groups a helper thread holds queued beside this thread's: one being hashed, the next ones waiting. */
const HELPER_QUEUE = 3;
/** Groups planned ahead of the one being yielded when this thread hashes too (memory: their digests only). */
const MAX_AHEAD = 16;
/**
 * Bytes this thread hashes before a helper thread is started: a tiny image is done before a thread could start
 * (about 30 ms idle, 0.1-0.5 s of wall time on a loaded machine), so it never pays for one.
 */
const HELPER_AFTER = 32 << 20;

/** How the direct path spreads XXH128 hashing over threads (tests shrink the sizes to interleave small images). */
export interface DirectThreads {
  /** Threads hashing XXH128 groups, this one included (helpers are the rest); default defaultHashThreads(). */
  count?: number;
  /** Bytes of blocks per group; default 16 MiB. */
  groupBytes?: number;
  /** Bytes this thread hashes before helpers start; default 32 MiB. */
  helperAfter?: number;
  /** Wait for the helpers to be up once they are started (tests: so they surely take part). */
  awaitHelpers?: boolean;
  /** Counts the groups each side hashed, when given. */
  stats?: { here: number; helpers: number };
}

let spare: DirectPool | null = null;

/**
 * Starts the helper threads the next XXH128 hashing will want, now: a thread takes 60-100 ms to load its modules
 * (this machine, under load), time the CLI spends loading its own. Unused, they cost that CPU time on another
 * core, and do not keep the process alive.
 */
export function prestartHashThreads(): void {
  const helpers = defaultHashThreads() - 1;
  if (helpers > 0 && !spare) {
    try {
      spare = new DirectPool(helpers);
    } catch {
      // Started when hashing begins (and, if that fails too, hashed on one thread).
    }
  }
}

/** `count` helper threads: the prestarted ones if they fit, else new ones. */
function takeHelpers(count: number): DirectPool {
  const taken = spare?.size === count ? spare : new DirectPool(count);
  if (taken === spare) spare = null;
  return taken;
}

/**
 * Threads that hash XXH128 on the direct path, this one included: `VHDSYNC_HASH_THREADS` if set (1 to the core
 * count), else 2 where there are 2 or more cores (measured in docs/performance.md "createmeta"; decision 0025).
 */
export function defaultHashThreads(): number {
  const cores = availableParallelism();
  const asked = Number(process.env.VHDSYNC_HASH_THREADS);
  if (Number.isInteger(asked) && asked >= 1) return Math.min(asked, cores);
  return Math.min(2, cores);
}

/** True when `disk` can tell where its data lies in local files, so the direct path can read them. */
export function canHashDirectly(disk: Disk): boolean {
  return typeof disk.mapFile === 'function' && disk.location.store.kind === 'local';
}

/** One planned run, in order: known from the tables (no digests), hashed here, or posted to a worker. */
type Step = { run: Run; digests: Promise<Digests | GroupDigests> | null };

/** Splits file runs covering consecutive blocks into per-block flat triples (file index, offset, length). */
function perBlock(runs: FileRun[], run: Run, blockSize: number, size: number, files: string[]): number[][] {
  const blocks: number[][] = [];
  let r = 0;
  let used = 0;
  for (let k = 0; k < run.count; k++) {
    const start = (run.first + k) * blockSize;
    let left = Math.min(blockSize, size - start);
    const triples: number[] = [];
    while (left > 0) {
      const fr = runs[r];
      const n = Math.min(left, fr.length - used);
      let file = -1;
      if (fr.path !== null) {
        file = files.indexOf(fr.path);
        if (file < 0) file = files.push(fr.path) - 1;
      }
      const last = triples.length - 3;
      // Neighbouring zero runs, and contiguous runs of one file, are one read.
      if (last >= 0 && triples[last] === file && (file < 0 || triples[last + 1] + triples[last + 2] === fr.fileOffset + used)) triples[last + 2] += n;
      else triples.push(file, file < 0 ? 0 : fr.fileOffset + used, n);
      used += n;
      left -= n;
      if (used === fr.length) {
        r++;
        used = 0;
      }
    }
    blocks.push(triples);
  }
  return blocks;
}

/**
 * Turns the file runs of `blocks` that lie in holes of their files (never written: they read as zeros) into zero
 * runs, so they are not read: a sparse raw image's holes cost one lseek per run (decision 0024).
 */
function dropHoles(blocks: number[][], files: string[], holes: HoleProbe): void {
  for (const triples of blocks) {
    for (let r = 0; r < triples.length; r += 3) {
      if (triples[r] >= 0 && holes.isHole(files[triples[r]], triples[r + 1], triples[r + 2])) {
        triples[r] = -1;
        triples[r + 1] = 0;
      }
    }
  }
}

/** A group all of whose blocks lie in holes or zero runs: nothing to read, every block reads as zeros. */
function allHoles(blocks: number[][]): boolean {
  for (const triples of blocks) for (let r = 0; r < triples.length; r += 3) if (triples[r] >= 0) return false;
  return true;
}

/** How long this thread runs groups back to back before it lets timers and the helpers' answers in. */
const YIELD_MS = 2;

/**
 * Yields every block of `disk` in order, like hashDisk, in groups (hashed-group.ts), reading and hashing the mapped
 * file ranges synchronously. With `workers` > 0 (SHA digests, which are CPU bound) groups go to that many worker
 * threads; with 0 (XXH128, which keeps up with the reads on one core) this thread hashes, helped by
 * `threads.count - 1` helper threads once it has hashed `threads.helperAfter` bytes itself.
 */
export async function* hashDirectGroups(
  disk: Disk,
  algorithm: HashAlgorithm,
  blockSize: number,
  workers: number,
  sub: { algorithm: SubAlgorithm; size: number } | null = null,
  threads: DirectThreads = {},
): AsyncGenerator<HashedGroup> {
  const size = disk.virtualSize;
  const shape = new GroupShape(algorithm, blockSize, size, sub);
  const piece = Math.min(PIECE, blockSize);
  const hashesHere = workers === 0;
  const helpers = hashesHere ? Math.max(0, (threads.count ?? defaultHashThreads()) - 1) : 0;
  const helperAfter = threads.helperAfter ?? HELPER_AFTER;
  let pool = hashesHere ? null : new DirectPool(workers).configure(algorithm, piece, sub, disk.location.path);
  const local = hashesHere ? localHasher(algorithm, piece, sub) : null;
  const holes = new HoleProbe();
  let hashedHere = 0;
  let noHelpers = false;
  let lastYield = performance.now();
  /** Lets timers (progress, lock renewals, keep-alives) and the helpers' answers run when this thread has held on. */
  const breathe = async () => {
    if (performance.now() - lastYield < YIELD_MS) return;
    await new Promise<void>((resolve) => setImmediate(resolve));
    lastYield = performance.now();
  };
  /** Hashes a group the disk could not map, on this thread through the driver. */
  const hashHere = async (run: Run): Promise<Digests> => {
    const offset = run.first * blockSize;
    const data = await disk.read(offset, Math.min(run.count * blockSize, size - offset));
    const out: Digests = [];
    for (let at = 0; at < data.length; at += blockSize) {
      const bytes = data.subarray(at, Math.min(at + blockSize, data.length));
      out.push(isAllZero(bytes) ? null : [digestBlock(algorithm, bytes), sub ? digestSubs(sub.algorithm, sub.size, bytes) : null]);
    }
    return out;
  };
  const start = async (run: Run): Promise<Step> => {
    if (run.kind !== 'read') return { run, digests: null };
    const offset = run.first * blockSize;
    const length = Math.min(run.count * blockSize, size - offset);
    const runs = await disk.mapFile!(offset, length);
    // Read through the driver one group at a time: its buffer is the only one of this size held.
    if (!runs) return { run, digests: Promise.resolve(await hashHere(run)) };
    // The mapped runs must cover the group exactly: a driver's short map would otherwise hash fewer bytes per block.
    const mapped = runs.reduce((n, r) => n + r.length, 0);
    if (mapped !== length) throw new Error(`${disk.location.path}: the image's map covers ${mapped} of ${length} bytes at ${offset}`);
    const files: string[] = [];
    const blocks = perBlock(runs, run, blockSize, size, files);
    dropHoles(blocks, files, holes);
    // Holes of a sparse file: zeros known without a read, answered here (a 1 TiB sparse raw is 65536 such groups).
    if (allHoles(blocks)) {
      await breathe();
      return { run, digests: Promise.resolve(new Array<null>(run.count).fill(null)) };
    }
    // Helpers already up (started with the process) join at once; new ones only for an image worth their start-up.
    if (helpers > 0 && !pool && !noHelpers && (hashedHere >= helperAfter || spare?.ready)) {
      try {
        pool = takeHelpers(helpers).configure(algorithm, piece, sub, disk.location.path);
        if (threads.awaitHelpers) await pool.whenReady();
      } catch {
        // A process that cannot start threads (resource limits) hashes on this one.
        noHelpers = true;
      }
    }
    // A helper takes the group when it is up and has room; else this thread hashes it now.
    if (pool && (!hashesHere || (pool.ready && pool.inFlight < HELPER_QUEUE * helpers))) {
      if (threads.stats) threads.stats.helpers++;
      return { run, digests: pool.hash(files, blocks, shape.slot) };
    }
    // Each group blocks this thread for a few milliseconds.
    await breathe();
    let digests: GroupDigests;
    try {
      digests = hashGroupSync(blocks, files, local!, shape.slot);
    } catch (err) {
      throw fromSystemError(err, (err as NodeJS.ErrnoException).path ?? disk.location.path);
    }
    hashedHere += length;
    if (threads.stats) threads.stats.here++;
    return { run, digests: Promise.resolve(digests) };
  };

  try {
    const groupBytes = threads.groupBytes ?? GROUP_BYTES;
    const plan = planRuns(disk, blockSize, Math.max(1, Math.floor(groupBytes / blockSize)))[Symbol.asyncIterator]();
    // Worker-only: groups are posted ahead so every worker stays busy. Hashing here: this thread runs ahead of a
    // group a helper still holds, up to MAX_AHEAD groups, instead of waiting for it.
    const limit = hashesHere ? (helpers ? MAX_AHEAD : 1) : AHEAD_PER_WORKER * workers;
    const ahead: Step[] = [];
    let inFlight = 0;
    let planned = false;
    for (;;) {
      while (!planned && inFlight < limit) {
        const next = await plan.next();
        if (next.done) planned = true;
        else {
          const step = await start(next.value);
          if (step.digests) inFlight++;
          ahead.push(step);
        }
      }
      const step = ahead.shift();
      if (!step) break;
      const { run } = step;
      if (!step.digests) {
        yield* shape.knownGroups(run.first, run.count, run.kind as 'unallocated' | 'zero');
        continue;
      }
      inFlight--;
      const got = await step.digests;
      const group = Array.isArray(got) ? shape.fromDigests(run.first, got) : shape.fromPacked(run.first, got);
      if (group.count !== run.count) throw new Error(`a hashed group of ${group.count} blocks came for ${run.count}`);
      yield group;
    }
  } finally {
    local?.closeAll();
    holes.close();
    await pool?.close();
  }
}

/** hashDirectGroups block by block (hashDisk's view of the direct path). */
export async function* hashDirectly(...args: Parameters<typeof hashDirectGroups>): AsyncGenerator<HashedBlock> {
  const [disk, algorithm, blockSize, , sub] = args;
  const shape = new GroupShape(algorithm, blockSize, disk.virtualSize, sub ?? null);
  for await (const g of hashDirectGroups(...args)) yield* shape.blocksOf(g);
}
