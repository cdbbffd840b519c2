import * as fs from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { createDisk, openDisk } from '../../../src/formats/index.js';
import type { Disk } from '../../../src/formats/disk.js';
import { haveRealImages, unpackFixture } from '../../helpers/fixtures.js';
import { makeTempDir } from '../../helpers/tmp.js';
import { haveTool, requireTool, run } from '../../helpers/tools.js';
import { expectPathsAgree } from './direct-helpers.js';

const MiB = 1 << 20;
const SIZE = 6 * MiB;

interface Op {
  child: boolean;
  zero: boolean;
  sector: number;
  sectors: number;
}

describe('the direct hashing path (file ranges mapped through the BAT) agrees with the generic pipeline', () => {
  const tmp = makeTempDir('hash-direct-');
  afterAll(() => tmp.cleanup());
  let n = 0;

  it('on sparse raw images (ranges lying in holes of the file hashed as zeros through the hole map; written zeros are data)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 8 * MiB }),
        fc.array(fc.record({ zero: fc.boolean(), at: fc.integer({ min: 0, max: 8 * MiB }), len: fc.integer({ min: 1, max: 3 * MiB }) }), { maxLength: 6 }),
        async (size, writes) => {
          const file = path.join(tmp.dir, `sparse${n++}.raw`);
          fs.writeFileSync(file, '');
          fs.truncateSync(file, size);
          const fd = fs.openSync(file, 'r+');
          for (const w of writes) {
            const at = Math.min(w.at, size - 1);
            const len = Math.min(w.len, size - at);
            fs.writeSync(fd, w.zero ? Buffer.alloc(len) : randomBytes(len), 0, len, at);
          }
          fs.closeSync(fd);
          await expectPathsAgree(file, [64 << 10, 2 * MiB]);
          fs.rmSync(file);
        },
      ),
      { numRuns: 12 },
    );
  });

  it('on random VHD and VHDX images and differencing chains (sector bitmaps, partial blocks, zeroed ranges)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom<'vhd' | 'vhdx'>('vhd', 'vhdx'),
        fc.constantFrom<'same' | 'raw' | 'none'>('same', 'raw', 'none'),
        fc.array(
          fc.record({ child: fc.boolean(), zero: fc.boolean(), sector: fc.integer({ min: 0, max: SIZE / 512 - 1 }), sectors: fc.integer({ min: 1, max: 700 }) }),
          { maxLength: 10 },
        ),
        fc.constantFrom(4096, 65536, 2 * MiB),
        async (format, parentKind, ops: Op[], blockSize) => {
          // VHDX children need VHDX parents (as Hyper-V); VHD children may sit on a raw parent.
          if (format === 'vhdx' && parentKind === 'raw') parentKind = 'same';
          const dir = path.join(tmp.dir, `case${n++}`);
          fs.mkdirSync(dir);
          const blocks = format === 'vhd' ? 512 * 1024 : MiB;
          const parentPath = path.join(dir, parentKind === 'raw' ? 'parent.raw' : `parent.${format}`);
          if (parentKind === 'raw') fs.writeFileSync(parentPath, Buffer.alloc(SIZE));
          const base = parentKind === 'raw' ? await openDisk(parentPath, { writable: true }) : await createDisk(parentPath, { format, type: 'dynamic', virtualSize: SIZE, blockSize: blocks });
          const apply = async (d: Disk, own: Op[]) => {
            for (const op of own) {
              const at = op.sector * 512;
              const len = Math.min(op.sectors * 512, d.virtualSize - at);
              if (op.zero) await d.writeZeroes(at, len);
              else await d.write(at, randomBytes(len));
            }
          };
          await apply(base, ops.filter((o) => parentKind === 'none' || !o.child));
          await base.close();
          let top = parentPath;
          if (parentKind !== 'none') {
            top = path.join(dir, `child.${format}`);
            const parent = await openDisk(parentPath);
            const child = await createDisk(top, { format, type: 'differencing', parent, blockSize: blocks });
            await apply(child, ops.filter((o) => o.child));
            await child.close();
          }
          await expectPathsAgree(top, [blockSize]);
          fs.rmSync(dir, { recursive: true, force: true });
        },
      ),
      { numRuns: 20 },
    );
  });

  const haveQemu = requireTool(haveTool('qemu-img') && haveTool('qemu-io'), 'qemu-img/qemu-io');
  (haveQemu ? it : it.skip)('on dynamic VHD and VHDX images written by qemu', async () => {
    for (const [fmt, ext] of [['vpc', 'vhd'], ['vhdx', 'vhdx']]) {
      const img = path.join(tmp.dir, `qemu.${ext}`);
      run('qemu-img', ['create', '-q', '-f', fmt, img, '16M']);
      for (const [off, len] of [[0, 4096], [3 * MiB + 512, 70000], [9 * MiB, 2 * MiB], [15 * MiB + 1024, 4096]]) {
        run('qemu-io', ['-f', fmt, '-c', `write -P ${(off >> 9) & 0xff} ${off} ${len}`, img]);
      }
      run('qemu-io', ['-f', fmt, '-c', `write -z ${10 * MiB} ${MiB}`, img]);
      await expectPathsAgree(img, [4096, MiB, 2 * MiB]);
    }
  });

  const real = haveRealImages();
  (real ? it : it.skip)('on real images from Hyper-V, Windows and qemu, and falls back where the file is not the content', async () => {
    for (const name of ['dynamic.vhd.gz', 'dynamic.vhdx.gz', 'fixed.vhd.gz', 'fixed.vhdx.gz', 'ext2.vhd.gz']) {
      await expectPathsAgree(await unpackFixture(name, tmp.dir), [64 * 1024, 2 * MiB]);
    }
    // Hyper-V's 1 GiB image: 32 MiB blocks, 3 FULLY_PRESENT and 29 ZERO.
    await expectPathsAgree(await unpackFixture('iotest-dynamic-1G.vhdx.bz2', tmp.dir), [4 * MiB]);
    // A differencing pair (deliberately wrong checksums, opened with the override).
    await unpackFixture('image.vhd.gz', tmp.dir);
    await expectPathsAgree(await unpackFixture('image-differential.vhd.gz', tmp.dir), [4096, 2 * MiB], { ignoreChecksums: true });
    // A log that must be replayed: read-only opens patch reads in memory, so the file is not the content.
    const dirty = await unpackFixture('iotest-dirtylog-10G-4M.vhdx.bz2', tmp.dir);
    const disk = await openDisk(dirty);
    expect(await disk.mapFile!(0, disk.virtualSize)).toBeNull();
    await disk.close();
    await expectPathsAgree(dirty, [32 * MiB], {}, false);
  });
});
