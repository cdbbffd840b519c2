import * as fs from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { jest } from '@jest/globals';
import fc from 'fast-check';
import { createDisk, openDisk } from '../../../src/formats/index.js';
import type { Disk } from '../../../src/formats/disk.js';
import { localStore } from '../../../src/io/local.js';
import { createMetafile } from '../../../src/meta/create.js';
import type { DirectThreads } from '../../../src/meta/hash-direct.js';
import { makeTempDir } from '../../helpers/tmp.js';
import { haveTool, requireTool, run } from '../../helpers/tools.js';

const MiB = 1 << 20;

/** Which side hashed how many groups, over every case of a test. */
const total = { here: 0, helpers: 0 };

/**
 * The metafile of `file` hashed on this thread alone and with one helper thread taking groups of one block (so
 * small images are split between the threads), at a fixed creation time: the two files must be byte-identical.
 */
async function expectSameMetafiles(file: string, blockSize: number, algorithm: 'xxh128' | 'sha256' = 'xxh128'): Promise<void> {
  const disk = await openDisk(file);
  const now = jest.spyOn(Date, 'now').mockReturnValue(1_700_000_000_000);
  try {
    const out: Buffer[] = [];
    const settings: DirectThreads[] = [{ count: 1 }, { count: 2, groupBytes: blockSize, helperAfter: 0, awaitHelpers: true, stats: total }];
    for (const [k, threads] of settings.entries()) {
      const target = { store: localStore, path: `${file}.${k}.blocklist.bin` };
      // SHA lists hash on worker threads by default: workers 0 puts them on the threads under test.
      await createMetafile(disk, { algorithm, blockSize, target, threads, workers: 0 });
      out.push(fs.readFileSync(target.path));
      expect(out[k].length).toBeGreaterThan(0);
    }
    expect(out[1].equals(out[0])).toBe(true);
  } finally {
    now.mockRestore();
    await disk.close();
  }
}

interface Op {
  zero: boolean;
  at: number;
  len: number;
}

async function apply(d: Disk, ops: Op[]): Promise<void> {
  for (const op of ops) {
    const at = Math.min(op.at, d.virtualSize - 512);
    const len = Math.min(op.len, d.virtualSize - at);
    if (op.zero) await d.writeZeroes(at, len);
    else await d.write(at, randomBytes(len));
  }
}

describe('XXH128 hashing on two threads writes the same metafile as on one', () => {
  const tmp = makeTempDir('hash-threads-');
  afterAll(() => tmp.cleanup());
  let n = 0;

  it('on random raw, VHD, VHDX and QCOW2 images of odd sizes', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom<'raw' | 'vhd' | 'vhdx' | 'qcow2'>('raw', 'vhd', 'vhdx', 'qcow2'),
        // Sizes in sectors: not a multiple of any block size, so the last block is short.
        fc.integer({ min: 2 * 2048 + 1, max: 7 * 2048 - 1 }),
        fc.array(
          fc.record({ zero: fc.boolean(), at: fc.integer({ min: 0, max: 7 * MiB }).map((b) => b & ~511), len: fc.integer({ min: 1, max: 1400 }).map((s) => s * 512) }),
          { minLength: 1, maxLength: 12 },
        ),
        fc.constantFrom(4096, 65536, MiB, 2 * MiB),
        async (format, sectors, ops: Op[], blockSize) => {
          const size = sectors * 512;
          const file = path.join(tmp.dir, `case${n++}.${format}`);
          let disk: Disk;
          if (format === 'raw') {
            fs.writeFileSync(file, '');
            fs.truncateSync(file, size);
            disk = await openDisk(file, { writable: true });
          } else {
            disk = await createDisk(file, { format, type: 'dynamic', virtualSize: size });
          }
          await apply(disk, ops);
          await disk.close();
          await expectSameMetafiles(file, blockSize);
          for (const f of fs.readdirSync(tmp.dir)) fs.rmSync(path.join(tmp.dir, f), { force: true });
        },
      ),
      { numRuns: 16 },
    );
    // Both threads took part (each case splits its groups between them as they come).
    expect(total.helpers).toBeGreaterThan(0);
    expect(total.here).toBeGreaterThan(0);
  });

  it('on a random raw image with SHA-256 digests (helper threads run the same code)', async () => {
    const file = path.join(tmp.dir, 'sha.raw');
    fs.writeFileSync(file, randomBytes(3 * MiB + 3584));
    await expectSameMetafiles(file, 65536, 'sha256');
  });

  const haveQemu = requireTool(haveTool('qemu-img') && haveTool('qemu-io'), 'qemu-img/qemu-io');
  (haveQemu ? it : it.skip)('on qemu-written images: a compressed QCOW2 (groups read through the driver) and a VHDX', async () => {
    const raw = path.join(tmp.dir, 'content.raw');
    const data = randomBytes(5 * MiB + 1536);
    data.fill(0, MiB, 2 * MiB + 4096);
    // Compressible stretches, so qemu-img stores compressed clusters between raw ones.
    data.fill(7, 3 * MiB, 4 * MiB);
    fs.writeFileSync(raw, data);
    const qcow2 = path.join(tmp.dir, 'c.qcow2');
    run('qemu-img', ['convert', '-q', '-c', '-f', 'raw', '-O', 'qcow2', '-o', 'cluster_size=65536', raw, qcow2]);
    run('qemu-io', ['-f', 'qcow2', '-c', `write -P 9 ${4 * MiB} 65536`, qcow2]);
    const vhdx = path.join(tmp.dir, 'q.vhdx');
    run('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'vhdx', '-o', 'subformat=dynamic', raw, vhdx]);
    for (const img of [qcow2, vhdx]) for (const bs of [65536, MiB]) await expectSameMetafiles(img, bs);
  });
});
