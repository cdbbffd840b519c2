/**
 * The direct path: when a disk can say where its blocks lie in local files (`Disk.mapFile`: a raw file, the BAT of
 * a VHD or VHDX and their parents, sector bitmaps included), worker threads read those file ranges themselves
 * with synchronous reads into small cache-resident buffers and hash each piece while it is still in the CPU's
 * cache, as xxhsum does, on every core. The async pipeline (hash-disk.ts) copies each 2 MiB chunk into memory on
 * a thread-pool thread and hashes it later on the main thread: on a 2-core machine 1.3-2.8x xxhsum's time.
 *
 * The main thread keeps the allocation tables: it plans the blocks from `status` exactly as the pipeline does
 * (unallocated and zero blocks are never read), maps each group of blocks to file runs and posts the runs to a
 * worker. A group the disk cannot map (compressed clusters, a log replayed in memory) is read and hashed on the
 * main thread, so the result never depends on which path a block took.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import xxhash from 'xxhash-addon';
import type { Disk, FileRun } from '../formats/disk.js';
import { allocAligned } from '../util/aligned.js';
import { fromSystemError } from '../util/errors.js';
import { isAllZero } from '../util/struct.js';
import { planRuns, type Run } from './block-runs.js';
import type { HashedBlock } from './hash-disk.js';
import { digestBlock, digestSubs, zeroDigest, zeroSubDigests, type HashAlgorithm, type SubAlgorithm } from './hashers.js';

/** Bytes per synchronous read: small enough to stay in L2 until hashed. */
const PIECE = 1 << 20;
/** Bytes of blocks a worker takes at a time: few messages, reads mostly sequential. */
const GROUP_BYTES = 16 << 20;
/** Groups posted ahead of the one being yielded, per worker: keeps every worker busy, memory is a few digests. */
const AHEAD_PER_WORKER = 3;

/** What hashBlocksSync needs besides its blocks; built by makeSyncHasher in whichever thread runs it. */
interface SyncHasher {
  piece: number;
  buf: Buffer;
  zeros: Buffer;
  fdOf(path: string): number;
  readSync(fd: number, buf: Buffer, offset: number, length: number, position: number): number;
  newHash(): { update(data: Uint8Array): unknown; digest(): Buffer };
  truncate: boolean;
  /** The second level: sub-block size, a fresh sub-digest, and the digest of a whole sub-block of zeros; or null. */
  sub: { size: number; newHash(): { update(data: Uint8Array): unknown; digest(): Buffer }; zeroDigest: Buffer } | null;
  /** Closes the descriptors opened so far (a worker's descriptors are the process's: ending the thread keeps them). */
  closeAll(): void;
}

/** A hashed block: its digest and, with a second level, its sub-digests back to back (else null). */
type BlockDigests = [Uint8Array, Uint8Array | null];

/**
 * Hashes blocks given as flat triples (file index or -1 for zeros, file offset, length), reading the files
 * synchronously piece by piece and hashing each piece while it is in the CPU's cache (block digest and sub-block
 * digests from the same piece); null for an all-zero block. Runs on the calling thread and, as its source text, in
 * worker threads: it uses only its arguments.
 */
