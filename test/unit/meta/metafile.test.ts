import * as fs from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { localStore } from '../../../src/io/local.js';
import type { Location } from '../../../src/io/location.js';
import { MetafileError } from '../../../src/util/errors.js';
import { crc32c } from '../../../src/util/crc32c.js';
import { serializeHeader, parseHeader, HEADER_SIZE, type MetafileHeader } from '../../../src/meta/header.js';
import { readMetafile, writeMetafile, metafileLocationFor, imageLocationForMetafile, type BlockRecord, type NewMetafile } from '../../../src/meta/metafile.js';
import { restampMetafile } from '../../../src/meta/restamp.js';
import type { BlockState } from '../../../src/meta/entries.js';
import { makeTempDir } from '../../helpers/tmp.js';

const loc = (p: string): Location => ({ store: localStore, path: p });

const identity = { format: 'vhd' as const, contentId: '0123456789abcdef0123456789abcdef', timestamp: 712345678, fileSize: 123456789, mtimeMs: 1763890000123.4567 };

function sampleHeader(over: Partial<MetafileHeader> = {}): MetafileHeader {
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
    sub: null,
    subTableCrc: 0,
    ...over,
  };
}

/** Random entries for a list of `n` blocks. */
function randomRecords(n: number, digestLength: number): BlockRecord[] {
  const states: BlockState[] = ['unallocated', 'zero', 'data'];
  return Array.from({ length: n }, (_, index) => ({ index, state: states[index % 3], digest: randomBytes(digestLength) }));
}

describe('metafile header', () => {
  it('round-trips every field, including a fractional mtime', () => {
    const h = sampleHeader();
    const bytes = serializeHeader(h);
    expect(bytes.length).toBe(HEADER_SIZE);
    expect(bytes.subarray(0, 8).toString('ascii')).toBe('VHDSYNCB');
    expect(parseHeader(bytes, 'm')).toEqual(h);
  });

  const parentIdentity = { format: 'vhdx' as const, contentId: 'a4156192-1c2f-164a-bd95-a9337bbdfc49', timestamp: 7, fileSize: 2 ** 40 + 3, mtimeMs: 1763890000999.25 };

  it('version 2 records a parent identity at offset 172 and round-trips it; without one the file stays version 1', () => {
    const v2 = serializeHeader(sampleHeader({ parentIdentity }));
    expect(v2.readUInt32LE(8)).toBe(2);
    expect(v2.readUInt8(172)).toBe(2);
    expect(v2.toString('utf8', 174, 174 + v2.readUInt8(173))).toBe(parentIdentity.contentId);
    expect(v2.readBigUInt64LE(240)).toBe(BigInt(parentIdentity.fileSize));
    expect(v2.readDoubleLE(248)).toBe(parentIdentity.mtimeMs);
    expect(v2.readUInt32LE(256)).toBe(7);
    expect(v2.subarray(260, 508).every((x) => x === 0)).toBe(true);
    expect(parseHeader(v2, 'm')).toEqual(sampleHeader({ parentIdentity }));
    expect(serializeHeader(sampleHeader()).readUInt32LE(8)).toBe(1);
  });

  it('a version 1 file keeps reading as before: whatever its reserved bytes hold is no parent identity', () => {
    const v1 = serializeHeader(sampleHeader({ parentIdentity }));
    v1.writeUInt32LE(1, 8);
    expect(parseHeader(reseal(v1), 'm').parentIdentity).toBeNull();
    const bad = serializeHeader(sampleHeader({ parentIdentity }));
    bad.writeUInt8(9, 172);
    expect(() => parseHeader(reseal(bad), 'm')).toThrow(/unknown parent image format code 9/);
  });

  it('stores the header checksum as CRC-32C of the header with the field zeroed (independent computation)', () => {
    const bytes = serializeHeader(sampleHeader());
    const copy = Buffer.from(bytes);
    copy.writeUInt32LE(0, 508);
    // 0xE3069283 is the published CRC-32C check value of "123456789": the CRC itself is the Castagnoli one.
    expect(crc32c(Buffer.from('123456789'))).toBe(0xe3069283);
    expect(bytes.readUInt32LE(508)).toBe(crc32c(copy));
  });

  it('refuses any single bit flip in the header', () => {
    const good = serializeHeader(sampleHeader());
    for (let bit = 0; bit < HEADER_SIZE * 8; bit += 7) {
      const bad = Buffer.from(good);
      bad[bit >> 3] ^= 1 << (bit & 7);
      expect(() => parseHeader(bad, 'm')).toThrow(MetafileError);
    }
  });

  /** Re-seals a header after a field was changed, so the field rule (not the checksum) must catch it. */
  function reseal(b: Buffer): Buffer {
    b.writeUInt32LE(0, 508);
    b.writeUInt32LE(crc32c(b), 508);
    return b;
  }

  it.each([
    ['a block count that disagrees with size / block size', (b: Buffer) => b.writeBigUInt64LE(7n, 40), /block count 7 does not match/],
    ['a block size that is not a power of two', (b: Buffer) => b.writeUInt32LE(3 << 20, 20), /power of two/],
    ['a block size below 4 KiB', (b: Buffer) => b.writeUInt32LE(2048, 20), /power of two between/],
    ['a digest length that does not fit the hash', (b: Buffer) => b.writeUInt8(32, 17), /digest length/],
    ['an unknown hash', (b: Buffer) => b.writeUInt8(9, 16), /unknown hash/],
    ['a newer version', (b: Buffer) => b.writeUInt32LE(4, 8), /newer vhdsync/],
    ['version 0', (b: Buffer) => b.writeUInt32LE(0, 8), /unknown metafile version 0/],
    ['an absurd virtual size', (b: Buffer) => b.writeBigUInt64LE(1n << 60n, 32), /out of range/],
    ['a content id length past its field', (b: Buffer) => b.writeUInt8(64, 68), /content id length/],
    ['unknown flags', (b: Buffer) => b.writeUInt8(3, 18), /unknown flags/],
  ])('refuses %s with a clear message', (_what, mutate, message) => {
    const b = serializeHeader(sampleHeader());
    mutate(b);
    expect(() => parseHeader(reseal(b), 'm')).toThrow(message);
  });
});

