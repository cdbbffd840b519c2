/**
 * The native block hasher (native/xxh3blocks.c, decision 0027): blocks given as file ranges get the same XXH128 and
 * XXH3-64 sub-digests whether the files are mapped, read with pread, or read and hashed in JavaScript, over random
 * sparse files of any size (ranges past the end read as zeros) and zero runs. A file that shrinks while it is mapped
 * gives one typed error on this thread and on a worker, not a crash; a SIGBUS that is not ours still kills.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import fc from 'fast-check';
import { DirectPool, hashBlocksSync, hashGroupSync, localHasher, nativeHashing, type SyncHasher } from '../../../src/meta/hash-sync.js';
import { ContentChangedError, fromSystemError } from '../../../src/util/errors.js';
import { makeTempDir } from '../../helpers/tmp.js';
import { requireTool } from '../../helpers/tools.js';

const have = () => requireTool(nativeHashing() !== null, 'the block hasher (scripts/build-native.js: cc and Node headers)');
const KiB = 1024;
const MiB = 1 << 20;

/** A sparse file of `size` bytes: holes, random extents and written zeros; returns its path. */
function sparseFile(file: string, size: number, extents: Array<{ at: number; length: number; zero: boolean }>): string {
  const fd = fs.openSync(file, 'w');
  try {
    fs.ftruncateSync(fd, size);
    for (const e of extents) {
      const at = Math.min(e.at, size);
      const length = Math.min(e.length, size - at);
      if (length > 0) fs.writeSync(fd, e.zero ? Buffer.alloc(length) : randomBytes(length), 0, length, at);
    }
  } finally {
    fs.closeSync(fd);
  }
  return file;
}

/** Starts a thread that truncates `file` to 0 bytes after about `ms` milliseconds (this thread may be busy hashing). */
function truncateSoon(file: string, ms: number): Promise<void> {
  const w = new Worker(
    `const { workerData } = require('node:worker_threads');
     Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, workerData.ms);
     require('node:fs').truncateSync(workerData.file, 0);`,
    { eval: true, workerData: { file, ms } },
  );
  return new Promise((resolve, reject) => {
    w.once('exit', () => resolve());
    w.once('error', reject);
  });
}

