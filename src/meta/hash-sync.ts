/**
 * What one hashing thread runs on the direct path (hash-direct.ts): synchronous reads of mapped file ranges into a
 * small page-aligned buffer, each piece hashed while it is still in the CPU's cache (block digest and sub-digests
 * from the same piece). The same two functions run on the calling thread and, as their source text, in worker
 * threads (DirectPool), so a block's digests never depend on which thread hashed it.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import type Xxhash from 'xxhash-addon';
import { allocAligned } from '../util/aligned.js';
import { fromSystemError } from '../util/errors.js';
import type { HashAlgorithm, SubAlgorithm } from './hashers.js';

/** What hashBlocksSync needs besides its blocks; built by makeSyncHasher in whichever thread runs it. */
export interface SyncHasher {
  piece: number;
  buf: Buffer;
  zeros: Buffer;
  fdOf(path: string): number;
  readSync(fd: number, buf: Buffer, offset: number, length: number, position: number): number;
  newHash(): { update(data: Uint8Array): unknown; digest(): Buffer };
  truncate: boolean;
  /**
   * The second level: sub-block size, a fresh sub-digest, the digest of a whole sub-block in one call (as many calls
   * as sub-blocks: a third of reset + update + digest's cost at 32 KiB), and the digest of a sub-block of zeros; or null.
   */
  sub: {
    size: number;
    newHash(): { update(data: Uint8Array): unknown; digest(): Buffer };
    once(data: Buffer): Buffer;
    /** The digests of every whole sub-block of `data`, back to back, in one call (the native helper), or null. */
    many: ((data: Buffer) => Buffer) | null;
    zeroDigest: Buffer;
  } | null;
  /**
   * Hashes a whole group in native code from the page cache (native/xxh3blocks.c: XXH128 with an XXH3-64 second
   * level or none, the helper built and not switched off), or null. Same arguments and result as hashBlocksSync.
   */
  native: ((blocks: number[][], files: string[]) => Array<BlockDigests | null>) | null;
  /** `native`, writing a group's results into `out` (hashGroupSync's layout) instead of a pair of buffers per block. */
  nativeInto: ((blocks: number[][], files: string[], out: GroupDigests, slot: number) => void) | null;
  /** Bytes of one block digest (16, or 32 for SHA-256). */
  digestLength: number;
  /** The most files `native` takes in one group (the helper's MAX_FILES); 0 without it. */
  nativeMaxFiles: number;
  /** Closes the descriptors opened so far (a worker's descriptors are the process's: ending the thread keeps them). */
  closeAll(): void;
}

/** A hashed block: its digest and, with a second level, its sub-digests back to back (else null). */
export type BlockDigests = [Uint8Array, Uint8Array | null];

/**
 * A hashed group in three buffers: per block its state (1 all zero, 2 data: a list's codes), its digest at
 * digestLength * k and its sub-digests in a slot at slot * k (the slot's rest 0); an all-zero block's digests are
 * left for the caller. A worker hands these over by transfer, not by copying two buffers per block.
 */
export interface GroupDigests {
  states: Uint8Array;
  digests: Uint8Array;
  subs: Uint8Array | null;
}

/**
 * hashBlocksSync's results for a group in GroupDigests' layout, `slot` bytes of sub-digests per block (0 without a
 * second level). Runs on the calling thread and, as its source text, in worker threads (with hashBlocksSync).
 */
export function hashGroupSync(blocks: number[][], files: string[], hx: SyncHasher, slot: number): GroupDigests {
  const n = blocks.length;
  const out: GroupDigests = { states: new Uint8Array(n), digests: new Uint8Array(n * hx.digestLength), subs: hx.sub ? new Uint8Array(n * slot) : null };
  if (n > 0 && hx.nativeInto && files.length <= hx.nativeMaxFiles) {
    hx.nativeInto(blocks, files, out, slot);
    return out;
  }
  hashBlocksSync(blocks, files, hx).forEach((d, k) => {
    out.states[k] = d ? 2 : 1;
    if (!d) return;
    let length = 0;
    for (let r = 2; r < blocks[k].length; r += 3) length += blocks[k][r];
    // Exactly the block's sub-digests (the sub-level's zero digest has their length), and room for them.
    const want = hx.sub ? Math.ceil(length / hx.sub.size) * hx.sub.zeroDigest.length : 0;
    if (d[0].length !== hx.digestLength || (d[1]?.length ?? 0) !== want || want > slot) throw new Error(`block digests of ${d[0].length} and ${d[1]?.length ?? 0} bytes, expected ${hx.digestLength} and ${want} (slot ${slot})`);
    out.digests.set(d[0], k * hx.digestLength);
    if (d[1]) out.subs!.set(d[1], k * slot);
  });
  return out;
}

