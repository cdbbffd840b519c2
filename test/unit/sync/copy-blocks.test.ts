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
});

function isZero(b: Buffer) {
  return b.every((x) => x === 0);
}
