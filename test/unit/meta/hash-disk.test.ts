import * as fs from 'node:fs';
import * as path from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { MemDisk } from '../sync/mem-disk.js';
import { localStore } from '../../../src/io/local.js';
import { openDisk } from '../../../src/formats/index.js';
import { hashDisk, type HashedBlock } from '../../../src/meta/hash-disk.js';
import { createMetafile } from '../../../src/meta/create.js';
import { readMetafile, metafileLocationFor } from '../../../src/meta/metafile.js';
import { compareMetafiles } from '../../../src/meta/compare.js';
import { zeroDigest } from '../../../src/meta/hashers.js';
import { ContentChangedError } from '../../../src/util/errors.js';
import { makeTempDir } from '../../helpers/tmp.js';
import { haveTool, requireTool, run } from '../../helpers/tools.js';

async function collect(it: AsyncIterable<HashedBlock>): Promise<HashedBlock[]> {
  const out: HashedBlock[] = [];
  for await (const b of it) out.push({ ...b, digest: Buffer.from(b.digest), data: undefined });
  return out;
}

/** A 12-block disk of 4 KiB blocks (last one 1 KiB) with data, written zeros, found zeros and holes. */
async function sampleDisk(): Promise<MemDisk> {
  const d = new MemDisk(11 * 4096 + 1024);
  await d.write(0, randomBytes(4096)); // block 0: data
  await d.write(4096 + 512, randomBytes(512)); // block 1: partly data, rest unallocated
  await d.writeZeroes(2 * 4096, 4096); // block 2: zero by status
  await d.write(3 * 4096, Buffer.alloc(4096)); // block 3: data that reads as zeros
  await d.writeZeroes(4 * 4096, 2048); // block 4: half zero, half unallocated -> zero
  await d.write(9 * 4096, randomBytes(8192)); // blocks 9, 10: data
  await d.write(11 * 4096, randomBytes(1024)); // block 11: short last block
  return d;
}

describe('hashDisk', () => {
  it('gives each block the state and digest an independent computation expects, never reading unallocated or zero ranges', async () => {
    const d = await sampleDisk();
    const content = await d.content();
    const reads: Array<[number, number]> = [];
    const realRead = d.read.bind(d);
    d.read = async (offset, length, into) => {
      reads.push([offset, offset + length]);
      return realRead(offset, length, into);
    };
    const blocks = await collect(hashDisk(d, { algorithm: 'sha256', blockSize: 4096 }));
    expect(blocks.map((b) => b.state)).toEqual(['data', 'data', 'zero', 'zero', 'zero', 'unallocated', 'unallocated', 'unallocated', 'unallocated', 'data', 'data', 'data']);
    blocks.forEach((b, i) => {
      expect(b.index).toBe(i);
      expect(b.length).toBe(i === 11 ? 1024 : 4096);
      const expected = createHash('sha256').update(content.subarray(i * 4096, i * 4096 + b.length)).digest();
      expect(b.digest.equals(expected)).toBe(true);
    });
    // Blocks 2 and 4..8 are known zero or unallocated from status: no read may touch them.
    for (const [a, z] of reads) for (const blk of [2, 4, 5, 6, 7, 8]) expect(z <= blk * 4096 || a >= (blk + 1) * 4096).toBe(true);
    expect(blocks.filter((b) => b.read).map((b) => b.index)).toEqual([0, 1, 3, 9, 10, 11]);
  });

  it('is independent of chunk size and read-ahead (property)', async () => {
    const d = await sampleDisk();
    const reference = (await collect(hashDisk(d, { algorithm: 'xxh128', blockSize: 4096 }))).map((b) => [b.state, b.digest.toString('hex')]);
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1, max: 64 * 1024 }), fc.integer({ min: 1, max: 5 }), async (chunkSize, readAhead) => {
        const got = await collect(hashDisk(d, { algorithm: 'xxh128', blockSize: 4096, chunkSize, readAhead }));
        expect(got.map((b) => [b.state, b.digest.toString('hex')])).toEqual(reference);
      }),
      { numRuns: 40 },
    );
  });

  it('hands out data blocks for a one-pass copy and stops cleanly when the consumer stops', async () => {
    const d = await sampleDisk();
    const content = await d.content();
    for await (const b of hashDisk(d, { algorithm: 'xxh128', blockSize: 4096, withData: true, readAhead: 4, chunkSize: 4096 })) {
      if (b.state === 'data') expect(b.data!.equals(content.subarray(b.offset, b.offset + b.length))).toBe(true);
      else expect(b.data).toBeUndefined();
      if (b.index === 9) break;
    }
  });

  it('computes the same states and digests on worker threads, for every algorithm', async () => {
    const d = await sampleDisk();
    for (const algorithm of ['xxh128', 'sha256', 'sha1-16'] as const) {
      const main = (await collect(hashDisk(d, { algorithm, blockSize: 4096 }))).map((b) => [b.state, b.digest.toString('hex')]);
      const workers = (await collect(hashDisk(d, { algorithm, blockSize: 4096, workers: 2, chunkSize: 8192 }))).map((b) => [b.state, b.digest.toString('hex')]);
      expect(workers).toEqual(main);
    }
    // A driver that ignores the buffer it is given: blocks are copied into shared memory first.
    const realRead = d.read.bind(d);
    d.read = (offset, length) => realRead(offset, length);
    const copied = (await collect(hashDisk(d, { algorithm: 'sha256', blockSize: 4096, workers: 1 }))).map((b) => b.digest.toString('hex'));
    expect(copied).toEqual((await collect(hashDisk(d, { algorithm: 'sha256', blockSize: 4096 }))).map((b) => b.digest.toString('hex')));
  });

  it('passes read errors to the consumer', async () => {
    const d = await sampleDisk();
    d.read = async () => {
      throw new Error('disk on fire');
    };
    await expect(collect(hashDisk(d, { algorithm: 'xxh128', blockSize: 4096 }))).rejects.toThrow('disk on fire');
  });

  it('records the digest of zeros for zero and unallocated blocks, including a short last block', async () => {
    const d = new MemDisk(4096 * 2 + 512);
    const blocks = await collect(hashDisk(d, { algorithm: 'sha256', blockSize: 4096 }));
    expect(blocks.map((b) => b.state)).toEqual(['unallocated', 'unallocated', 'unallocated']);
    expect(blocks[2].digest.equals(createHash('sha256').update(Buffer.alloc(512)).digest())).toBe(true);
    expect(zeroDigest('sha256', 5 << 20).equals(createHash('sha256').update(Buffer.alloc(5 << 20)).digest())).toBe(true);
  });
});