function hashBlocksSync(blocks: number[][], files: string[], hx: SyncHasher): Array<BlockDigests | null> {
  const sub = hx.sub;
  return blocks.map((runs) => {
    let h: ReturnType<SyncHasher['newHash']> | null = null;
    let zeroRun = 0;
    const subs: Uint8Array[] = [];
    let subHash: ReturnType<SyncHasher['newHash']> | null = null;
    let subFill = 0;
    const feedSubs = (chunk: Buffer) => {
      for (let at = 0; at < chunk.length; ) {
        subHash ??= sub!.newHash();
        const n = Math.min(sub!.size - subFill, chunk.length - at);
        subHash.update(chunk.subarray(at, at + n));
        at += n;
        subFill += n;
        if (subFill === sub!.size) {
          subs.push(subHash.digest());
          subHash = null;
          subFill = 0;
        }
      }
    };
    const feed = (chunk: Buffer) => {
      if (!h && hx.zeros.compare(chunk, 0, chunk.length, 0, chunk.length) === 0) {
        zeroRun += chunk.length;
        return;
      }
      if (!h) {
        // Zeros are only hashed once the block turns out not to be all zero.
        h = hx.newHash();
        for (let z = 0; z < zeroRun; z += hx.piece) h.update(hx.zeros.subarray(0, Math.min(hx.piece, zeroRun - z)));
        if (sub) {
          // Whole zero sub-blocks take the precomputed digest; a partial one is hashed (a sub-block fits one piece).
          for (let k = 0; k < Math.floor(zeroRun / sub.size); k++) subs.push(sub.zeroDigest);
          if (zeroRun % sub.size) feedSubs(hx.zeros.subarray(0, zeroRun % sub.size));
        }
      }
      h.update(chunk);
      if (sub) feedSubs(chunk);
    };
    for (let r = 0; r < runs.length; r += 3) {
      const file = runs[r];
      const end = runs[r + 1] + runs[r + 2];
      for (let p = runs[r + 1]; p < end; ) {
        const n = Math.min(hx.piece, end - p);
        if (file < 0) feed(hx.zeros.subarray(0, n));
        else {
          const fd = hx.fdOf(files[file]);
          let got = 0;
          while (got < n) {
            const k = hx.readSync(fd, hx.buf, got, n - got, p + got);
            if (k === 0) break;
            got += k;
          }
          // A file that ends early reads as zeros past its end, as the drivers' reads do.
          if (got < n) hx.buf.fill(0, got, n);
          feed(hx.buf.subarray(0, n));
        }
        p += n;
      }
    }
    if (!h) return null;
    const d = (h as ReturnType<SyncHasher['newHash']>).digest();
    if (subHash) subs.push((subHash as ReturnType<SyncHasher['newHash']>).digest());
    return [hx.truncate ? d.subarray(0, 16) : d, sub ? Buffer.concat(subs) : null];
  });
}

/** The hasher state of one thread: its page-aligned read buffer, cached descriptors, the digest's constructor. */
function makeSyncHasher(
  algorithm: string,
  buf: Buffer,
  fs: typeof import('node:fs'),
  createHash: typeof import('node:crypto').createHash,
  XXHash128: XxhashModule['XXHash128'],
  XXHash3: XxhashModule['XXHash128'],
  subLevel: { algorithm: string; size: number } | null,
): SyncHasher {
  const piece = buf.length;
  const xxh = new XXHash128(Buffer.alloc(8));
  const xxh3 = new XXHash3(Buffer.alloc(8));
  const fds = new Map<string, number>();
  const digestOnce = (h: { update(data: Uint8Array): unknown; digest(): Buffer }, data: Buffer) => {
    h.update(data);
    return h.digest();
  };
  const newSubHash = () => (subLevel!.algorithm === 'xxh3-64' ? (xxh3.reset(), xxh3) : createHash('sha256'));
  return {
    piece,
    buf,
    zeros: Buffer.alloc(piece),
    fdOf: (path) => {
      let fd = fds.get(path);
      if (fd === undefined) fds.set(path, (fd = fs.openSync(path, 'r')));
      return fd;
    },
    readSync: (fd, b, offset, length, position) => fs.readSync(fd, b, offset, length, position),
    newHash: () => (algorithm === 'xxh128' ? (xxh.reset(), xxh) : createHash(algorithm === 'sha256' ? 'sha256' : 'sha1')),
    truncate: algorithm === 'sha1-16',
    sub: subLevel ? { size: subLevel.size, newHash: newSubHash, zeroDigest: digestOnce(newSubHash(), Buffer.alloc(subLevel.size)) } : null,
    closeAll: () => {
      for (const fd of fds.values()) fs.closeSync(fd);
      fds.clear();
    },
  };
}