describe('native block hasher', () => {
  let tmp: ReturnType<typeof makeTempDir>;
  beforeAll(() => (tmp = makeTempDir()));
  afterAll(() => tmp.cleanup());

  it('gives the same digests mapped, read and in JavaScript, for random sparse files and ranges', () => {
    if (!have()) return;
    let n = 0;
    const extent = fc.record({ at: fc.integer({ min: 0, max: 3 * MiB }), length: fc.integer({ min: 1, max: 700 * KiB }), zero: fc.boolean() });
    const triple = fc.record({ file: fc.constantFrom(-1, 0, 0, 0, 1), at: fc.integer({ min: 0, max: 3 * MiB + 100 * KiB }), length: fc.integer({ min: 1, max: 900 * KiB }) });
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.integer({ min: 0, max: 3 * MiB }), fc.array(extent, { maxLength: 5 })), { minLength: 2, maxLength: 2 }),
        fc.array(fc.array(triple, { minLength: 1, maxLength: 5 }), { minLength: 1, maxLength: 4 }),
        fc.constantFrom(null, 4 * KiB, 32 * KiB, 100_000, 512 * KiB),
        (files, blocks, subSize) => {
          const paths = files.map(([size, extents]) => sparseFile(path.join(tmp.dir, `f${n++}`), size, extents));
          const triples = blocks.map((b) => b.flatMap((t) => [t.file, t.file < 0 ? 0 : t.at, t.length]));
          const sub = subSize ? { algorithm: 'xxh3-64' as const, size: subSize } : null;
          const hashers = (['map', 'read', null] as const).map((mode) => localHasher('xxh128', 256 * KiB, sub, mode));
          try {
            expect(hashers[0].native).not.toBeNull();
            expect(hashers[2].native).toBeNull();
            const [mapped, read, js] = hashers.map((hx) => hashBlocksSync(triples, paths, hx));
            expect(mapped).toEqual(js);
            expect(read).toEqual(js);
            // The same results in a group's three buffers (hashGroupSync: the helper writes them in place, JavaScript
            // packs its pairs), with a slot wider than any block needs: its rest must be zero.
            const longest = Math.max(...triples.map((t) => t.reduce((sum, x, i) => (i % 3 === 2 ? sum + x : sum), 0)));
            const slot = subSize ? (Math.ceil(longest / subSize) + 1) * 8 : 0;
            const expected = { states: new Uint8Array(js.length), digests: new Uint8Array(js.length * 16), subs: subSize ? new Uint8Array(js.length * slot) : null };
            js.forEach((d, k) => {
              expected.states[k] = d ? 2 : 1;
              if (d) expected.digests.set(d[0], k * 16);
              if (d?.[1]) expected.subs!.set(d[1], k * slot);
            });
            for (const hx of hashers) expect(hashGroupSync(triples, paths, hx, slot)).toEqual(expected);
          } finally {
            for (const hx of hashers) hx.closeAll();
            for (const p of paths) fs.rmSync(p);
          }
        },
      ),
      { numRuns: 60 },
    );
  });

  it('hashes blocks of whole KiB in one pass (xxh3dual.c) to the digests xxHash gives block and sub-blocks apart', () => {
    if (!have()) return;
    const helper = createRequire(import.meta.url)(path.resolve('build/native/xxh3blocks.node')) as { onePass: string };
    // The widest stripe functions this CPU has; the other paths are the same code (a macro) with other functions.
    expect(['avx512', 'avx2', 'default']).toContain(helper.onePass);
    let n = 0;
    const triple = fc.record({ file: fc.constantFrom(-1, 0, 0, 1), at: fc.integer({ min: 0, max: 3 * MiB }), length: fc.integer({ min: 1, max: 700 * KiB }) });
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.integer({ min: 64 * KiB, max: 3 * MiB }), fc.array(fc.record({ at: fc.integer({ min: 0, max: 3 * MiB }), length: fc.integer({ min: 1, max: 900 * KiB }), zero: fc.boolean() }), { maxLength: 4 })), { minLength: 2, maxLength: 2 }),
        fc.array(fc.record({ zeros: fc.nat({ max: 200 * KiB }), ranges: fc.array(triple, { minLength: 1, maxLength: 4 }) }), { minLength: 1, maxLength: 3 }),
        fc.constantFrom(1 * KiB, 4 * KiB, 32 * KiB, 64 * KiB, 1 * MiB),
        (files, blocks, subSize) => {
          const paths = files.map(([size, extents]) => sparseFile(path.join(tmp.dir, `k${n++}`), size, extents));
          // Leading zeros (the hasher counts them before the first data), ranges of any length, and zeros to the next KiB.
          const triples = blocks.map((b) => {
            const t = [-1, 0, b.zeros, ...b.ranges.flatMap((r) => [r.file, r.file < 0 ? 0 : r.at, r.length])];
            const total = t.reduce((sum, x, i) => (i % 3 === 2 ? sum + x : sum), 0);
            return [...t, -1, 0, (KiB - (total % KiB)) % KiB];
          });
          const sub = { algorithm: 'xxh3-64' as const, size: subSize };
          const [native, js] = (['read', null] as const).map((mode) => {
            const hx = localHasher('xxh128', 256 * KiB, sub, mode);
            try {
              return hashBlocksSync(triples, paths, hx);
            } finally {
              hx.closeAll();
            }
          });
          for (const p of paths) fs.rmSync(p);
          expect(native).toEqual(js);
        },
      ),
      { numRuns: 80 },
    );
  });

  it('gives the same one-pass digests with each set of stripe functions (AVX-512, AVX2, SSE2) as with two passes', () => {
    if (!have()) return;
    const file = path.join(tmp.dir, 'isa');
    sparseFile(file, 5 * MiB, [
      { at: 0, length: 3 * MiB, zero: false },
      { at: 3 * MiB + 300 * KiB, length: 10, zero: false },
      { at: 4 * MiB, length: MiB, zero: false },
    ]);
    // Blocks of 2 MiB and 3 MiB from odd offsets, one starting with 1.3 MiB of zeros, with sub-blocks of 4 KiB to 1 MiB.
    const blocks = [[0, 0, 2 * MiB], [0, 7, 3 * MiB], [-1, 0, 1300 * KiB, 0, 3 * MiB, 748 * KiB], [0, 4 * MiB - 512, 512, 0, 4 * MiB, MiB - 512]];
    const script = `const fs = require('node:fs'); const m = require(${JSON.stringify(path.resolve('build/native/xxh3blocks.node'))});
      const fd = fs.openSync(${JSON.stringify(file)}, 'r'); const out = { isa: m.onePass, runs: [] };
      for (const sub of [4096, 32768, 65536, 1048576]) out.runs.push(m.hashBlocks([fd], ${JSON.stringify(blocks)}, sub, false).map((b) => b && [b[0].toString('hex'), b[1].toString('hex')]));
      console.log(JSON.stringify(out));`;
    const results = ['0', 'default', 'avx2', '1'].map((v) => {
      const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', env: { ...process.env, VHDSYNC_HASH_ONE_PASS: v } });
      expect(r.stderr).toBe('');
      return JSON.parse(r.stdout) as { isa: string; runs: unknown };
    });
    expect(results[0].isa).toBe('off');
    expect(results[1].isa).toBe('default');
    for (const r of results.slice(1)) expect(r.runs).toEqual(results[0].runs);
  });

  it('refuses a packed call whose buffers or slot are too small for the group, before reading', () => {
    if (!have()) return;
    const file = path.join(tmp.dir, 'packed');
    fs.writeFileSync(file, randomBytes(128 * KiB));
    const fd = fs.openSync(file, 'r');
    const { hashBlocks } = createRequire(import.meta.url)('../../../build/native/xxh3blocks.node') as { hashBlocks: (...args: unknown[]) => unknown };
    const blocks = [[0, 0, 64 * KiB], [0, 64 * KiB, 64 * KiB]];
    try {
      const call = (states: number, digests: number, subs: number | null, slot: number) =>
        hashBlocks([fd], blocks, 32 * KiB, false, new Uint8Array(states), new Uint8Array(digests), subs === null ? null : new Uint8Array(subs), slot);
      expect(call(2, 32, 32, 16)).toBeUndefined();
      expect(() => call(1, 32, 32, 16)).toThrow(/Uint8Arrays of n, 16n and slot\*n bytes/);
      expect(() => call(2, 31, 32, 16)).toThrow(/Uint8Arrays/);
      expect(() => call(2, 32, 31, 16)).toThrow(/Uint8Arrays/);
      expect(() => call(2, 32, null, 16)).toThrow(/Uint8Arrays/);
      expect(() => call(2, 32, 16, 8)).toThrow(/sub-digests fitting its slot/);
      expect(() => hashBlocks([fd], blocks, 32 * KiB, false, new Uint8Array(2))).toThrow(/packed form takes/);
    } finally {
      fs.closeSync(fd);
    }
  });

  it('reads each range once, before any output buffer: element getters that change ranges or detach a buffer get a refusal, not a wild read or write', () => {
    if (!have()) return;
    const file = path.join(tmp.dir, 'hostile');
    fs.writeFileSync(file, randomBytes(128 * KiB));
    const fd = fs.openSync(file, 'r');
    const { hashBlocks } = createRequire(import.meta.url)('../../../build/native/xxh3blocks.node') as { hashBlocks: (...args: unknown[]) => unknown };
    try {
      // A file index that is valid when checked and far out of range on a second look.
      let reads = 0;
      const shifty: number[] = [0, 0, 64 * KiB];
      Object.defineProperty(shifty, 0, { get: () => (reads++ === 0 ? 0 : 1e6), enumerable: true });
      const states = new Uint8Array(1);
      const digests = new Uint8Array(16);
      hashBlocks([fd], [shifty], 0, false, states, digests, null, 0);
      expect(reads).toBe(1);
      expect(states[0]).toBe(2);
      const plain = new Uint8Array(16);
      hashBlocks([fd], [[0, 0, 64 * KiB]], 0, false, new Uint8Array(1), plain, null, 0);
      expect(Buffer.from(digests).equals(Buffer.from(plain))).toBe(true);
      // A getter that detaches the digests' memory while the ranges are read: the buffer is then refused as too small.
      const out = new Uint8Array(16);
      const detaching: number[] = [0, 0, 64 * KiB];
      Object.defineProperty(detaching, 2, { get: () => (structuredClone(out.buffer, { transfer: [out.buffer] }), 64 * KiB), enumerable: true });
      expect(() => hashBlocks([fd], [detaching], 0, false, new Uint8Array(1), out, null, 0)).toThrow(/Uint8Arrays/);
      expect(out.byteLength).toBe(0);
    } finally {
      fs.closeSync(fd);
    }
  });

  it('takes groups up to the file limit the helper exports; a group naming more files is hashed in JavaScript, alike', () => {
    if (!have()) return;
    const read = localHasher('xxh128', 256 * KiB, { algorithm: 'xxh3-64', size: 32 * KiB }, 'read');
    const js = localHasher('xxh128', 256 * KiB, { algorithm: 'xxh3-64', size: 32 * KiB }, null);
    const max = read.nativeMaxFiles;
    expect(max).toBeGreaterThan(1);
    expect(js.nativeMaxFiles).toBe(0);
    const paths = Array.from({ length: max + 1 }, (_, i) => {
      const file = path.join(tmp.dir, `many${i}`);
      fs.writeFileSync(file, randomBytes(64 * KiB));
      return file;
    });
    let nativeCalls = 0;
    const counted: SyncHasher = { ...read, native: (blocks, files) => (nativeCalls++, read.native!(blocks, files)) };
    try {
      for (const files of [paths.slice(0, max), paths]) {
        // One block taking a piece of the last file and of the first.
        const blocks = [[files.length - 1, 0, 48 * KiB, 0, 16 * KiB, 16 * KiB]];
        const before = nativeCalls;
        expect(hashBlocksSync(blocks, files, counted)).toEqual(hashBlocksSync(blocks, files, js));
        expect(nativeCalls - before).toBe(files.length <= max ? 1 : 0);
      }
    } finally {
      read.closeAll();
      js.closeAll();
    }
  });

  /** Hashes `file` (128 MiB) whole, again and again, until it shrinks under the mapping: the error hashing gave. */
  async function shrinkWhileHashing(hash: (blocks: number[][], files: string[]) => Promise<unknown>): Promise<Error> {
    const file = path.join(tmp.dir, 'shrinks');
    // Each try truncates the file at some moment of a loop of whole hashes; it falls between two of them only rarely.
    for (let attempt = 0; attempt < 10; attempt++) {
      fs.writeFileSync(file, Buffer.alloc(128 * MiB, attempt + 1));
      const blocks = Array.from({ length: 64 }, (_, k) => [0, k * 2 * MiB, 2 * MiB]);
      const truncated = truncateSoon(file, 5 + attempt * 3);
      let error: Error | null = null;
      try {
        while (fs.statSync(file).size > 0) await hash(blocks, [file]);
      } catch (err) {
        error = err as Error;
      }
      await truncated;
      if (error) return error;
    }
    throw new Error('the file never shrank while it was being hashed');
  }

  it('turns a file that shrinks under the mapping into one typed error on this thread', async () => {
    if (!have()) return;
    let hx: SyncHasher | null = null;
    const err = await shrinkWhileHashing(async (blocks, files) => {
      hx ??= localHasher('xxh128', MiB, { algorithm: 'xxh3-64', size: 32 * KiB }, 'map');
      return hashBlocksSync(blocks, files, hx);
    });
    (hx as SyncHasher | null)?.closeAll();
    expect((err as NodeJS.ErrnoException).code).toBe('ERR_FILE_SHRANK');
    const typed = fromSystemError(err, (err as { path?: string }).path ?? '?');
    expect(typed).toBeInstanceOf(ContentChangedError);
    expect((typed as ContentChangedError).describe()).toBe(`${path.join(tmp.dir, 'shrinks')}: the file shrank while it was being hashed`);
  });

  it('turns a file that shrinks under the mapping into one typed error on a worker thread', async () => {
    if (!have()) return;
    const pool = new DirectPool(1, 'map').configure('xxh128', MiB, { algorithm: 'xxh3-64', size: 32 * KiB }, 'image');
    try {
      const err = await shrinkWhileHashing((blocks, files) => pool.hash(files, blocks, 512));
      expect(err.constructor.name).toBe('ContentChangedError');
      expect(err.message).toBe('the file shrank while it was being hashed');
      expect((err as { subject?: string }).subject).toBe(path.join(tmp.dir, 'shrinks'));
    } finally {
      await pool.close();
    }
  });

  it('leaves a SIGBUS that is not its own to the default action', () => {
    if (!have()) return;
    // The built helper is loaded directly (no TypeScript loader in a child): install its handler, then signal.
    const helper = path.resolve('build/native/xxh3blocks.node');
    const file = path.join(tmp.dir, 'bus');
    fs.writeFileSync(file, Buffer.alloc(8192, 1));
    const child = `
      const { hashBlocks } = require(${JSON.stringify(helper)});
      const fd = require('node:fs').openSync(${JSON.stringify(file)}, 'r');
      if (!hashBlocks([fd], [[0, 0, 8192]], 0, true)[0]) throw new Error('no digest');
      process.kill(process.pid, 'SIGBUS');
      setTimeout(() => console.log('survived'), 200);`;
    const r = spawnSync('sh', ['-c', 'ulimit -c 0; exec "$0" -e "$1"', process.execPath, child], { encoding: 'utf8' });
    expect(r.stdout).not.toContain('survived');
    expect(r.signal ?? `exit ${r.status}`).toMatch(/SIGBUS|exit 135/);
  });
});
