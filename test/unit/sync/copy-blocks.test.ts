import fc from 'fast-check';
import { copyChangedBlocks, type ChangedBlock } from '../../../src/sync/copy-blocks.js';
import { digestBlock } from '../../../src/meta/hashers.js';
import { ContentChangedError } from '../../../src/util/errors.js';
import { MemDisk } from './mem-disk.js';

const BS = 4096;
const SIZE = 64 * BS + 1024; // a short last block

async function fill(d: MemDisk, writes: Array<{ sector: number; count: number; fill: number }>) {
  const sectors = SIZE / 512;
  for (const w of writes) {
    const count = Math.min(w.count, sectors - w.sector);
    if (w.fill === 0) await d.writeZeroes(w.sector * 512, count * 512);
    else await d.write(w.sector * 512, Buffer.alloc(count * 512, w.fill));
  }
}

function digests(content: Buffer): Buffer[] {
  const out: Buffer[] = [];
  for (let off = 0; off < content.length; off += BS) out.push(digestBlock('xxh128', content.subarray(off, Math.min(content.length, off + BS))));
  return out;
}

const writesArb = fc.array(fc.record({ sector: fc.integer({ min: 0, max: SIZE / 512 - 1 }), count: fc.integer({ min: 1, max: 20 }), fill: fc.integer({ min: 0, max: 3 }) }), { maxLength: 15 });