interface XxhashModule {
  XXHash128: new (seed: Buffer) => { reset(): void; update(data: Uint8Array): unknown; digest(): Buffer };
}

// Plain CommonJS so the eval'd worker needs no build step or loader; xxhash-addon comes by resolved path because
// an eval'd worker has no module base. A task is one group of blocks; the reply its digests, or the error.
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const fs = require('node:fs');
const { createHash } = require('node:crypto');
const { XXHash128, XXHash3 } = require(workerData.xxhash);
const hashBlocksSync = ${hashBlocksSync.toString()};
const makeSyncHasher = ${makeSyncHasher.toString()};
let buf;
// WebAssembly memories are page aligned: the kernel copies into them several times faster (docs/performance.md).
try { buf = Buffer.from(new WebAssembly.Memory({ initial: Math.ceil(workerData.piece / 65536) }).buffer, 0, workerData.piece); } catch { buf = Buffer.allocUnsafe(workerData.piece); }
const hx = makeSyncHasher(workerData.algorithm, buf, fs, createHash, XXHash128, XXHash3, workerData.sub);
parentPort.on('message', ({ id, files, blocks }) => {
  if (id < 0) return void (hx.closeAll(), parentPort.postMessage({ id }));
  try {
    parentPort.postMessage({ id, digests: hashBlocksSync(blocks, files, hx) });
  } catch (err) {
    parentPort.postMessage({ id, error: { code: err && err.code, message: err && err.message ? err.message : String(err), path: err && err.path } });
  }
});
`;

/** True when `disk` can tell where its data lies in local files, so the direct path can read them. */
export function canHashDirectly(disk: Disk): boolean {
  return typeof disk.mapFile === 'function' && disk.location.store.kind === 'local';
}

type Digests = Array<BlockDigests | null>;

/** One planned run, in order: known from the tables, hashed by a worker, or read here. */
type Step = { run: Run; digests: Promise<Digests> | null };

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
 * Yields every block of `disk` in order, like hashDisk, reading and hashing the mapped file ranges synchronously:
 * on this thread when `workers` is 0 (XXH128 keeps up with the reads on one core, and no thread start-up is paid),
 * else on that many threads (for SHA digests, which are CPU bound).
 */
export async function* hashDirectly(
  disk: Disk,
  algorithm: HashAlgorithm,
  blockSize: number,
  workers: number,
  sub: { algorithm: SubAlgorithm; size: number } | null = null,
): AsyncGenerator<HashedBlock> {
  const size = disk.virtualSize;
  const piece = Math.min(PIECE, blockSize);
  const pool = workers > 0 ? new DirectPool(workers, createRequire(import.meta.url).resolve('xxhash-addon'), algorithm, piece, disk.location.path, sub) : null;
  const local = pool
    ? null
    : makeSyncHasher(algorithm, allocAligned(piece), fs, createHash, xxhash.XXHash128 as XxhashModule['XXHash128'], xxhash.XXHash3 as XxhashModule['XXHash128'], sub);
  const zeroSubs = (length: number) => (sub ? { subDigests: zeroSubDigests(sub.algorithm, sub.size, length) } : {});
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
    const runs = await disk.mapFile!(offset, Math.min(run.count * blockSize, size - offset));
    if (!runs) return { run, digests: hashHere(run) };
    const files: string[] = [];
    const blocks = perBlock(runs, run, blockSize, size, files);
    if (pool) return { run, digests: pool.hash(files, blocks) };
    // Each group blocks this thread for a few milliseconds: let timers (progress, lock renewals, keep-alives) run between.
    await new Promise<void>((resolve) => setImmediate(resolve));
    try {
      return { run, digests: Promise.resolve(hashBlocksSync(blocks, files, local!)) };
    } catch (err) {
      throw fromSystemError(err, (err as NodeJS.ErrnoException).path ?? disk.location.path);
    }
  };

  try {
    const plan = planRuns(disk, blockSize, Math.max(1, Math.floor(GROUP_BYTES / blockSize)))[Symbol.asyncIterator]();
    // With workers, groups are posted ahead so every thread stays busy; on this thread, one at a time.
    const limit = pool ? AHEAD_PER_WORKER * workers : 1;
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
        for (let k = 0; k < run.count; k++) {
          const index = run.first + k;
          const offset = index * blockSize;
          const length = Math.min(blockSize, size - offset);
          yield { index, offset, length, state: run.kind as HashedBlock['state'], read: false, digest: zeroDigest(algorithm, length), ...zeroSubs(length) };
        }
        continue;
      }
      inFlight--;
      const digests = await step.digests;
      for (let k = 0; k < digests.length; k++) {
        const index = run.first + k;
        const offset = index * blockSize;
        const length = Math.min(blockSize, size - offset);
        const d = digests[k];
        yield d
          ? { index, offset, length, state: 'data', read: true, digest: asBuffer(d[0]), ...(d[1] ? { subDigests: asBuffer(d[1]) } : {}) }
          : { index, offset, length, state: 'zero', read: true, digest: zeroDigest(algorithm, length), ...zeroSubs(length) };
      }
    }
  } finally {
    local?.closeAll();
    await pool?.close();
  }
}

/** A Buffer view of bytes a worker posted back (they arrive as plain Uint8Arrays). */
function asBuffer(d: Uint8Array): Buffer {
  return Buffer.from(d.buffer, d.byteOffset, d.byteLength);
}

type WorkerError = { code?: string; message: string; path?: string };

/** Worker threads running hashBlocksSync on posted groups. */
class DirectPool {
  private readonly workers: Worker[] = [];
  private readonly pending = new Map<number, { resolve: (d: Digests) => void; reject: (e: Error) => void }>();
  private failure: Error | null = null;
  private nextId = 0;

  constructor(size: number, xxhash: string, algorithm: HashAlgorithm, piece: number, private readonly subject: string, sub: { algorithm: SubAlgorithm; size: number } | null) {
    for (let w = 0; w < size; w++) {
      const worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { xxhash, piece, algorithm, sub } });
      worker.on('message', ({ id, digests, error }: { id: number; digests?: Digests; error?: WorkerError }) => {
        const p = this.pending.get(id);
        this.pending.delete(id);
        // A system error from the worker's reads becomes the same typed error a read on this thread gives.
        if (error) this.fail(fromSystemError(Object.assign(new Error(error.message), { code: error.code }), error.path ?? this.subject));
        else p?.resolve(digests ?? []);
      });
      worker.on('error', (err) => this.fail(err));
      this.workers.push(worker);
    }
  }

  /** The digests of one group, hashed by the next worker in turn. */
  hash(files: string[], blocks: number[][]): Promise<Digests> {
    if (this.failure) return Promise.reject(this.failure);
    const id = this.nextId++;
    const promise = new Promise<Digests>((resolve, reject) => this.pending.set(id, { resolve, reject }));
    promise.catch(() => {});
    this.workers[id % this.workers.length].postMessage({ id, files, blocks });
    return promise;
  }

  private fail(err: Error): void {
    this.failure ??= err;
    for (const p of this.pending.values()) p.reject(this.failure);
    this.pending.clear();
  }

  /** Closes the workers' files, then ends them. */
  async close(): Promise<void> {
    const closed = this.workers.map((w) => new Promise<void>((resolve) => {
      w.on('message', ({ id }: { id: number }) => id < 0 && resolve());
      w.once('exit', () => resolve());
      w.postMessage({ id: -1 });
    }));
    this.fail(new Error('hashing stopped'));
    await Promise.all(closed);
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}
