/**
 * The fast path for local raw images: the virtual content is the file itself, so worker threads can read it with
 * synchronous reads into small cache-resident buffers and hash each piece while it is still in the CPU's cache,
 * as xxhsum does, on every core. The async pipeline (hash-disk.ts) copies each 2 MiB chunk into memory on a
 * thread-pool thread and hashes it later on the main thread: on a 2-core machine about 1.3x xxhsum's time.
 */
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import type { Disk } from '../formats/disk.js';
import { RawDisk } from '../formats/raw/raw-disk.js';
import type { HashedBlock } from './hash-disk.js';
import { zeroDigest, type HashAlgorithm } from './hashers.js';

/** Bytes per synchronous read: small enough to stay in L2 until hashed. */
const PIECE = 1 << 20;
/** Blocks a worker takes at a time (workers interleave groups so reads stay mostly sequential). */
const GROUP_BYTES = 16 << 20;

const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const fs = require('node:fs');
const { createHash } = require('node:crypto');
const { XXHash128 } = require(workerData.xxhash);
const { path, first, step, group, blockSize, size, piece, algorithm } = workerData;
const blocks = Math.ceil(size / blockSize);
const fd = fs.openSync(path, 'r');
let buf;
try { buf = Buffer.from(new WebAssembly.Memory({ initial: Math.ceil(piece / 65536) }).buffer, 0, piece); } catch { buf = Buffer.allocUnsafe(piece); }
const zeros = Buffer.alloc(piece);
const xxh = new XXHash128(Buffer.alloc(8));
const newHash = () => (algorithm === 'xxh128' ? (xxh.reset(), xxh) : createHash(algorithm === 'sha256' ? 'sha256' : 'sha1'));
for (let g = first; g * group < blocks; g += step) {
  const digests = [];
  for (let i = g * group; i < Math.min((g + 1) * group, blocks); i++) {
    const start = i * blockSize;
    const end = Math.min(size, start + blockSize);
    let h = null;
    let zeroRun = 0;
    for (let p = start; p < end; ) {
      const n = Math.min(piece, end - p);
      let got = 0;
      while (got < n) {
        const r = fs.readSync(fd, buf, got, n - got, p + got);
        if (r === 0) break;
        got += r;
      }
      // A file cut short while open reads as zeros past its end, as RawDisk.read does.
      if (got < n) buf.fill(0, got, n);
      const chunk = buf.subarray(0, n);
      if (!h && zeros.compare(chunk, 0, n, 0, n) === 0) zeroRun += n;
      else {
        if (!h) {
          // Zero pieces are only hashed once the block turns out not to be all zero.
          h = newHash();
          for (let z = 0; z < zeroRun; z += piece) h.update(zeros.subarray(0, Math.min(piece, zeroRun - z)));
        }
        h.update(chunk);
      }
      p += n;
    }
    digests.push(h ? (algorithm === 'sha1-16' ? h.digest().subarray(0, 16) : h.digest()) : null);
  }
  parentPort.postMessage({ g, digests });
}
fs.closeSync(fd);
`;

/** True when `disk` is a raw image in a local file, which the fast path can read directly. */
export function canHashDirectly(disk: Disk): boolean {
  return disk instanceof RawDisk && disk.location.store.kind === 'local';
}

/** Yields every block of a local raw image in order, hashed by `workers` threads reading the file themselves. */
export async function* hashRawDirectly(disk: Disk, algorithm: HashAlgorithm, blockSize: number, workers: number): AsyncGenerator<HashedBlock> {
  const size = disk.virtualSize;
  const blocks = Math.ceil(size / blockSize);
  const group = Math.max(1, Math.floor(GROUP_BYTES / blockSize));
  const groups = Math.ceil(blocks / group);
  const arrived = new Map<number, Array<Uint8Array | null>>();
  let wake: (() => void) | null = null;
  let failure: Error | null = null;
  const xxhash = createRequire(import.meta.url).resolve('xxhash-addon');
  const pool: Worker[] = [];
  const notify = () => {
    const w = wake;
    wake = null;
    w?.();
  };
  for (let w = 0; w < Math.min(workers, groups); w++) {
    const worker = new Worker(WORKER_SOURCE, {
      eval: true,
      workerData: { xxhash, path: disk.location.path, first: w, step: Math.min(workers, groups), group, blockSize, size, piece: Math.min(PIECE, blockSize), algorithm },
    });
    worker.on('message', ({ g, digests }: { g: number; digests: Array<Uint8Array | null> }) => {
      arrived.set(g, digests);
      notify();
    });
    worker.on('error', (err) => {
      failure = err;
      notify();
    });
    pool.push(worker);
  }
  try {
    for (let g = 0; g < groups; g++) {
      while (!arrived.has(g)) {
        if (failure) throw failure;
        await new Promise<void>((resolve) => (wake = resolve));
      }
      const digests = arrived.get(g)!;
      arrived.delete(g);
      for (let k = 0; k < digests.length; k++) {
        const index = g * group + k;
        const offset = index * blockSize;
        const length = Math.min(blockSize, size - offset);
        const d = digests[k];
        yield d
          ? { index, offset, length, state: 'data', read: true, digest: Buffer.from(d.buffer, d.byteOffset, d.byteLength) }
          : { index, offset, length, state: 'zero', read: true, digest: zeroDigest(algorithm, length) };
      }
    }
  } finally {
    await Promise.all(pool.map((w) => w.terminate()));
  }
}
