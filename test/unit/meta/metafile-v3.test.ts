/**
 * Metafile version 3: the second level (sub-block digests) in the header, the table after the entries, reading
 * it in memory and streamed, and the digests themselves checked against xxhsum -H3 and sha256sum.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { localStore } from '../../../src/io/local.js';
import type { Location } from '../../../src/io/location.js';
import { openDisk } from '../../../src/formats/index.js';
import { MetafileError } from '../../../src/util/errors.js';
import { crc32c } from '../../../src/util/crc32c.js';
import { serializeHeader, parseHeader, type MetafileHeader } from '../../../src/meta/header.js';
import { readMetafile, writeMetafile, type BlockRecord, type NewMetafile } from '../../../src/meta/metafile.js';
import { restampMetafile } from '../../../src/meta/restamp.js';
import { createMetafile } from '../../../src/meta/create.js';
import { hashDisk } from '../../../src/meta/hash-disk.js';
import type { BlockState } from '../../../src/meta/entries.js';
import { makeTempDir } from '../../helpers/tmp.js';
import { haveTool, run } from '../../helpers/tools.js';

const loc = (p: string): Location => ({ store: localStore, path: p });
const identity = { format: 'vhd' as const, contentId: '0123456789abcdef0123456789abcdef', timestamp: 712345678, fileSize: 123456789, mtimeMs: 1763890000123.4567 };
const parentIdentity = { format: 'vhdx' as const, contentId: 'a4156192-1c2f-164a-bd95-a9337bbdfc49', timestamp: 7, fileSize: 2 ** 40 + 3, mtimeMs: 1763890000999.25 };
const xxSub = { algorithm: 'xxh3-64' as const, size: 32 << 10, digestLength: 8 };

function header(over: Partial<MetafileHeader> = {}): MetafileHeader {
  return {
    algorithm: 'xxh128',
    digestLength: 16,
    blockSize: 2 << 20,
    logicalSectorSize: 512,
    virtualSize: (10 << 20) + 512,
    blockCount: 6,
    identity,
    parentIdentity: null,
    createdMs: 1763890001000,
    toolVersion: 'vhdsync 0.1.0',
    complete: true,
    sub: xxSub,
    subTableCrc: 0x12345678,
    ...over,
  };
}

function reseal(b: Buffer): Buffer {
  b.writeUInt32LE(0, 508);
  b.writeUInt32LE(crc32c(b.subarray(0, 512)), 508);
  return b;
}

describe('metafile version 3 header', () => {
  it('records the second level at offset 260 and the parent identity by flag bit 1; round-trips both', () => {
    const v3 = serializeHeader(header());
    expect(v3.readUInt32LE(8)).toBe(3);
    expect(v3.readUInt8(18)).toBe(1);
    expect([v3.readUInt32LE(260), v3.readUInt8(264), v3.readUInt8(265), v3.readUInt16LE(266), v3.readUInt32LE(268)]).toEqual([32768, 1, 8, 0, 0x12345678]);
    expect(v3.subarray(172, 260).every((x) => x === 0)).toBe(true);
    expect(parseHeader(v3, 'm')).toEqual(header());
    const withParent = serializeHeader(header({ parentIdentity }));
    expect(withParent.readUInt32LE(8)).toBe(3);
    expect(withParent.readUInt8(18)).toBe(3);
    expect(parseHeader(withParent, 'm')).toEqual(header({ parentIdentity }));
    const sha = header({ algorithm: 'sha256', digestLength: 32, sub: { algorithm: 'sha256', size: 64 << 10, digestLength: 32 } });
    expect(parseHeader(serializeHeader(sha), 'm')).toEqual(sha);
  });

  it('keeps lists without a second level at versions 1 and 2', () => {
    expect(serializeHeader(header({ sub: null, subTableCrc: 0 })).readUInt32LE(8)).toBe(1);
    expect(serializeHeader(header({ sub: null, subTableCrc: 0, parentIdentity })).readUInt32LE(8)).toBe(2);
  });

  it.each([
    ['a sub-block size that is not a power of two', (b: Buffer) => b.writeUInt32LE(3 << 12, 260), /sub-block size 12288 is not a power of two/],
    ['a sub-block size of 0', (b: Buffer) => b.writeUInt32LE(0, 260), /sub-block size 0/],
    ['a sub-block as large as its block', (b: Buffer) => b.writeUInt32LE(1 << 20, 20) && b.writeBigUInt64LE(11n, 40) && b.writeUInt32LE(1 << 20, 260), /not smaller than the block size/],
    ['an unknown sub-block algorithm', (b: Buffer) => b.writeUInt8(7, 264), /unknown sub-block algorithm code 7/],
    ['SHA-256 sub-digests under XXH128 blocks', (b: Buffer) => b.writeUInt8(2, 264) && b.writeUInt8(32, 265), /sub-block algorithm sha256 does not go with xxh128/],
    ['a sub-digest length that does not fit', (b: Buffer) => b.writeUInt8(16, 265), /sub-digest length 16/],
    ['unknown flags', (b: Buffer) => b.writeUInt8(5, 18), /unknown flags/],
  ])('refuses %s', (_what, mutate, message) => {
    const b = serializeHeader(header());
    mutate(b);
    expect(() => parseHeader(reseal(b), 'm')).toThrow(message);
  });

  it('refuses flag bit 1 in a version 2 file (there the version says the parent identity is present)', () => {
    const b = serializeHeader(header({ sub: null, subTableCrc: 0, parentIdentity }));
    b.writeUInt8(3, 18);
    expect(() => parseHeader(reseal(b), 'm')).toThrow(/unknown flags/);
  });
});

describe('metafile version 3 files', () => {
  const tmp = makeTempDir('meta-v3-');
  afterAll(() => tmp.cleanup());
  const p = (name: string) => path.join(tmp.dir, name);
  // 9 full blocks of 16 KiB and a last one of 5 KiB: 4 sub-blocks of 4 KiB per block, the last block 2 (one of 1 KiB).
  const meta: NewMetafile = { layout: 'native', algorithm: 'xxh128', blockSize: 16384, logicalSectorSize: 512, virtualSize: 16384 * 9 + 5120, identity, subBlockSize: 4096 };
  const N = 10;
  const SLOT = 4 * 8;

  function records(): BlockRecord[] {
    const states: BlockState[] = ['unallocated', 'zero', 'data'];
    return Array.from({ length: N }, (_, index) => ({ index, state: states[index % 3], digest: randomBytes(16), subDigests: randomBytes(index === N - 1 ? 2 * 8 : SLOT) }));
  }

  it('writes the table after the entries with its CRC in the header, and reads it back in memory and streamed', async () => {
    const recs = records();
    await writeMetafile(loc(p('a.bin')), meta, recs);
    const bytes = fs.readFileSync(p('a.bin'));
    const tableAt = 512 + N * 17;
    expect(bytes.length).toBe(tableAt + N * SLOT + 8);
    recs.forEach((r, i) => expect(bytes.subarray(tableAt + i * SLOT, tableAt + i * SLOT + r.subDigests!.length).equals(Buffer.from(r.subDigests!))).toBe(true));
    // The last block's spare slots are zero.
    expect(bytes.subarray(tableAt + (N - 1) * SLOT + 16, tableAt + N * SLOT).every((x) => x === 0)).toBe(true);
    expect(bytes.readUInt32LE(268)).toBe(crc32c(bytes.subarray(tableAt, tableAt + N * SLOT)));
    expect(bytes.readUInt32LE(tableAt + N * SLOT)).toBe(crc32c(bytes.subarray(512, tableAt)));
    expect(bytes.subarray(-4).toString('ascii')).toBe('LEND');
    for (const memoryLimit of [1 << 20, 0]) {
      const m = await readMetafile(loc(p('a.bin')), { memoryLimit });
      try {
        expect(m.summary.sub).toEqual({ algorithm: 'xxh3-64', size: 4096, digestLength: 8 });
        expect(m.subCount(0)).toBe(4);
        expect(m.subCount(N - 1)).toBe(2);
        expect((await m.readSubs(3, 2)).equals(Buffer.concat([recs[3].subDigests!, recs[4].subDigests!]))).toBe(true);
        const back: BlockRecord[] = [];
        for await (const r of m.records(3)) back.push({ ...r, digest: Buffer.from(r.digest), subDigests: Buffer.from(r.subDigests!) });
        expect(back.map((r) => Buffer.from(r.subDigests!).toString('hex'))).toEqual(recs.map((r) => Buffer.from(r.subDigests!).toString('hex')));
      } finally {
        await m.close();
      }
    }
  });

  it('refuses a changed byte in the table, a truncated table, and records without their sub-digests', async () => {
    await writeMetafile(loc(p('b.bin')), meta, records());
    const whole = fs.readFileSync(p('b.bin'));
    const bad = Buffer.from(whole);
    bad[512 + N * 17 + 5] ^= 0x40;
    fs.writeFileSync(p('b2.bin'), bad);
    await expect(readMetafile(loc(p('b2.bin')))).rejects.toThrow(/sub-digest table checksum mismatch/);
    fs.writeFileSync(p('b3.bin'), whole.subarray(0, whole.length - 9));
    await expect(readMetafile(loc(p('b3.bin')))).rejects.toThrow(MetafileError);
    const bare = records().map(({ subDigests: _drop, ...r }) => r);
    await expect(writeMetafile(loc(p('b4.bin')), meta, bare)).rejects.toThrow(/0 bytes of sub-digests, expected 32/);
  });

  it('keeps the table through a restamp', async () => {
    const recs = records();
    await writeMetafile(loc(p('r.bin')), { ...meta, parentIdentity }, recs);
    const fresh = { ...identity, contentId: 'fedcba9876543210fedcba9876543210' };
    await restampMetafile(loc(p('r.bin')), loc(p('r.bin')), fresh);
    const m = await readMetafile(loc(p('r.bin')));
    try {
      expect(m.summary.identity).toEqual(fresh);
      expect(m.summary.sub?.size).toBe(4096);
      expect((await m.readSubs(0, N)).subarray(0, SLOT).equals(Buffer.from(recs[0].subDigests!))).toBe(true);
    } finally {
      await m.close();
    }
  });

  it('sub-digests are XXH3-64 (xxhsum -H3) and SHA-256 (sha256sum) of each sub-block, on every hashing path', async () => {
    // 3 MiB + 20 KiB of random data with a zero stretch inside a block and a whole zero block.
    const size = (3 << 20) + (20 << 10);
    const data = randomBytes(size);
    data.fill(0, 100 << 10, 200 << 10);
    data.fill(0, 1 << 20, 2 << 20);
    const file = p('img.raw');
    fs.writeFileSync(file, data);
    const disk = await openDisk(file);
    try {
      for (const [algorithm, subSize, tool, flag] of [['xxh128', 32 << 10, 'xxhsum', '-H3'], ['sha256', 64 << 10, 'sha256sum', '']] as const) {
        const sub = { algorithm: algorithm === 'xxh128' ? ('xxh3-64' as const) : ('sha256' as const), size: subSize };
        const runs: string[][] = [];
        for (const opts of [{ direct: true, workers: 0 }, { direct: false, workers: 0 }, { direct: true, workers: 2 }, { direct: false, workers: 2 }]) {
          const out: string[] = [];
          for await (const b of hashDisk(disk, { algorithm, blockSize: 1 << 20, sub, ...opts })) out.push(b.subDigests!.toString('hex'));
          runs.push(out);
        }
        for (const r of runs) expect(r).toEqual(runs[0]);
        if (!haveTool(tool)) {
          // eslint-disable-next-line no-console
          console.warn(`skipping the ${tool} comparison: ${tool} not installed`);
          continue;
        }
        // Pieces of the second block (a zero stretch inside) and the whole-zero third block, hashed by the tool.
        for (const block of [0, 1, 3]) {
          const start = block << 20;
          const len = Math.min(1 << 20, size - start);
          const want: string[] = [];
          for (let at = 0; at < len; at += subSize) {
            const piece = p(`piece-${block}-${at}`);
            fs.writeFileSync(piece, data.subarray(start + at, start + Math.min(at + subSize, len)));
            // xxhsum -H3 prints `XXH3 (file) = digest`, sha256sum `digest  file`.
            const words = run(tool, flag ? [flag, piece] : [piece]).toString().trim().split(/\s+/);
            want.push(tool === 'xxhsum' ? words[words.length - 1] : words[0]);
            fs.unlinkSync(piece);
          }
          expect(runs[0][block]).toBe(want.join(''));
        }
      }
    } finally {
      await disk.close();
    }
  });

  it('createMetafile writes version 3 with 32 KiB XXH3-64 sub-blocks by default, and version 1 on request', async () => {
    const file = p('small.raw');
    fs.writeFileSync(file, randomBytes(5 << 20));
    const disk = await openDisk(file);
    try {
      const r = await createMetafile(disk);
      expect(r.subBlockSize).toBe(32 << 10);
      const bytes = fs.readFileSync(file + '.blocklist.bin');
      expect(bytes.readUInt32LE(8)).toBe(3);
      // 3 blocks: 17-byte entries and 64 sub-digests of 8 bytes each: 529 bytes per 2 MiB block (0.025%).
      expect(bytes.length).toBe(512 + 3 * 17 + 3 * 512 + 8);
      await createMetafile(disk, { subBlocks: false, target: loc(p('old.bin')) });
      expect(fs.readFileSync(p('old.bin')).readUInt32LE(8)).toBe(1);
      // Blocks no larger than a sub-block get no second level.
      const small = await createMetafile(disk, { blockSize: 32 << 10, target: loc(p('32k.bin')) });
      expect(small.subBlockSize).toBe(0);
    } finally {
      await disk.close();
    }
  });
});
