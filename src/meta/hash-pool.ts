/**
 * Digests computed on worker threads, so hashing runs beside the reads instead of between them. Blocks are
 * handed over without copying: read buffers are shared (SharedArrayBuffer-backed) memory.
 */
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import { allocShared } from '../util/aligned.js';
import type { HashAlgorithm } from './hashers.js';

// The workers hash with the same modules as the main thread (hashers.ts); they are plain CommonJS so the worker
// needs no build step or loader, and get xxhash-addon's resolved path because an eval'd worker has no module base.
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const { createHash } = require('node:crypto');
const { XXHash128 } = require(workerData.xxhash);
parentPort.on('message', ({ id, memory, offset, length, algorithm }) => {
  const data = Buffer.from(memory, offset, length);
  let digest;
  if (algorithm === 'xxh128') digest = XXHash128.hash(data);
  else if (algorithm === 'sha256') digest = createHash('sha256').update(data).digest();
  else digest = createHash('sha1').update(data).digest().subarray(0, 16);
  parentPort.postMessage({ id, digest });
});
`;

interface Pending {
  resolve: (d: Buffer) => void;
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
      w.on('message', ({ id, digest }: { id: number; digest: Uint8Array }) => {
        const p = this.pending.get(id);
        this.pending.delete(id);
        if (this.pending.size === 0) this.setRef(false);
        p?.resolve(Buffer.from(digest.buffer, digest.byteOffset, digest.byteLength));
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

  /** Digest of `length` bytes at `offset` of `buf`, which must come from HashPool.alloc. */
  digest(algorithm: HashAlgorithm, buf: Buffer, offset: number, length: number): Promise<Buffer> {
    if (this.failure) return Promise.reject(this.failure);
    const id = this.nextId++;
    const w = this.workers[this.turn++ % this.workers.length];
    return new Promise<Buffer>((resolve, reject) => {
      if (this.pending.size === 0) this.setRef(true);
      this.pending.set(id, { resolve, reject });
      w.postMessage({ id, memory: buf.buffer, offset: buf.byteOffset + offset, length, algorithm });
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