describe('XXH128 digests match xxhsum -H2 (the reference implementation)', () => {
  let tmp: ReturnType<typeof makeTempDir>;
  beforeAll(() => (tmp = makeTempDir()));
  afterAll(() => tmp.cleanup());

  const have = requireTool(haveTool('xxhsum'), 'xxhsum');
  (have ? it : it.skip)('for every block of a raw image', async () => {
    const img = path.join(tmp.dir, 'x.raw');
    const data = randomBytes(5 * 65536 + 4096);
    fs.writeFileSync(img, data);
    const disk = await openDisk(img);
    const blocks = await collect(hashDisk(disk, { algorithm: 'xxh128', blockSize: 65536, direct: false }));
    // The direct path (reading the local file itself) must agree with it.
    expect(await collect(hashDisk(disk, { algorithm: 'xxh128', blockSize: 65536, direct: true }))).toEqual(blocks);
    await disk.close();
    const files = blocks.map((b, i) => {
      const f = path.join(tmp.dir, `b${i}`);
      fs.writeFileSync(f, data.subarray(b.offset, b.offset + b.length));
      return f;
    });
    const lines = run('xxhsum', ['-H2', ...files]).toString().trim().split('\n');
    expect(lines.map((l) => l.split(/\s+/)[0])).toEqual(blocks.map((b) => b.digest.toString('hex')));
  });
});

describe('the direct path for local raw images', () => {
  let tmp: ReturnType<typeof makeTempDir>;
  beforeAll(() => (tmp = makeTempDir()));
  afterAll(() => tmp.cleanup());

  it('gives the same states and digests as the generic pipeline: data, zero and sparse blocks, short last block', async () => {
    const img = path.join(tmp.dir, 'd.raw');
    const MiB = 1 << 20;
    fs.writeFileSync(img, Buffer.alloc(0));
    fs.truncateSync(img, 9 * MiB + 3 * 512);
    const fd = fs.openSync(img, 'r+');
    fs.writeSync(fd, randomBytes(MiB), 0, MiB, 0); // block 0 (2 MiB) half data
    fs.writeSync(fd, Buffer.alloc(MiB), 0, MiB, 2 * MiB); // block 1: written zeros
    fs.writeSync(fd, randomBytes(100), 0, 100, 5 * MiB + 7); // block 2: data in its second 1 MiB piece
    fs.writeSync(fd, randomBytes(512), 0, 512, 9 * MiB + 1024); // short last block
    fs.closeSync(fd);
    const disk = await openDisk(img);
    for (const algorithm of ['xxh128', 'sha256', 'sha1-16'] as const) {
      for (const blockSize of [4096, 2 * MiB, 4 * MiB]) {
        const generic = await collect(hashDisk(disk, { algorithm, blockSize, direct: false }));
        const direct = await collect(hashDisk(disk, { algorithm, blockSize, direct: true }));
        expect(direct.map((b) => [b.index, b.state, b.length, b.digest.toString('hex')])).toEqual(generic.map((b) => [b.index, b.state, b.length, b.digest.toString('hex')]));
      }
    }
    const states = (await collect(hashDisk(disk, { algorithm: 'xxh128', blockSize: 2 * MiB }))).map((b) => b.state);
    expect(states).toEqual(['data', 'zero', 'data', 'zero', 'data']);
    await disk.close();
  });
});

