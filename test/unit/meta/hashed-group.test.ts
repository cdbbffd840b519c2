/**
 * Hashed groups (createmeta writes a list a group at a time): the writer takes groups and single records mixed and
 * writes the same bytes as block by block, refuses malformed groups, and whole lists written from groups equal the
 * ones written block by block through the generic pipeline, on images with long unallocated runs and sparse holes.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { localStore } from '../../../src/io/local.js';
import type { Location } from '../../../src/io/location.js';
import { openDisk } from '../../../src/formats/index.js';
import { createMetafile } from '../../../src/meta/create.js';
import { stateCode, type BlockState } from '../../../src/meta/entries.js';
import { GROUP_BYTES_CAP, GroupShape, KNOWN_GROUP } from '../../../src/meta/hashed-group.js';
import { hashDiskGroups } from '../../../src/meta/hash-disk.js';
import { parseHeader } from '../../../src/meta/header.js';
import { writeMetafile, type BlockRecord, type NewMetafile, type RecordGroup } from '../../../src/meta/metafile.js';
import { makeTempDir } from '../../helpers/tmp.js';
import { haveTool, requireTool, run } from '../../helpers/tools.js';

const loc = (p: string): Location => ({ store: localStore, path: p });
const identity = { format: 'raw' as const, contentId: '', timestamp: 0, fileSize: 123, mtimeMs: 1763890000123.5 };
const STATES: BlockState[] = ['unallocated', 'zero', 'data'];

describe('hashed groups', () => {
  const tmp = makeTempDir('hashed-group-');
  afterAll(() => tmp.cleanup());
  const p = (name: string) => path.join(tmp.dir, name);
  let n = 0;

  it('are written to the same bytes as the same blocks one by one, however the blocks are grouped (property)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom('native', 'native-sub', 'vbb'),
        fc.integer({ min: 1, max: 300 }),
        fc.integer({ min: 1, max: 4096 }),
        fc.array(fc.integer({ min: 1, max: 90 }), { minLength: 1, maxLength: 40 }),
        fc.array(fc.boolean(), { minLength: 1, maxLength: 40 }),
        async (kind, count, tail, sizes, singles) => {
          const blockSize = kind === 'vbb' ? 2 << 20 : 64 << 10;
          const virtualSize = (count - 1) * blockSize + Math.min(tail * 512, blockSize);
          const sub = kind === 'native-sub' ? { size: 16 << 10, digestLength: 8 } : null;
          const meta: NewMetafile = kind === 'vbb'
            ? { layout: 'vbb', algorithm: 'sha1-16', blockSize, logicalSectorSize: 512, virtualSize, identity, createdMs: 1, toolVersion: 't' }
            : { layout: 'native', algorithm: 'xxh128', blockSize, logicalSectorSize: 512, virtualSize, identity, subBlockSize: sub?.size ?? 0, createdMs: 1, toolVersion: 't' };
          const slot = sub ? (blockSize / sub.size) * sub.digestLength : 0;
          const recs: BlockRecord[] = Array.from({ length: count }, (_, index) => {
            const length = Math.min(blockSize, virtualSize - index * blockSize);
            const r: BlockRecord = { index, state: STATES[(index * 7 + count) % 3], digest: randomBytes(16) };
            if (sub) r.subDigests = randomBytes(Math.ceil(length / sub.size) * sub.digestLength);
            return r;
          });
          // The same blocks as groups of the drawn sizes, some handed over one by one instead.
          const mixed: Array<BlockRecord | RecordGroup> = [];
          for (let at = 0, k = 0; at < count; k++) {
            const take = Math.min(sizes[k % sizes.length], count - at);
            if (singles[k % singles.length]) mixed.push(...recs.slice(at, at + take));
            else {
              const part = recs.slice(at, at + take);
              const subDigests = sub ? Buffer.alloc(take * slot) : null;
              part.forEach((r, i) => subDigests?.set(r.subDigests!, i * slot));
              mixed.push({ first: at, count: take, states: Uint8Array.from(part.map((r) => stateCode(r.state))), digests: Buffer.concat(part.map((r) => r.digest)), subDigests });
            }
            at += take;
          }
          const one = p(`one${n}.bin`);
          const grouped = p(`grouped${n++}.bin`);
          await writeMetafile(loc(one), meta, recs);
          await writeMetafile(loc(grouped), meta, mixed);
          expect(fs.readFileSync(grouped).equals(fs.readFileSync(one))).toBe(true);
          fs.rmSync(one);
          fs.rmSync(grouped);
        },
      ),
      { numRuns: 60 },
    );
  });

  it('refuse a group out of order, of the wrong size or with an invalid state, and leave no file behind', async () => {
    const meta: NewMetafile = { layout: 'native', algorithm: 'xxh128', blockSize: 16384, logicalSectorSize: 512, virtualSize: 16384 * 10, identity, subBlockSize: 4096 };
    const group = (first: number, count: number, over: Partial<RecordGroup> = {}): RecordGroup => ({
      first,
      count,
      states: new Uint8Array(count).fill(2),
      digests: Buffer.alloc(count * 16),
      subDigests: Buffer.alloc(count * 32),
      ...over,
    });
    const cases: Array<[Array<RecordGroup>, RegExp]> = [
      [[group(1, 9)], /out of order/],
      [[group(0, 11)], /out of order/],
      [[group(0, 5), group(4, 5)], /out of order/],
      [[group(0, 10, { digests: Buffer.alloc(159) })], /bytes of digests/],
      [[group(0, 10, { subDigests: Buffer.alloc(10 * 32 - 8) })], /bytes of sub-digests/],
      [[group(0, 10, { subDigests: null })], /bytes of sub-digests/],
      [[group(0, 10, { states: new Uint8Array(10).fill(3) })], /invalid block state code 3/],
      [[group(0, 9)], /ended at 9 of 10/],
    ];
    // A short last block (4 KiB of 16: one sub-digest of four) with bytes in its spare slots.
    const shortMeta = { ...meta, virtualSize: 16384 * 9 + 4096 };
    const padded = group(0, 10);
    padded.subDigests![9 * 32 + 8] = 1;
    await expect(writeMetafile(loc(p('bad.bin')), shortMeta, [padded])).rejects.toThrow(/sub-digests past its 8 bytes/);
    await writeMetafile(loc(p('good.bin')), shortMeta, [group(0, 10)]);
    fs.rmSync(p('good.bin'));
    for (const [groups, why] of cases) await expect(writeMetafile(loc(p('bad.bin')), meta, groups)).rejects.toThrow(why);
    expect(fs.readdirSync(tmp.dir).filter((f) => f.includes('bad.bin'))).toEqual([]);
  });

  it('hold a bounded number of digest bytes whatever the block size, and refuse digests of the wrong length', () => {
    for (const [blockSize, algorithm, sub] of [
      [256 << 20, 'sha256', { algorithm: 'sha256', size: 64 << 10 }],
      [256 << 20, 'xxh128', { algorithm: 'xxh3-64', size: 32 << 10 }],
      [64 << 10, 'xxh128', { algorithm: 'xxh3-64', size: 32 << 10 }],
      [4096, 'xxh128', null],
    ] as const) {
      const shape = new GroupShape(algorithm, blockSize, 2 ** 44 + 512, sub);
      const groups = [...shape.knownGroups(3, 10 * KNOWN_GROUP, 'unallocated')];
      expect(groups.reduce((n, g) => n + g.count, 0)).toBe(10 * KNOWN_GROUP);
      for (const g of groups) expect(g.digests.length + (g.subDigests?.length ?? 0)).toBeLessThanOrEqual(GROUP_BYTES_CAP);
      expect(shape.knownGroup).toBe(Math.min(KNOWN_GROUP, Math.floor(GROUP_BYTES_CAP / (shape.slot + shape.digestLength))));
    }
    const shape = new GroupShape('xxh128', 64 << 10, 10 << 20, { algorithm: 'xxh3-64', size: 32 << 10 });
    expect(() => shape.fromDigests(0, [[Buffer.alloc(16), Buffer.alloc(16)], [Buffer.alloc(15), Buffer.alloc(16)]])).toThrow(/block 1: 15 bytes of digest/);
    expect(() => shape.fromDigests(0, [[Buffer.alloc(16), null]])).toThrow(/0 of sub-digests, expected 16 and 16/);
  });

  it('from the pipeline (no direct path) move progress at least every 32 MiB', async () => {
    const image = p('pipeline.raw');
    fs.writeFileSync(image, randomBytes(1 << 20));
    fs.truncateSync(image, 100 << 20);
    const disk = await openDisk(image);
    try {
      const bytes: number[] = [];
      for await (const g of hashDiskGroups(disk, { algorithm: 'xxh128', blockSize: 2 << 20, direct: false })) bytes.push(g.bytes);
      expect(bytes.reduce((a, b) => a + b, 0)).toBe(100 << 20);
      expect(Math.max(...bytes)).toBeLessThanOrEqual(32 << 20);
    } finally {
      await disk.close();
    }
  });

  it('refuse an image whose map does not cover a group exactly, writing no list', async () => {
    const image = p('short-map.raw');
    fs.writeFileSync(image, randomBytes(3 << 20));
    const disk = await openDisk(image);
    try {
      const real = disk.mapFile!.bind(disk);
      disk.mapFile = async (offset, length) => {
        const runs = await real(offset, length);
        return runs && length > 0 ? [{ ...runs[0], length: runs[0].length - 512 }, ...runs.slice(1)] : runs;
      };
      await expect(createMetafile(disk, { blockSize: 64 << 10, target: loc(image + '.list') })).rejects.toThrow(/map covers \d+ of \d+ bytes/);
      expect(fs.existsSync(image + '.list')).toBe(false);
    } finally {
      await disk.close();
    }
  });

  /** The list createmeta writes (groups, direct path) against one written block by block through the pipeline. */
  async function expectSameList(image: string, blockSize: number): Promise<void> {
    const disk = await openDisk(image);
    try {
      const grouped = await createMetafile(disk, { blockSize, target: loc(image + '.grouped') });
      // Block data asked for: the generic pipeline, block by block.
      const single = await createMetafile(disk, { blockSize, target: loc(image + '.single'), onBlock: () => {}, withData: true });
      expect(grouped.blocks).toEqual(single.blocks);
      expect(grouped.bytesRead).toBe(single.bytesRead);
      const a = fs.readFileSync(image + '.grouped');
      const b = fs.readFileSync(image + '.single');
      expect(a.length).toBe(b.length);
      // Everything after the header (entries, trailer, sub-digest table), and the table's CRC in the header.
      expect(a.subarray(512).equals(b.subarray(512))).toBe(true);
      expect(parseHeader(a, 'a').subTableCrc).toBe(parseHeader(b, 'b').subTableCrc);
    } finally {
      await disk.close();
    }
  }

  it('of an image mostly unallocated, longer than a known group, with a short last block, make the same list as block by block', async () => {
    if (!requireTool(haveTool('qemu-img') && haveTool('qemu-io'), 'qemu-img and qemu-io')) return;
    const blockSize = 64 << 10;
    // The data write below allocates the 1 MiB VHDX blocks around block KNOWN_GROUP (metafile blocks up to
    // KNOWN_GROUP + 16); two full known groups follow, the last block of the second short (512 bytes): a full group
    // that must not be the one shared by the others.
    const size = (KNOWN_GROUP + 16 + 2 * KNOWN_GROUP - 1) * blockSize + 512;
    const image = p('mostly-empty.vhdx');
    run('qemu-img', ['create', '-q', '-f', 'vhdx', '-o', 'subformat=dynamic,block_size=1M', image, String(size)]);
    run('qemu-io', ['-f', 'vhdx', '-c', `write -P 7 ${KNOWN_GROUP * blockSize - 4096} 8192`, '-c', 'write -z 3M 1M', image]);
    await expectSameList(image, blockSize);
    await expectSameList(image, 2 << 20);
    // The same size ending in data.
    run('qemu-io', ['-f', 'vhdx', '-c', `write -P 9 ${size - 512} 512`, image]);
    await expectSameList(image, blockSize);
  });

  it('of a sparse raw image (groups wholly in holes answered without reading) make the same list as block by block', async () => {
    const image = p('sparse.raw');
    const size = 300 * (1 << 20) + 1536;
    fs.writeFileSync(image, '');
    fs.truncateSync(image, size);
    const fd = fs.openSync(image, 'r+');
    for (const at of [0, 17 << 20, (100 << 20) + 512, size - 1000]) fs.writeSync(fd, randomBytes(700), 0, 700, at);
    fs.writeSync(fd, Buffer.alloc(3 << 20), 0, 3 << 20, 200 << 20);
    fs.closeSync(fd);
    for (const bs of [64 << 10, 2 << 20]) await expectSameList(image, bs);
  });
});
