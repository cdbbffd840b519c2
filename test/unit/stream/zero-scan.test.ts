/**
 * The zero scan of a full stream (fullContent: VHDX blocks coarser than the stream's 2 MiB VHD blocks) keeps exactly
 * the granules that hold a non-zero byte, on VHDX files written by us and by qemu-img, with data, written zeros and
 * holes; and granules in holes of the file are not read at all when the hole map helper is there.
 */
import fs from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { jest } from '@jest/globals';
import fc from 'fast-check';
import { createDisk, openDisk } from '../../../src/formats/index.js';
import type { Disk } from '../../../src/formats/disk.js';
import { fullContent } from '../../../src/stream/index.js';
import type { ByteRange } from '../../../src/stream/content.js';
import { holeMapAvailable } from '../../../src/io/holes.js';
import { HAVE_QEMU, requireTool, run } from '../../helpers/tools.js';
import { makeTempDir } from '../../helpers/tmp.js';

const MiB = 1 << 20;
const GRANULE = 2 * MiB;
const SIZE = 32 * MiB;

/** The 2 MiB granules of `content` holding a non-zero byte, merged into ranges (what the scan must keep). */
function nonZeroGranules(content: Buffer): ByteRange[] {
  const out: ByteRange[] = [];
  for (let at = 0; at < content.length; at += GRANULE) {
    if (content.subarray(at, at + GRANULE).every((b) => b === 0)) continue;
    const last = out[out.length - 1];
    if (last && last.offset + last.length === at) last.length += GRANULE;
    else out.push({ offset: at, length: Math.min(GRANULE, content.length - at) });
  }
  return out;
}

type Op = { at: number; len: number; kind: 'data' | 'zeros' | 'writeZeroes' };
const ops = fc.array(
  fc.record({ at: fc.nat(SIZE - 1), len: fc.integer({ min: 1, max: 2 * MiB }), kind: fc.constantFrom<Op['kind']>('data', 'data', 'zeros', 'writeZeroes') }),
  { maxLength: 8 },
);

/** The scan's ranges and the bytes read with fs.readSync while it ran. */
async function scan(disk: Disk): Promise<{ ranges: readonly ByteRange[]; bytesRead: number }> {
  let bytesRead = 0;
  const real = fs.readSync;
  const spy = jest.spyOn(fs, 'readSync').mockImplementation(((...args: Parameters<typeof fs.readSync>) => {
    const n = (real as (...a: Parameters<typeof fs.readSync>) => number)(...args);
    bytesRead += n;
    return n;
  }) as typeof fs.readSync);
  try {
    return { ranges: (await fullContent(disk, 'vhd')).ranges, bytesRead };
  } finally {
    spy.mockRestore();
  }
}

describe('zero scan of a full VHD stream', () => {
  const tmp = makeTempDir('zero-scan-');
  afterAll(() => tmp.cleanup());
  let n = 0;

  it('keeps exactly the non-zero granules of a VHDX with 8 MiB blocks (ours)', async () => {
    await fc.assert(
      fc.asyncProperty(ops, async (list) => {
        const file = path.join(tmp.dir, `ours${n++}.vhdx`);
        const w = await createDisk(file, { format: 'vhdx', type: 'dynamic', virtualSize: SIZE, blockSize: 8 * MiB });
        for (const op of list) {
          const len = Math.min(op.len, SIZE - op.at);
          if (op.kind === 'writeZeroes') await w.writeZeroes(op.at, len);
          else await w.write(op.at, op.kind === 'zeros' ? Buffer.alloc(len) : randomBytes(len));
        }
        await w.close();
        const disk = await openDisk(file);
        try {
          const expected = nonZeroGranules(await disk.read(0, SIZE));
          expect((await scan(disk)).ranges).toEqual(expected);
        } finally {
          await disk.close();
        }
        fs.rmSync(file);
      }),
      { numRuns: 10 },
    );
  });

  it('keeps exactly the non-zero granules of a VHDX made by qemu-img (16 MiB blocks, holes, written zeros)', async () => {
    if (!requireTool(HAVE_QEMU, 'qemu-img')) return;
    const raw = path.join(tmp.dir, 'qemu.raw');
    const vhdx = path.join(tmp.dir, 'qemu.vhdx');
    const content = Buffer.alloc(SIZE);
    // Data at block starts and in the middle of a block, a run of written zeros, a block with only zeros.
    for (const [at, len] of [[0, 4096], [16 * MiB + 5 * MiB, 3 * MiB], [24 * MiB - 512, 1024]]) randomBytes(len).copy(content, at);
    fs.writeFileSync(raw, content);
    run('qemu-img', ['convert', '-f', 'raw', '-O', 'vhdx', '-o', 'subformat=dynamic', raw, vhdx]);
    const disk = await openDisk(vhdx);
    try {
      expect((await scan(disk)).ranges).toEqual(nonZeroGranules(content));
    } finally {
      await disk.close();
    }
  });

  it('does not read granules that lie in holes of the file', async () => {
    if (!requireTool(holeMapAvailable(), 'the hole map helper (scripts/build-native.js: cc and Node headers)')) return;
    const file = path.join(tmp.dir, 'sparse.vhdx');
    const w = await createDisk(file, { format: 'vhdx', type: 'dynamic', virtualSize: SIZE, blockSize: 16 * MiB });
    // One page of data in each of two blocks: 16 of the 24 granules are in those blocks, 14 of them in holes.
    await w.write(0, randomBytes(4096));
    await w.write(16 * MiB + GRANULE, randomBytes(4096));
    await w.close();
    const disk = await openDisk(file);
    try {
      const { ranges, bytesRead } = await scan(disk);
      expect(ranges).toEqual([{ offset: 0, length: GRANULE }, { offset: 16 * MiB + GRANULE, length: GRANULE }]);
      // A page probed in each of the two data granules; without the hole map it was 14 granules of 2 MiB more.
      expect(bytesRead).toBeLessThanOrEqual(2 * 4096);
    } finally {
      await disk.close();
    }
  });
});
