/**
 * Property tests: random sparse disks (and random deltas over a base) encoded as raw, VHD and chunked streams;
 * every stream's announced length equals the bytes it emits, and decoding it gives the disk back exactly.
 */
import fc from 'fast-check';
import { diskContent } from '../../../src/stream/content.js';
import { deltaContent } from '../../../src/stream/delta.js';
import { encode } from '../../../src/stream/encode.js';
import { applyChunked, writeContentOnto } from '../../../src/stream/apply.js';
import { applyVhdStream, vhdStreamContent } from '../../../src/stream/vhd-stream-source.js';
import { readVhdStreamHead } from '../../../src/stream/vhd-stream.js';
import { MemDisk } from '../sync/mem-disk.js';
import { applyOps, collect, copyOf, diskOps, MIB, readerOf, SECTOR } from './helpers.js';

const MAX_SECTORS = (5 * MIB) / SECTOR + 3;
const size = fc.integer({ min: 1, max: MAX_SECTORS }).map((s) => s * SECTOR);

async function randomDisk(bytes: number, ops: Parameters<typeof applyOps>[1]): Promise<MemDisk> {
  const d = new MemDisk(bytes);
  await applyOps(d, ops);
  return d;
}

const diskArb = size.chain((bytes) => diskOps(bytes / SECTOR).map((ops) => ({ bytes, ops })));

describe('full streams', () => {
  it('raw, VHD and chunked: length as announced, decoded content equal to the source', async () => {
    await fc.assert(
      fc.asyncProperty(diskArb, fc.boolean(), async ({ bytes, ops }, scan) => {
        const disk = await randomDisk(bytes, ops);
        const want = await disk.content();
        for (const format of ['raw', 'vhd', 'chunked'] as const) {
          const granule = format === 'vhd' ? 2 * MIB : 64 << 10;
          const source = await diskContent(disk, scan ? { zeroScan: { granule, scanDepths: () => true } } : {});
          const stream = await encode(format, source);
          const out = await collect(stream);
          expect(out.length).toBe(stream.length);
          const back = new MemDisk(bytes);
          if (format === 'raw') expect(out.equals(want)).toBe(true);
          else if (format === 'vhd') await writeContentOnto(await vhdStreamContent(readerOf(out)), back, { fresh: true });
          else await applyChunked(readerOf(out), back, { fresh: true });
          if (format !== 'raw') expect((await back.content()).equals(want)).toBe(true);
          if (format === 'vhd' && scan) {
            // All-zero blocks are left out: every included block holds a non-zero byte.
            const head = await readVhdStreamHead(readerOf(out));
            for (const b of head.blocks) expect(want.subarray(b.index * 2 * MIB, (b.index + 1) * 2 * MIB).some((x) => x !== 0)).toBe(true);
          }
        }
      }),
      { numRuns: 15 },
    );
  });

  it('a VHD stream re-encoded from a pipe in one pass is the same disk', async () => {
    await fc.assert(
      fc.asyncProperty(diskArb, fc.constantFrom('raw', 'vhd', 'chunked'), async ({ bytes, ops }, format) => {
        const disk = await randomDisk(bytes, ops);
        const first = await collect(await encode('vhd', await diskContent(disk)));
        const stream = await encode(format, await vhdStreamContent(readerOf(first, { length: first.length })));
        const out = await collect(stream);
        expect(out.length).toBe(stream.length);
        const back = new MemDisk(bytes);
        if (format === 'raw') await back.write(0, out);
        else if (format === 'vhd') await writeContentOnto(await vhdStreamContent(readerOf(out)), back, { fresh: true });
        else await applyChunked(readerOf(out), back, { fresh: true });
        expect((await back.content()).equals(await disk.content())).toBe(true);
      }),
      { numRuns: 10 },
    );
  });
});

describe('deltas', () => {
  const deltaArb = size.chain((bytes) => fc.record({ bytes: fc.constant(bytes), baseOps: diskOps(bytes / SECTOR), childOps: diskOps(bytes / SECTOR) }));

  it('applied to the base, a VHD or chunked delta gives the source, zeros included (allocation and content methods)', async () => {
    await fc.assert(
      fc.asyncProperty(deltaArb, fc.boolean(), async ({ bytes, baseOps, childOps }, viaChain) => {
        const base = await randomDisk(bytes, baseOps);
        const child = new MemDisk(bytes, { parent: base });
        await applyOps(child, childOps);
        // Not in the chain: an unrelated image with the same content as the child's parent.
        const src = viaChain ? child : await copyOf(child);
        const want = await src.content();
        const { source, method } = await deltaContent(src, base);
        expect(method).toBe(viaChain ? 'allocation' : 'content');
        for (const format of ['vhd', 'chunked'] as const) {
          const stream = await encode(format, source);
          const out = await collect(stream);
          expect(out.length).toBe(stream.length);
          const target = await copyOf(base);
          if (format === 'vhd') {
            const head = await applyVhdStream(readerOf(out), target);
            expect(head.footer.diskType).toBe('differencing');
          } else {
            await applyChunked(readerOf(out), target);
          }
          expect((await target.content()).equals(want)).toBe(true);
        }
      }),
      { numRuns: 15 },
    );
  });

  it('a raw stream refuses a delta', async () => {
    const base = new MemDisk(MIB);
    const { source } = await deltaContent(new MemDisk(MIB, { parent: base }), base);
    await expect(encode('raw', source)).rejects.toThrow(/raw stream cannot hold a delta/);
  });
});