describe('copyChangedBlocks', () => {
  it('makes target+diff read as the source, holding only the changed blocks', async () => {
    await fc.assert(
      fc.asyncProperty(writesArb, writesArb, async (common, changes) => {
        const source = new MemDisk(SIZE);
        const target = new MemDisk(SIZE);
        await fill(source, common);
        await fill(target, common);
        await fill(source, changes);
        const s = digests(await source.content());
        const t = digests(await target.content());
        const changed: ChangedBlock[] = s.flatMap((d, index) => (d.equals(t[index]) ? [] : [{ index, expected: d }]));
        const diff = new MemDisk(SIZE, { parent: target });
        const stats = await copyChangedBlocks(source, diff, changed, { blockSize: BS, algorithm: 'xxh128' });
        expect(stats.blocks).toBe(changed.length);
        expect((await diff.content()).equals(await source.content())).toBe(true);
        const changedSet = new Set(changed.map((c) => c.index));
        for (let sec = 0; sec < SIZE / 512; sec++) {
          if (!changedSet.has(Math.floor((sec * 512) / BS))) expect(diff.state[sec]).toBe(0);
        }
      }),
      { numRuns: 80 },
    );
  });

  it('writes a block that became zeros over target data as zeros', async () => {
    const source = new MemDisk(SIZE);
    const target = new MemDisk(SIZE);
    await target.write(BS, Buffer.alloc(BS, 9));
    const diff = new MemDisk(SIZE, { parent: target });
    const stats = await copyChangedBlocks(source, diff, [{ index: 1, expected: digestBlock('xxh128', Buffer.alloc(BS)) }], { blockSize: BS, algorithm: 'xxh128' });
    expect(stats).toEqual({ blocks: 1, dataBytes: 0, zeroBytes: BS, readBytes: 0 });
    expect(isZero(await diff.read(BS, BS))).toBe(true);
  });

  it('stops with ContentChangedError when the source no longer matches its metafile', async () => {
    const source = new MemDisk(SIZE);
    await source.write(0, Buffer.alloc(BS, 1));
    const diff = new MemDisk(SIZE, { parent: new MemDisk(SIZE) });
    await expect(copyChangedBlocks(source, diff, [{ index: 0, expected: digestBlock('xxh128', Buffer.alloc(BS, 2)) }], { blockSize: BS, algorithm: 'xxh128' })).rejects.toBeInstanceOf(ContentChangedError);
  });

  it('reads a fragmented chain source in pieces that still give the whole run', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.record({ sector: fc.integer({ min: 0, max: SIZE / 512 - 1 }), fill: fc.integer({ min: 0, max: 3 }) }), { minLength: 20, maxLength: 120 }), fc.integer({ min: 1, max: 250 }), async (sectors, seed) => {
        const base = new MemDisk(SIZE);
        await base.write(0, Buffer.from(Array.from({ length: SIZE }, (_, i) => (i * seed) & 0xff)));
        const source = new MemDisk(SIZE, { parent: base });
        await fill(source, sectors.map(({ sector, fill }) => ({ sector, count: 1, fill })));
        const reads: number[] = [];
        const read = source.read.bind(source);
        source.read = (offset, length, into) => (reads.push(length), read(offset, length, into));
        const changed: ChangedBlock[] = digests(await source.content()).map((d, index) => ({ index, expected: d }));
        reads.length = 0;
        const diff = new MemDisk(SIZE, { parent: new MemDisk(SIZE) });
        await copyChangedBlocks(source, diff, changed, { blockSize: BS, algorithm: 'xxh128' });
        const copyReads = reads.splice(0);
        expect((await diff.content()).equals(await source.content())).toBe(true);
        // The disk is one run: many extents make several reads of it, together exactly the disk.
        expect(copyReads.reduce((a, b) => a + b, 0)).toBe(SIZE);
        const extents = (await source.status(0, SIZE)).length;
        expect(copyReads.length).toBe(extents > 16 ? Math.ceil(extents / 16) : 1);
      }),
      { numRuns: 40 },
    );
  });

  /** Blocks this thread for `ms`, as a slow synchronous read does. */
  const block = (ms: number) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);

  /** Copies `source` (one block, one run) and returns how long it took and the longest time no timer ran. */
  async function timerGaps(source: MemDisk): Promise<{ took: number; gap: number }> {
    const size = source.virtualSize;
    const changed = [{ index: 0, expected: digestBlock('xxh128', await source.content()) }];
    const fired: number[] = [];
    const started = performance.now();
    const timer = setInterval(() => fired.push(performance.now() - started), 1);
    try {
      await copyChangedBlocks(source, new MemDisk(size, { parent: new MemDisk(size) }), changed, { blockSize: size, algorithm: 'xxh128' });
    } finally {
      clearInterval(timer);
    }
    const took = performance.now() - started;
    const marks = [0, ...fired, took];
    return { took, gap: Math.max(...marks.slice(1).map((t, i) => t - marks[i])) };
  }

  // Turns are due 50 ms after the last; a piece of reads is 16-160 ms here. Without them no timer runs during the
  // whole run (its every read in one call): the gap is the copy's time, over a second.
  it('gives the event loop turns inside one run of many slow small reads (a fragmented chain on a slow disk)', async () => {
    // Every other sector of the source is its parent's, and each parent read blocks for 2 ms.
    const size = 512 * 1024;
    const base = new MemDisk(size);
    await base.write(0, Buffer.alloc(size, 7));
    const source = new MemDisk(size, { parent: base });
    for (let sec = 0; sec < size / 512; sec += 2) await source.write(sec * 512, Buffer.alloc(512, 1));
    const parentRead = base.read.bind(base);
    base.read = (offset, length, into) => (block(2), parentRead(offset, length, into));
    const { took, gap } = await timerGaps(source);
    expect(took).toBeGreaterThan(1000);
    expect(gap).toBeLessThan(450);
  });

  it('... and inside one slow extent of many reads (a QCOW2 whose clusters are scattered)', async () => {
    // One data extent of 4 MiB whose reads cost 10 ms per 64 KiB (cluster reads on a slow disk).
    const size = 4 << 20;
    const source = new MemDisk(size);
    await source.write(0, Buffer.alloc(size, 3));
    const read = source.read.bind(source);
    source.read = (offset, length, into) => (block(10 * Math.ceil(length / 65536)), read(offset, length, into));
    const { took, gap } = await timerGaps(source);
    expect(took).toBeGreaterThan(600);
    expect(gap).toBeLessThan(450);
  });
});

function isZero(b: Buffer) {
  return b.every((x) => x === 0);
}
