/**
 * Digests computed on worker threads, so hashing runs beside the reads instead of between them. Blocks are
 * handed over without copying: read buffers are shared (SharedArrayBuffer-backed) memory.
 */
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import { allocShared } from '../util/aligned.js';
import type { HashAlgorithm, SubAlgorithm } from './hashers.js';

// The workers hash with the same modules as the main thread (hashers.ts); they are plain CommonJS so the worker
// needs no build step or loader, and get xxhash-addon's resolved path because an eval'd worker has no module base.
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const { XXHash128, XXHash3 } = require(workerData.xxhash);
parentPort.on('message', ({ id, memory, offset, length, algorithm, sub }) => {
  const data = Buffer.from(memory, offset, length);
  let digest;
  if (algorithm === 'xxh128') digest = XXHash128.hash(data);
  else if (algorithm === 'sha256') digest = createHash('sha256').update(data).digest();
  else digest = createHash('sha1').update(data).digest().subarray(0, 16);
  let subs = null;
  if (sub) {
    // The second level (hashers.ts digestSubs): one digest per sub-block, the last over its shorter piece.
    const parts = [];
    for (let at = 0; at < length; at += sub.size) {
      const piece = data.subarray(at, Math.min(at + sub.size, length));
      parts.push(sub.algorithm === 'xxh3-64' ? XXHash3.hash(piece) : createHash('sha256').update(piece).digest());
    }
    subs = Buffer.concat(parts);
  }
  parentPort.postMessage({ id, digest, subs });
});
`;

/** A block's digest and, when asked for, its sub-digests back to back. */
export interface PoolDigest {
  digest: Buffer;
  subs: Buffer | null;
}

interface Pending {
  resolve: (d: PoolDigest) => void;
  reject: (e: Error) => void;
}

/** A fixed set of hashing workers; `close` ends them. */
export class HashPool {
  private readonly workers: Worker[] = [];
  private readonly pending = new Map<number, Pending>();
  private nextId = 0;
  private turn = 0;
  private failure: Error | null = null;

  constructor(size: number) {
    const xxhash = createRequire(import.meta.url).resolve('xxhash-addon');
    for (let i = 0; i < size; i++) {
      const w = new Worker(WORKER_SOURCE, { eval: true, workerData: { xxhash } });
      w.on('message', ({ id, digest, subs }: { id: number; digest: Uint8Array; subs: Uint8Array | null }) => {
        const p = this.pending.get(id);
        this.pending.delete(id);
        if (this.pending.size === 0) this.setRef(false);
        p?.resolve({ digest: Buffer.from(digest.buffer, digest.byteOffset, digest.byteLength), subs: subs ? Buffer.from(subs.buffer, subs.byteOffset, subs.byteLength) : null });
      });
      w.on('error', (err) => this.fail(err));
      // Idle workers must not keep the process alive; busy ones must (see setRef).
      w.unref();
      this.workers.push(w);
    }
  }

  /** Allocates a buffer the workers can read without a copy (shared, page aligned). */
  static alloc(size: number): Buffer {
    return allocShared(size);
  }

  /** Copies `data` into `shared` (for drivers that returned their own buffer instead of filling the one given). */
  static copyIn(data: Buffer, shared: Buffer): Buffer {
    data.copy(shared);
    return shared.subarray(0, data.length);
  }

  /** Digest (and with `sub`, sub-digests) of `length` bytes at `offset` of `buf`, which must come from HashPool.alloc. */
  digest(algorithm: HashAlgorithm, buf: Buffer, offset: number, length: number, sub: { algorithm: SubAlgorithm; size: number } | null = null): Promise<PoolDigest> {
    if (this.failure) return Promise.reject(this.failure);
    const id = this.nextId++;
    const w = this.workers[this.turn++ % this.workers.length];
    return new Promise<PoolDigest>((resolve, reject) => {
      if (this.pending.size === 0) this.setRef(true);
      this.pending.set(id, { resolve, reject });
      w.postMessage({ id, memory: buf.buffer, offset: buf.byteOffset + offset, length, algorithm, sub });
    });
  }

  private fail(err: Error): void {
    this.failure = err;
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
    this.setRef(false);
  }

  /** Keeps the process alive exactly while digests are outstanding. */
  private setRef(busy: boolean): void {
    for (const w of this.workers) {
      if (busy) w.ref();
      else w.unref();
    }
  }

  /** Ends the workers (pending digests are rejected). */
  async close(): Promise<void> {
    this.fail(new Error('hash pool closed'));
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}
