/**
 * readMapped (synchronous reads from the files a disk maps, formats/mapped-read.ts) returns what the driver's own
 * read returns, on random VHD, VHDX and QCOW2 chains, and falls back to the driver where the disk cannot map.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { createDisk, openDisk } from '../../../src/formats/index.js';
import type { Disk } from '../../../src/formats/disk.js';
import { readMapped } from '../../../src/formats/mapped-read.js';
import { allocAligned } from '../../../src/util/aligned.js';
import { makeTempDir } from '../../helpers/tmp.js';

const MiB = 1 << 20;
const SIZE = 6 * MiB;

describe('readMapped', () => {
  const tmp = makeTempDir('mapped-read-');
  afterAll(() => tmp.cleanup());
  let n = 0;

  it('reads what the driver reads, from any offset and length, through parents', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom<'vhd' | 'vhdx' | 'qcow2'>('vhd', 'vhdx', 'qcow2'),
        fc.boolean(),
        fc.array(fc.record({ child: fc.boolean(), zero: fc.boolean(), at: fc.nat(SIZE - 1), len: fc.integer({ min: 1, max: 300000 }) }), { maxLength: 8 }),
        fc.array(fc.record({ at: fc.nat(SIZE - 1), len: fc.integer({ min: 1, max: 3 * MiB }) }), { minLength: 1, maxLength: 6 }),
        async (format, withChild, ops, reads) => {
          const dir = path.join(tmp.dir, `case${n++}`);
          fs.mkdirSync(dir);
          const blockSize = format === 'vhd' ? 512 * 1024 : format === 'vhdx' ? MiB : 64 * 1024;
          const apply = async (d: Disk, own: typeof ops) => {
            for (const op of own) {
              const len = Math.min(op.len, d.virtualSize - op.at);
              if (op.zero) await d.writeZeroes(op.at, len);
              else await d.write(op.at, randomBytes(len));
            }
          };
          const parentPath = path.join(dir, `parent.${format}`);
          const base = await createDisk(parentPath, { format, type: 'dynamic', virtualSize: SIZE, blockSize });
          await apply(base, ops.filter((o) => !withChild || !o.child));
          await base.close();
          let top = parentPath;
          if (withChild) {
            top = path.join(dir, `child.${format}`);
            const child = await createDisk(top, { format, type: 'differencing', parent: await openDisk(parentPath), blockSize });
            await apply(child, ops.filter((o) => o.child));
            await child.close();
          }
          const disk = await openDisk(top);
          try {
            for (const r of reads) {
              const len = Math.min(r.len, SIZE - r.at);
              const expected = await disk.read(r.at, len);
              const got = await readMapped(disk, r.at, len, allocAligned(len + 5));
              expect(got.length).toBe(len);
              expect(got.equals(expected)).toBe(true);
            }
          } finally {
            await disk.close();
          }
          fs.rmSync(dir, { recursive: true, force: true });
        },
      ),
      { numRuns: 25 },
    );
  });

  it('falls back to the driver for a disk that cannot map (a writable open)', async () => {
    const file = path.join(tmp.dir, 'w.vhdx');
    const disk = await createDisk(file, { format: 'vhdx', type: 'dynamic', virtualSize: SIZE });
    try {
      const data = randomBytes(3 * MiB);
      await disk.write(MiB, data);
      expect(await disk.mapFile!(0, SIZE)).toBeNull();
      const got = await readMapped(disk, MiB, data.length, Buffer.alloc(data.length));
      expect(got.equals(data)).toBe(true);
    } finally {
      await disk.close();
    }
  });
});
