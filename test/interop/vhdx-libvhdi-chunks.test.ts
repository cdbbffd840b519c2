/**
 * Differencing VHDX spanning several sector-bitmap chunks, read by libvhdi over its parent (decision 0031). libvhdi
 * (20210425, and libyal's code since) takes a block's presence bits from its chunk's sector bitmap block whatever the
 * block's state, and from file offset 0 when that bitmap entry is NOT_PRESENT: the child's own identifier, headers and
 * region tables then hide the parent's sectors in blocks 0, 64 KiB / s, 128 KiB / s, 192 KiB / s and 256 KiB / s of
 * each such chunk (s = bytes of bitmap per block). Those blocks of the parent hold data here, in every chunk, and the
 * child changes at most one chunk: every other chunk must still read as the parent, to libvhdi as to us.
 */
import * as path from 'node:path';
import fc from 'fast-check';
import '../../src/formats/index.js';
import { createDisk, openDisk } from '../../src/formats/index.js';
import { makeTempDir } from '../helpers/tmp.js';
import { PYTHON_VHDI, requireTool } from '../helpers/tools.js';
import { pyvhdiReadRanges } from '../unit/vhdx/helpers.js';

const MiB = 1 << 20;
const HEADER_AREA_STRUCTURES = [0, 64 << 10, 128 << 10, 192 << 10, 256 << 10];
const ok = requireTool(Boolean(PYTHON_VHDI), 'pyvhdi');
const tmp = makeTempDir('vhdx-chunks-');
afterAll(() => tmp.cleanup());
let n = 0;

interface Write {
  offset: number;
  data: Buffer;
}

/** What [offset, offset+length) holds after `writes` (in order) over zeros: the oracle, independent of any reader. */
function expected(writes: readonly Write[], offset: number, length: number): Buffer {
  const out = Buffer.alloc(length);
  for (const w of writes) {
    const from = Math.max(offset, w.offset);
    const to = Math.min(offset + length, w.offset + w.data.length);
    if (from < to) w.data.copy(out, from - offset, from - w.offset, to - w.offset);
  }
  return out;
}

(ok ? test : test.skip)('libvhdi reads every chunk of our differencing VHDX as MS-VHDX says: untouched chunks from the parent (property)', async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.constantFrom(512, 4096),
      fc.constantFrom(MiB, 2 * MiB, 32 * MiB),
      fc.constantFrom('none', 'whole', 'partial'),
      fc.nat(),
      fc.integer({ min: 1, max: 255 }),
      async (sector, blockSize, change, where, seed) => {
        const chunk = 2 ** 23 * sector;
        // Two and a half chunks: two full ones and a short last one (10 GiB at 512-byte sectors, 80 GiB at 4096), sparse.
        const size = 2.5 * chunk;
        const perBlockBitmap = blockSize / sector / 8;
        const dir = path.join(tmp.dir, `c${n++}`);
        const parentPath = `${dir}-base.vhdx`;
        const childPath = `${dir}-child.avhdx`;
        const parentWrites: Write[] = [];
        const probes: Array<[number, number]> = [];
        for (let c = 0; c * chunk < size; c++) {
          for (const at of HEADER_AREA_STRUCTURES) {
            const offset = c * chunk + (at / perBlockBitmap) * blockSize;
            if (offset >= size) continue;
            // The bits of a structure's first bytes stand for the block's first sectors: 1 MiB covers them all.
            parentWrites.push({ offset, data: Buffer.alloc(MiB, (seed + parentWrites.length) % 255 || 1) });
            probes.push([offset, MiB]);
          }
        }
        const parent = await createDisk(parentPath, { format: 'vhdx', type: 'dynamic', virtualSize: size, blockSize, logicalSectorSize: sector });
        for (const w of parentWrites) await parent.write(w.offset, w.data);
        await parent.close();
        const childWrites: Write[] = [];
        // At most one change, in the first chunk: a whole block (FULLY_PRESENT) or a few sectors (PARTIALLY_PRESENT).
        const block = where % (chunk / blockSize);
        if (change === 'whole') childWrites.push({ offset: block * blockSize, data: Buffer.alloc(blockSize, 0xc3) });
        if (change === 'partial') childWrites.push({ offset: block * blockSize + sector, data: Buffer.alloc(3 * sector, 0x3c) });
        for (const w of childWrites) probes.push([w.offset, w.data.length]);
        const child = await createDisk(childPath, { format: 'vhdx', type: 'differencing', parent: await openDisk(parentPath), blockSize });
        for (const w of childWrites) await child.write(w.offset, w.data);
        await child.close();

        const theirs = pyvhdiReadRanges(childPath, probes, parentPath);
        const ours = await openDisk(childPath);
        try {
          for (const [i, [offset, length]] of probes.entries()) {
            const want = expected([...parentWrites, ...childWrites], offset, length);
            expect({ offset, libvhdi: theirs[i].equals(want) }).toEqual({ offset, libvhdi: true });
            expect((await ours.read(offset, length)).equals(want)).toBe(true);
          }
        } finally {
          await ours.close();
        }
      },
    ),
    { numRuns: 6 },
  );
});