describe('compareMetafiles finds exactly the changed blocks (property)', () => {
  let tmp: ReturnType<typeof makeTempDir>;
  beforeAll(() => (tmp = makeTempDir()));
  afterAll(() => tmp.cleanup());

  it('changing N random blocks with random data gives N changed blocks at those indices', async () => {
    let run = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 24 }),
        fc.integer({ min: 0, max: 7 }),
        fc.constantFrom<'xxh128' | 'sha256'>('xxh128', 'sha256'),
        fc.integer({ min: 0, max: 2 ** 31 }),
        async (fullBlocks, tailSectors, algorithm, seed) => {
          const blockSize = 4096;
          const size = fullBlocks * blockSize + tailSectors * 512;
          const count = Math.ceil(size / blockSize);
          const rnd = mulberry(seed);
          const a = new MemDisk(size);
          for (let blk = 0; blk < count; blk++) {
            const len = Math.min(blockSize, size - blk * blockSize);
            const kind = rnd() % 3;
            if (kind === 1) await a.write(blk * blockSize, randomBytes(len));
            if (kind === 2) await a.writeZeroes(blk * blockSize, len);
          }
          const b = new MemDisk(size);
          await b.write(0, await a.content());
          const changed = new Set<number>();
          const n = rnd() % (count + 1);
          while (changed.size < n) changed.add(rnd() % count);
          for (const blk of changed) {
            const len = Math.min(blockSize, size - blk * blockSize);
            const buf = await b.read(blk * blockSize, len);
            const fresh = randomBytes(len);
            // Random data, with one byte guaranteed to differ so the block really changes.
            const at = rnd() % len;
            fresh[at] = buf[at] ^ (1 + (rnd() % 255));
            await b.write(blk * blockSize, fresh);
          }
          run++;
          const ta = { store: localStore, path: path.join(tmp.dir, `a${run}.bin`) };
          const tb = { store: localStore, path: path.join(tmp.dir, `b${run}.bin`) };
          await createMetafile(a, { algorithm, blockSize, target: ta, workers: 0 });
          await createMetafile(b, { algorithm, blockSize, target: tb, workers: 0 });
          const [ma, mb] = [await readMetafile(ta), await readMetafile(tb)];
          const c = await compareMetafiles(ma, mb);
          await ma.close();
          await mb.close();
          expect(c.changedBlocks).toBe(n);
          const indices = c.changed.flatMap((r) => Array.from({ length: r.count }, (_, i) => r.first + i));
          expect(indices).toEqual([...changed].sort((x, y) => x - y));
          const bytes = [...changed].reduce((s, blk) => s + Math.min(blockSize, size - blk * blockSize), 0);
          expect(c.changedBytes).toBe(bytes);
        },
      ),
      { numRuns: 40 },
    );
  });
});

describe('createMetafile', () => {
  let tmp: ReturnType<typeof makeTempDir>;
  beforeAll(() => (tmp = makeTempDir()));
  afterAll(() => tmp.cleanup());

  it('publishes nothing when the image changes while it is hashed', async () => {
    const img = path.join(tmp.dir, 'moving.raw');
    fs.writeFileSync(img, randomBytes(64 * 4096));
    const disk = await openDisk(img);
    let touched = false;
    const err = await createMetafile(disk, {
      blockSize: 4096,
      onBlock: (b) => {
        if (b.index === 10 && !touched) {
          touched = true;
          fs.appendFileSync(img, 'x');
        }
      },
    }).catch((e) => e);
    await disk.close();
    expect(err).toBeInstanceOf(ContentChangedError);
    expect(err.message).toMatch(/changed while it was being hashed/);
    expect(fs.readdirSync(tmp.dir)).toEqual(['moving.raw']);
    expect(fs.existsSync(metafileLocationFor({ store: localStore, path: img }).path)).toBe(false);
  });
});

/** A small deterministic PRNG so a failing fast-check seed reproduces the same image. */
function mulberry(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}