/**
 * Hashes blocks given as flat triples (file index or -1 for zeros, file offset, length), reading the files
 * synchronously piece by piece and hashing each piece while it is in the CPU's cache (block digest and sub-block
 * digests from the same piece); null for an all-zero block. Runs on the calling thread and, as its source text, in
 * worker threads: it uses only its arguments.
 */
export function hashBlocksSync(blocks: number[][], files: string[], hx: SyncHasher): Array<BlockDigests | null> {
  // A chain longer than the native hasher takes is hashed here.
  if (hx.native && files.length <= hx.nativeMaxFiles) return hx.native(blocks, files);
  const sub = hx.sub;
  return blocks.map((runs) => {
    let h: ReturnType<SyncHasher['newHash']> | null = null;
    let zeroRun = 0;
    const subs: Uint8Array[] = [];
    let subHash: ReturnType<SyncHasher['newHash']> | null = null;
    let subFill = 0;
    const feedSubs = (chunk: Buffer) => {
      for (let at = 0; at < chunk.length; ) {
        if (subFill === 0 && chunk.length - at >= sub!.size) {
          const whole = sub!.many ? Math.floor((chunk.length - at) / sub!.size) * sub!.size : sub!.size;
          subs.push(sub!.many ? sub!.many(chunk.subarray(at, at + whole)) : sub!.once(chunk.subarray(at, at + whole)));
          at += whole;
          continue;
        }
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
          // Whole zero sub-blocks take the precomputed digest; a partial one is hashed, a piece at a time (a sub-block
          // may be larger than a piece: up to 1 MiB).
          for (let k = 0; k < Math.floor(zeroRun / sub.size); k++) subs.push(sub.zeroDigest);
          for (let left = zeroRun % sub.size; left > 0; left -= Math.min(hx.piece, left)) feedSubs(hx.zeros.subarray(0, Math.min(hx.piece, left)));
        }
      }
      h.update(chunk);
      if (sub) feedSubs(chunk);
    };
    for (let r = 0; r < runs.length; r += 3) {
      const file = runs[r];
      // Zeros before any data are only counted (a block lying in a hole of its file is never compared byte by byte).
      if (file < 0 && !h) {
        zeroRun += runs[r + 2];
        continue;
      }
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
  piece: number,
  newBuffer: (piece: number) => Buffer,
  fs: typeof import('node:fs'),
  createHash: typeof import('node:crypto').createHash,
  XXHash128: XxhashModule['XXHash128'],
  XXHash3: XxhashModule['XXHash128'],
  subLevel: { algorithm: string; size: number } | null,
  xxh3Subs: XxhSubs | null,
  blockHasher: NativeBlockHasher | null,
): SyncHasher {
  // Made on first use: the native block hasher reads into its own buffer, and pre-touching 1 MiB of aligned memory
  // costs this machine 3 ms of page faults before the first group.
  let buf: Buffer | null = null;
  const xxh = new XXHash128(Buffer.alloc(8));
  const xxh3 = new XXHash3(Buffer.alloc(8));
  const fds = new Map<string, number>();
  const digestOnce = (h: { update(data: Uint8Array): unknown; digest(): Buffer }, data: Buffer) => {
    h.update(data);
    return h.digest();
  };
  const newSubHash = () => (subLevel!.algorithm === 'xxh3-64' ? (xxh3.reset(), xxh3) : createHash('sha256'));
  const fdOf = (path: string) => {
    let fd = fds.get(path);
    if (fd === undefined) fds.set(path, (fd = fs.openSync(path, 'r')));
    return fd;
  };
  const helper = blockHasher && algorithm === 'xxh128' && (!subLevel || subLevel.algorithm === 'xxh3-64') ? blockHasher : null;
  /** Runs the helper on a group, naming the file for the error line (the helper only knows its index). */
  const naming = <T>(files: string[], call: (fds: number[]) => T): T => {
    try {
      return call(files.map(fdOf));
    } catch (err) {
      const e = err as { fileIndex?: number; path?: string };
      if (e && typeof e.fileIndex === 'number' && e.fileIndex >= 0) e.path = files[e.fileIndex];
      throw err;
    }
  };
  const subSize = subLevel ? subLevel.size : 0;
  const native = helper ? (blocks: number[][], files: string[]) => naming(files, (fds) => helper.hashBlocks(fds, blocks, subSize, helper.map)) : null;
  const nativeInto = helper
    ? (blocks: number[][], files: string[], out: GroupDigests, slot: number) =>
        void naming(files, (fds) => helper.hashBlocks(fds, blocks, subSize, helper.map, out.states, out.digests, out.subs, slot))
    : null;
  return {
    piece,
    // hashers.ts's DIGEST_LENGTH, which this function's source text, run in workers, cannot import.
    digestLength: algorithm === 'sha256' ? 32 : 16,
    nativeInto,
    get buf() {
      return (buf ??= newBuffer(piece));
    },
    zeros: Buffer.alloc(piece),
    fdOf,
    readSync: (fd, b, offset, length, position) => fs.readSync(fd, b, offset, length, position),
    newHash: () => (algorithm === 'xxh128' ? (xxh.reset(), xxh) : createHash(algorithm === 'sha256' ? 'sha256' : 'sha1')),
    truncate: algorithm === 'sha1-16',
    sub: subLevel
      ? {
          size: subLevel.size,
          newHash: newSubHash,
          once: (data) => (subLevel.algorithm === 'xxh3-64' ? XXHash3.hash(data) : digestOnce(createHash('sha256'), data)),
          many:
            subLevel.algorithm === 'xxh3-64' && xxh3Subs
              ? (data) => {
                  const out = Buffer.allocUnsafe((data.length / subLevel.size) * 8);
                  xxh3Subs(data, subLevel.size, out);
                  return out;
                }
              : null,
          zeroDigest: digestOnce(newSubHash(), Buffer.alloc(subLevel.size)),
        }
      : null,
    native,
    nativeMaxFiles: native ? blockHasher!.maxFiles : 0,
    closeAll: () => {
      for (const fd of fds.values()) fs.closeSync(fd);
      fds.clear();
    },
  };
}

/** The native helper's xxh3Subs (native/xxh3subs.c): XXH3-64 of each whole `size` bytes of `data` into `out`. */
type XxhSubs = (data: Buffer, size: number, out: Buffer) => number;

/** The native block hasher's hashBlocks (native/xxh3blocks.c): a group's digests from file descriptors and triples. */
type NativeHashBlocks = {
  (fds: number[], blocks: number[][], subSize: number, map: boolean): Array<BlockDigests | null>;
  (fds: number[], blocks: number[][], subSize: number, map: boolean, states: Uint8Array, digests: Uint8Array, subs: Uint8Array | null, slot: number): undefined;
};

/** The native block hasher as a thread holds it: its function, how many files it takes at once, and its mode. */
type NativeBlockHasher = { hashBlocks: NativeHashBlocks; maxFiles: number; map: boolean };

/**
 * The path of native helper `name` when it was built and loads here with its `exported` function (workers load it
 * by that path), else null: optional, a machine without a C compiler at install time hashes in JavaScript.
 */
function nativeHelperPath(name: string, exported: string): string | null {
  try {
    const req = createRequire(import.meta.url);
    // Two levels above both src/meta and dist/meta, as package.json is for meta/version.ts.
    const at = req.resolve(`../../build/native/${name}.node`);
    return typeof (req(at) as Record<string, unknown>)[exported] === 'function' ? at : null;
  } catch {
    return null;
  }
}

/** The sub-digest helper's path; `VHDSYNC_NATIVE_SUBS=0` switches it off (A/B measurements; same digests). */
const xxh3SubsPath: string | null = process.env.VHDSYNC_NATIVE_SUBS === '0' ? null : nativeHelperPath('xxh3subs', 'xxh3Subs');

/**
 * How XXH128 groups are hashed natively: 'read' (pread into one 256 KiB buffer, both digests hashed from it: the
 * default), 'map' (files mapped 16 MiB at a time and hashed in the page cache; slower here with two threads,
 * docs/performance.md), or null: `VHDSYNC_NATIVE_HASH=0` switches the block hasher off (pieces are then read and
 * hashed in JavaScript). The digests are the same every way.
 */
const nativeHashMode: 'map' | 'read' | null = (() => {
  const asked = process.env.VHDSYNC_NATIVE_HASH;
  return asked === '0' ? null : asked === 'map' ? 'map' : 'read';
})();
const xxh3BlocksPath: string | null = nativeHashMode ? nativeHelperPath('xxh3blocks', 'hashBlocks') : null;

/** How XXH128 groups are hashed by the native block hasher ('map' or 'read'), or null when they are not. */
export function nativeHashing(): 'map' | 'read' | null {
  return xxh3BlocksPath ? nativeHashMode : null;
}

/** True when whole sub-blocks are hashed by the native helper (built, loaded, not switched off). */
export function nativeSubsAvailable(): boolean {
  return xxh3SubsPath !== null;
}

interface XxhashModule {
  XXHash128: { new (seed: Buffer): { reset(): void; update(data: Uint8Array): unknown; digest(): Buffer }; hash(data: Uint8Array): Buffer };
}

// Plain CommonJS so the eval'd worker needs no build step or loader; xxhash-addon comes by resolved path because
// an eval'd worker has no module base. Id -2 (from the worker) says its modules are loaded; -3 (to it) says what to
// hash, so a worker can be started before that is known; a task is one group of blocks, the reply its digests or
// the error; -1 closes its files.
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const fs = require('node:fs');
const { createHash } = require('node:crypto');
const { XXHash128, XXHash3 } = require(workerData.xxhash);
let xxh3Subs = null;
try { if (workerData.subs) xxh3Subs = require(workerData.subs).xxh3Subs; } catch {}
let blockHasher = null;
try { if (workerData.blocks) { const m = require(workerData.blocks); blockHasher = { hashBlocks: m.hashBlocks, maxFiles: m.maxFiles, map: workerData.map }; } } catch {}
const hashBlocksSync = ${hashBlocksSync.toString()};
const hashGroupSync = ${hashGroupSync.toString()};
const makeSyncHasher = ${makeSyncHasher.toString()};
let hx = null;
parentPort.postMessage({ id: -2 });
parentPort.on('message', ({ id, files, blocks, slot, config }) => {
  if (id === -3) {
    // WebAssembly memories are page aligned: the kernel copies into them several times faster (docs/performance.md).
    const newBuffer = (piece) => {
      try { return Buffer.from(new WebAssembly.Memory({ initial: Math.ceil(piece / 65536) }).buffer, 0, piece); } catch { return Buffer.allocUnsafe(piece); }
    };
    return void (hx = makeSyncHasher(config.algorithm, config.piece, newBuffer, fs, createHash, XXHash128, XXHash3, config.sub, xxh3Subs, blockHasher));
  }
  if (id < 0) return void (hx && hx.closeAll(), parentPort.postMessage({ id }));
  try {
    const out = hashGroupSync(blocks, files, hx, slot);
    parentPort.postMessage({ id, digests: out }, out.subs ? [out.states.buffer, out.digests.buffer, out.subs.buffer] : [out.states.buffer, out.digests.buffer]);
  } catch (err) {
    parentPort.postMessage({ id, error: { code: err && err.code, message: err && err.message ? err.message : String(err), path: err && err.path } });
  }
});
`;

let loadedSubs: XxhSubs | null | undefined;
let loadedBlocks: NativeBlockHasher | null | undefined;

/** This thread's handle on the native sub-digest helper, or null. */
function nativeSubs(): XxhSubs | null {
  if (loadedSubs === undefined) loadedSubs = xxh3SubsPath ? (createRequire(import.meta.url)(xxh3SubsPath) as { xxh3Subs: XxhSubs }).xxh3Subs : null;
  return loadedSubs;
}

/** This thread's handle on the native block hasher and its mode, or null. */
function nativeBlocks(): NativeBlockHasher | null {
  if (loadedBlocks === undefined) {
    const m = xxh3BlocksPath ? (createRequire(import.meta.url)(xxh3BlocksPath) as Omit<NativeBlockHasher, 'map'>) : null;
    loadedBlocks = m ? { hashBlocks: m.hashBlocks, maxFiles: m.maxFiles, map: nativeHashMode === 'map' } : null;
  }
  return loadedBlocks;
}

/**
 * The calling thread's hasher: the same code the workers run, with a page-aligned buffer of `piece` bytes; `native`
 * overrides how the block hasher works (tests compare every way), null switching it off.
 */
export function localHasher(algorithm: HashAlgorithm, piece: number, sub: { algorithm: SubAlgorithm; size: number } | null, native = nativeHashing()): SyncHasher {
  const helper = native ? nativeBlocks() : null;
  const blocks = helper ? { ...helper, map: native === 'map' } : null;
  // Required here, not imported: see hashers.ts (and that module has loaded it by now).
  const xxhash = createRequire(import.meta.url)('xxhash-addon') as typeof Xxhash;
  return makeSyncHasher(algorithm, piece, allocAligned, fs, createHash, xxhash.XXHash128 as XxhashModule['XXHash128'], xxhash.XXHash3 as XxhashModule['XXHash128'], sub, nativeSubs(), blocks);
}

/** The digests of a group of blocks, in block order; null for an all-zero block. */
export type Digests = Array<BlockDigests | null>;

type WorkerError = { code?: string; message: string; path?: string };

/**
 * Worker threads running hashBlocksSync on posted groups, each group to the next worker in turn. They are started
 * without knowing what they will hash (`configure` says it), and do not keep the process alive until `configure`d,
 * so a caller can start them early and maybe never use them.
 */
export class DirectPool {
  private readonly workers: Worker[] = [];
  private readonly pending = new Map<number, { resolve: (d: GroupDigests) => void; reject: (e: Error) => void }>();
  private failure: Error | null = null;
  private nextId = 0;
  private started = 0;
  private readonly onReady: Array<() => void> = [];

  private subject = '';

  /** `size` threads; `native` overrides how their block hasher works (tests), null switching it off. */
  constructor(
    readonly size: number,
    native = nativeHashing(),
  ) {
    const xxhash = createRequire(import.meta.url).resolve('xxhash-addon');
    for (let w = 0; w < size; w++) {
      const worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { xxhash, subs: xxh3SubsPath, blocks: native ? xxh3BlocksPath : null, map: native === 'map' } });
      worker.on('message', ({ id, digests, error }: { id: number; digests?: GroupDigests; error?: WorkerError }) => {
        if (id === -2) {
          if (++this.started === this.workers.length) for (const f of this.onReady.splice(0)) f();
          return;
        }
        const p = this.pending.get(id);
        this.pending.delete(id);
        // A system error from the worker's reads becomes the same typed error a read on this thread gives. The
        // group that failed is out of `pending` already: it is rejected here (else a lone group's caller waits forever).
        if (error) {
          this.fail(fromSystemError(Object.assign(new Error(error.message), { code: error.code }), error.path ?? this.subject));
          p?.reject(this.failure!);
        } else if (digests) p?.resolve(digests);
        else p?.reject(new Error('a hashing thread answered without digests'));
      });
      worker.on('error', (err) => this.fail(err));
      // After the listeners: adding a 'message' listener refs the worker's port again.
      worker.unref();
      this.workers.push(worker);
    }
  }

  /** Says what to hash (the digest, the read size, the second level; `subject` names the image in errors). */
  configure(algorithm: HashAlgorithm, piece: number, sub: { algorithm: SubAlgorithm; size: number } | null, subject: string): this {
    this.subject = subject;
    for (const w of this.workers) {
      w.ref();
      w.postMessage({ id: -3, config: { algorithm, piece, sub } });
    }
    return this;
  }

  /** Whether every worker has loaded its modules (until then a caller that can hash itself should). */
  get ready(): boolean {
    return this.started === this.workers.length;
  }

  /** Resolves once every worker is ready, or has failed. */
  whenReady(): Promise<void> {
    return this.ready || this.failure ? Promise.resolve() : new Promise((resolve) => this.onReady.push(resolve));
  }

  /** Groups posted and not yet answered. */
  get inFlight(): number {
    return this.pending.size;
  }

  /** The digests of one group (hashGroupSync's layout, `slot` bytes of sub-digests per block), hashed by the next worker in turn. */
  hash(files: string[], blocks: number[][], slot: number): Promise<GroupDigests> {
    if (this.failure) return Promise.reject(this.failure);
    const id = this.nextId++;
    const promise = new Promise<GroupDigests>((resolve, reject) => this.pending.set(id, { resolve, reject }));
    promise.catch(() => {});
    this.workers[id % this.workers.length].postMessage({ id, files, blocks, slot });
    return promise;
  }

  private fail(err: Error): void {
    this.failure ??= err;
    for (const p of this.pending.values()) p.reject(this.failure);
    this.pending.clear();
    for (const f of this.onReady.splice(0)) f();
  }

  /** Closes the workers' files, then ends them. */
  async close(): Promise<void> {
    // Workers that were never given a group have no files open (and may still be loading): just end them.
    if (this.nextId === 0) {
      this.fail(new Error('hashing stopped'));
      await Promise.all(this.workers.map((w) => w.terminate()));
      return;
    }
    const closed = this.workers.map((w) => new Promise<void>((resolve) => {
      w.on('message', ({ id }: { id: number }) => id === -1 && resolve());
      w.once('exit', () => resolve());
      w.postMessage({ id: -1 });
    }));
    this.fail(new Error('hashing stopped'));
    await Promise.all(closed);
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}
