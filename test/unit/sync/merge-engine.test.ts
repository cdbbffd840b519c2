import fc from 'fast-check';
import { blockCounter, mergeExtents, mergeFootprint } from '../../../src/sync/merge.js';
import { MemDisk } from './mem-disk.js';

const SIZE = 256 * 512;

type Op = { kind: 'write' | 'zero'; sector: number; count: number; fill: number };

const opArb = fc.record({
  kind: fc.constantFrom<'write' | 'zero'>('write', 'write', 'zero'),
  sector: fc.integer({ min: 0, max: 255 }),
  count: fc.integer({ min: 1, max: 40 }),
  fill: fc.integer({ min: 1, max: 255 }),
});

async function build(parentOps: Op[], diffOps: Op[]) {
  const parent = new MemDisk(SIZE);
  const diff = new MemDisk(SIZE, { parent });
  for (const op of parentOps) await apply(parent, op);
  parent.writes = 0;
  for (const op of diffOps) await apply(diff, op);
  return { parent, diff };
}

async function apply(d: MemDisk, op: Op) {
  const count = Math.min(op.count, 256 - op.sector);
  if (op.kind === 'zero') await d.writeZeroes(op.sector * 512, count * 512);
  else await d.write(op.sector * 512, Buffer.alloc(count * 512, op.fill));
}

describe('mergeExtents against an in-memory model', () => {
  it('makes the parent read exactly what the diff read (sector-granular presence, zero ranges)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { maxLength: 12 }), fc.array(opArb, { maxLength: 12 }), async (pOps, dOps) => {
        const { parent, diff } = await build(pOps, dOps);
        const expected = await diff.content();
        const before = Buffer.from(await parent.content());
        const tables = blockCounter(4096);
        const own = await mergeFootprint(diff, tables);
        const counted = blockCounter(4096);
        const r = await mergeExtents(diff, parent, 0, { onPiece: counted.add });
        expect(r.bytes).toBe(own);
        // The blocks the summary reports, counted as the data step goes, are those the tables say.
        expect(counted.blocks).toBe(tables.blocks);
        expect((await parent.content()).equals(expected)).toBe(true);
        // Sectors the diff does not hold were never written in the parent.
        for (let s = 0; s < 256; s++) {
          if (diff.state[s] === 0) expect(parent.bytes.subarray(s * 512, s * 512 + 512).equals(before.subarray(s * 512, s * 512 + 512))).toBe(true);
        }
      }),
      { numRuns: 150 },
    );
  });

  it('resumes from any checkpoint after a failure and still gives the same content', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(opArb, { maxLength: 8 }), fc.array(opArb, { minLength: 1, maxLength: 12 }), fc.nat({ max: 30 }), async (pOps, dOps, failAt) => {
        let failAfter = Infinity;
        let count = 0;
        const parent = new MemDisk(SIZE, {
          beforeWrite: () => {
            if (++count > failAfter) throw new Error('injected failure');
          },
        });
        const diff = new MemDisk(SIZE, { parent });
        for (const op of pOps) await apply(parent, op);
        for (const op of dOps) await apply(diff, op);
        const expected = await diff.content();
        let safe = 0;
        failAfter = failAt;
        count = 0;
        const checkpoint = async (off: number) => {
          expect(off).toBeGreaterThanOrEqual(safe);
          safe = off;
        };
        await mergeExtents(diff, parent, 0, { checkpoint, checkpointBytes: 512 }).catch((e: Error) => {
          if (e.message !== 'injected failure') throw e;
        });
        failAfter = Infinity;
        // A resumed run counts the blocks before its resume point from the tables and the rest as it merges.
        const whole = blockCounter(1536);
        await mergeFootprint(diff, whole);
        const counted = blockCounter(1536);
        await mergeFootprint(diff, counted, 0, safe);
        await mergeExtents(diff, parent, safe, { checkpoint, checkpointBytes: 512, onPiece: counted.add });
        expect(counted.blocks).toBe(whole.blocks);
        expect((await parent.content()).equals(expected)).toBe(true);
      }),
      { numRuns: 150 },
    );
  });

  it('reads only what the diff holds: a 1-sector change moves 512 bytes, not a block', async () => {
    const { parent, diff } = await build([{ kind: 'write', sector: 0, count: 256, fill: 7 }], [{ kind: 'write', sector: 100, count: 1, fill: 9 }]);
    const r = await mergeExtents(diff, parent, 0);
    expect(r).toEqual({ bytes: 512, extents: 1 });
    expect(parent.writes).toBe(1);
  });
});

describe('mergeFootprint', () => {
  it('counts bytes and the parent blocks they touch, each block once', async () => {
    const parent = new MemDisk(SIZE);
    const diff = new MemDisk(SIZE, { parent });
    await diff.write(512, Buffer.alloc(1024, 1)); // block 0
    await diff.writeZeroes(4096 - 512, 1024); // blocks 0 and 1
    await diff.write(5 * 4096, Buffer.alloc(3 * 4096, 2)); // blocks 5, 6, 7
    const all = blockCounter(4096);
    expect(await mergeFootprint(diff, all)).toBe(1024 + 1024 + 3 * 4096);
    expect(all.blocks).toBe(5);
    const tail = blockCounter(4096);
    expect(await mergeFootprint(diff, tail, 5 * 4096)).toBe(3 * 4096);
    expect(tail.blocks).toBe(3);
    // A window's end cuts a range; the block it straddles is still counted once.
    const split = blockCounter(4096);
    await mergeFootprint(diff, split, 0, 6 * 4096 + 512);
    await mergeFootprint(diff, split, 6 * 4096 + 512);
    expect(split.blocks).toBe(5);
  });
});