describe('metafile files', () => {
  let tmp: ReturnType<typeof makeTempDir>;
  beforeAll(() => (tmp = makeTempDir()));
  afterAll(() => tmp.cleanup());
  const p = (name: string) => path.join(tmp.dir, name);

  const meta: NewMetafile = { layout: 'native', algorithm: 'xxh128', blockSize: 4096, logicalSectorSize: 512, virtualSize: 4096 * 37 + 1024, identity };

  it('names metafiles <image>.blocklist.bin and maps them back', () => {
    expect(metafileLocationFor(loc('/a/b.vhdx')).path).toBe('/a/b.vhdx.blocklist.bin');
    expect(imageLocationForMetafile(loc('/a/b.vhdx.blocklist.bin'))?.path).toBe('/a/b.vhdx');
    expect(imageLocationForMetafile(loc('/a/other.bin'))).toBeNull();
  });

  it('writes exactly the specified layout and reads it back, in memory and streaming', async () => {
    const recs = randomRecords(38, 16);
    await writeMetafile(loc(p('a.bin')), meta, recs);
    const bytes = fs.readFileSync(p('a.bin'));
    expect(bytes.length).toBe(512 + 38 * 17 + 8);
    // Entry i: state code then digest, straight after the header.
    recs.forEach((r, i) => {
      expect(bytes[512 + i * 17]).toBe({ unallocated: 0, zero: 1, data: 2 }[r.state]);
      expect(bytes.subarray(512 + i * 17 + 1, 512 + (i + 1) * 17).equals(Buffer.from(r.digest))).toBe(true);
    });
    expect(bytes.readUInt32LE(512 + 38 * 17)).toBe(crc32c(bytes.subarray(512, 512 + 38 * 17)));
    expect(bytes.subarray(-4).toString('ascii')).toBe('LEND');
    for (const memoryLimit of [1 << 20, 0]) {
      const m = await readMetafile(loc(p('a.bin')), { memoryLimit });
      try {
        expect(m.summary).toMatchObject({ layout: 'native', blockCount: 38, blockSize: 4096, virtualSize: meta.virtualSize, identity, algorithm: 'xxh128' });
        expect(m.blockLength(37)).toBe(1024);
        const b = await m.read(5, 10);
        expect(b.count).toBe(10);
        for (let i = 0; i < 10; i++) {
          expect(b.digests.subarray(i * 16, i * 16 + 16).equals(Buffer.from(recs[5 + i].digest))).toBe(true);
        }
        const all: BlockRecord[] = [];
        for await (const r of m.records(7)) all.push({ ...r, digest: Buffer.from(r.digest) });
        expect(all.map((r) => [r.index, r.state, Buffer.from(r.digest).toString('hex')])).toEqual(recs.map((r) => [r.index, r.state, Buffer.from(r.digest).toString('hex')]));
      } finally {
        await m.close();
      }
    }
  });

  it('refuses every truncation with a clear one-line error', async () => {
    await writeMetafile(loc(p('t.bin')), meta, randomRecords(38, 16));
    const whole = fs.readFileSync(p('t.bin'));
    for (const len of [0, 5, 100, 511, 512, 513, 600, whole.length - 9, whole.length - 1]) {
      fs.writeFileSync(p('t2.bin'), whole.subarray(0, len));
      const err = await readMetafile(loc(p('t2.bin'))).catch((e) => e);
      expect(err).toBeInstanceOf(MetafileError);
      expect(err.message).not.toContain('\n');
    }
    fs.writeFileSync(p('t3.bin'), Buffer.concat([whole, Buffer.alloc(3)]));
    await expect(readMetafile(loc(p('t3.bin')))).rejects.toThrow(/trailing bytes/);
  });

  it('refuses a bit flip anywhere in the file (property)', async () => {
    await writeMetafile(loc(p('f.bin')), meta, randomRecords(38, 16));
    const whole = fs.readFileSync(p('f.bin'));
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 0, max: whole.length * 8 - 1 }), async (bit) => {
        const bad = Buffer.from(whole);
        bad[bit >> 3] ^= 1 << (bit & 7);
        fs.writeFileSync(p('f2.bin'), bad);
        const err = await readMetafile(loc(p('f2.bin'))).catch((e) => e);
        expect(err).toBeInstanceOf(MetafileError);
      }),
      { numRuns: 150 },
    );
  });

  it('refuses an incomplete file and names the missing one with the fix', async () => {
    await writeMetafile(loc(p('i.bin')), meta, randomRecords(38, 16));
    const b = fs.readFileSync(p('i.bin'));
    b.writeUInt8(0, 18);
    b.writeUInt32LE(0, 508);
    b.writeUInt32LE(crc32c(b.subarray(0, 512)), 508);
    fs.writeFileSync(p('i.bin'), b);
    await expect(readMetafile(loc(p('i.bin')))).rejects.toThrow(/incomplete/);
    await expect(readMetafile(loc(p('img.raw.blocklist.bin')))).rejects.toThrow(/no metafile \(run vhdsync createmeta .*img\.raw\)/);
  });

  it('allocates nothing from a huge recorded block count: the file length decides first', async () => {
    const h = sampleHeader({ blockSize: 4096, virtualSize: 2 ** 52, blockCount: 2 ** 40 });
    fs.writeFileSync(p('huge.bin'), serializeHeader(h));
    await expect(readMetafile(loc(p('huge.bin')))).rejects.toThrow(/truncated: 512 bytes/);
  });

  it('refuses entries out of order or short and leaves no file behind', async () => {
    const recs = randomRecords(38, 16);
    await expect(writeMetafile(loc(p('o.bin')), meta, recs.slice(0, 37))).rejects.toThrow(/ended at 37/);
    await expect(writeMetafile(loc(p('o.bin')), meta, [recs[1]])).rejects.toThrow(/out of order/);
    expect(fs.readdirSync(tmp.dir).filter((n) => n.startsWith('.o.bin') || n === 'o.bin')).toEqual([]);
  });

  it('restamps a list with a new identity, in place, keeping every entry', async () => {
    const recs = randomRecords(38, 16);
    await writeMetafile(loc(p('r.bin')), meta, recs);
    const fresh = { ...identity, contentId: 'fedcba9876543210fedcba9876543210', mtimeMs: 1763899999000 };
    await restampMetafile(loc(p('r.bin')), loc(p('r.bin')), fresh);
    const m = await readMetafile(loc(p('r.bin')));
    expect(m.summary.identity).toEqual(fresh);
    const b = await m.read(0, 38);
    expect(b.digests.equals(Buffer.concat(recs.map((r) => Buffer.from(r.digest))))).toBe(true);
    expect(Array.from(b.states)).toEqual(recs.map((r) => ({ unallocated: 0, zero: 1, data: 2 })[r.state]));
    await m.close();
  });

  it('writes vbb lists as bare 16-byte digests and recognises them by length', async () => {
    const vbb: NewMetafile = { ...meta, layout: 'vbb', algorithm: 'sha1-16', blockSize: 2 << 20, virtualSize: (6 << 20) + 4096 };
    const recs = randomRecords(4, 16);
    await writeMetafile(loc(p('v.bin')), vbb, recs);
    expect(fs.readFileSync(p('v.bin')).equals(Buffer.concat(recs.map((r) => Buffer.from(r.digest))))).toBe(true);
    const m = await readMetafile(loc(p('v.bin')), { virtualSize: vbb.virtualSize });
    expect(m.summary).toMatchObject({ layout: 'vbb', blockCount: 4, algorithm: 'sha1-16', virtualSizeExact: true, identity: null });
    expect((await m.read(3, 1)).digests.equals(Buffer.from(recs[3].digest))).toBe(true);
    await m.close();
    // The length must fit the image; without an image any multiple of 16 is taken as whole 2 MiB blocks.
    await expect(readMetafile(loc(p('v.bin')), { virtualSize: 20 << 20 })).rejects.toThrow(/not the 160 a VhdBlockBackup list/);
    const loose = await readMetafile(loc(p('v.bin')));
    expect(loose.summary).toMatchObject({ virtualSize: 8 << 20, virtualSizeExact: false });
    await loose.close();
    fs.writeFileSync(p('odd.bin'), Buffer.alloc(17));
    await expect(readMetafile(loc(p('odd.bin')))).rejects.toThrow(/not a multiple of 16/);
  });
});
