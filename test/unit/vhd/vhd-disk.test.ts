import * as fs from 'node:fs';
import * as path from 'node:path';
import { chainOf } from '../../../src/formats/index.js';
import { parseLocation } from '../../../src/io/location.js';
import { AlreadyExistsError, CorruptImageError, ParentError, UnsupportedError, UsageError } from '../../../src/util/errors.js';
import { VhdDisk, vhdDriver } from '../../../src/formats/vhd/vhd-disk.js';
import { localStore } from '../../../src/io/local.js';
import { parseDynamicHeader } from '../../../src/formats/vhd/dynamic-header.js';
import { formatGuidBE } from '../../../src/util/guid.js';
import { makeTempDir } from '../../helpers/tmp.js';
import { makeVhd, open, patchFooter, patchHeader, pattern } from './vhd-test-utils.js';

const MiB = 1 << 20;

describe('VHD images', () => {
  let tmp: ReturnType<typeof makeTempDir>;
  const p = (name: string) => path.join(tmp.dir, name);
  beforeEach(() => (tmp = makeTempDir('vhd-unit-')));
  afterEach(() => tmp.cleanup());

  it('creates a fixed image with only a trailing footer and exact size', async () => {
    const d = await makeVhd(p('f.vhd'), { type: 'fixed', virtualSize: 10 * MiB + 512 });
    await d.write(5, Buffer.from('hello'));
    await d.close();
    expect(fs.statSync(p('f.vhd')).size).toBe(10 * MiB + 1024);
    expect(fs.readFileSync(p('f.vhd')).subarray(0, 16).toString('latin1')).toBe('\0\0\0\0\0hello\0\0\0\0\0\0');
    const r = await open(p('f.vhd'));
    expect(r.format).toBe('vhd');
    expect(r.type).toBe('fixed');
    expect(r.virtualSize).toBe(10 * MiB + 512);
    expect(await r.status(0, r.virtualSize)).toEqual([{ offset: 0, length: r.virtualSize, state: 'data', depth: 0 }]);
    const info = await r.info();
    expect(info).toMatchObject({ format: 'vhd', type: 'fixed', creatorApp: 'win ', creatorHostOs: 'Wi2k', footerChecksum: 'ok' });
    await r.close();
  });

  it('creates a dynamic image whose unallocated blocks read as zeros and are reported unallocated', async () => {
    const d = await makeVhd(p('d.vhd'), { type: 'dynamic', virtualSize: 5 * MiB });
    expect(d.blockSize).toBe(2 * MiB);
    await d.write(2 * MiB + 100, pattern(5000, 1));
    await d.close();
    const r = await open(p('d.vhd'));
    const buf = await r.read(0, 5 * MiB);
    expect(buf.subarray(2 * MiB + 100, 2 * MiB + 5100).equals(pattern(5000, 1))).toBe(true);
    expect(buf.subarray(0, 2 * MiB + 100).every((x) => x === 0)).toBe(true);
    expect(await r.status(0, 5 * MiB)).toEqual([
      { offset: 0, length: 2 * MiB, state: 'unallocated', depth: 0 },
      { offset: 2 * MiB, length: 2 * MiB, state: 'data', depth: 0 },
      { offset: 4 * MiB, length: MiB, state: 'unallocated', depth: 0 },
    ]);
    const id = await r.identity();
    // Plain byte order, as vhdiinfo prints a VHD's Identifier.
    expect(id.contentId).toBe(formatGuidBE((r as VhdDisk).footer.uniqueId));
    expect(id.contentId).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    expect(id.timestamp).toBe((r as VhdDisk).footer.timestamp);
    expect(await r.info()).toMatchObject({ allocatedBlocks: 1, totalBlocks: 3, headerChecksum: 'ok' });
    // Data of new blocks starts 4 KiB-aligned, and the footer copies agree.
    const file = fs.readFileSync(p('d.vhd'));
    expect(file.subarray(0, 512).equals(file.subarray(file.length - 512))).toBe(true);
    const bat0 = file.readUInt32BE(1536 + 4);
    expect(((bat0 * 512 + 512) % 4096)).toBe(0);
    await r.close();
  });

  it('zeroes allocated blocks of a dynamic image and leaves unallocated ones alone', async () => {
    const d = await makeVhd(p('d.vhd'), { type: 'dynamic', virtualSize: 4 * MiB, blockSize: MiB });
    await d.write(0, pattern(MiB, 2));
    await d.writeZeroes(512, 3 * MiB);
    expect((await d.read(0, 4 * MiB)).subarray(512).every((x) => x === 0)).toBe(true);
    expect((await d.read(0, 512)).equals(pattern(512, 2))).toBe(true);
    expect((await d.status(0, 4 * MiB)).map((e) => e.state)).toEqual(['data', 'unallocated']);
    await d.close();
  });

  it('writes a differencing child whose locators point at the parent from its final folder', async () => {
    fs.mkdirSync(p('base'));
    fs.mkdirSync(p('diffs'));
    fs.mkdirSync(p('final'));
    const parent = await makeVhd(p('base/parent.vhd'), { type: 'dynamic', virtualSize: 4 * MiB });
    await parent.write(0, pattern(4 * MiB, 3));
    await parent.close();
    const par = await open(p('base/parent.vhd'));
    const child = await makeVhd(p('diffs/child.vhd'), {
      type: 'differencing',
      parent: par,
      finalLocation: await parseLocation(p('final/child.vhd')),
    });
    expect(child.virtualSize).toBe(4 * MiB);
    await child.write(MiB + 3, Buffer.from('abc'));
    const expected = pattern(4 * MiB, 3);
    Buffer.from('abc').copy(expected, MiB + 3);
    expect((await child.read(0, 4 * MiB)).equals(expected)).toBe(true);
    expect(await child.status(0, 4 * MiB)).toEqual([
      { offset: 0, length: MiB, state: 'data', depth: 1 },
      { offset: MiB, length: 512, state: 'data', depth: 0 },
      { offset: MiB + 512, length: 3 * MiB - 512, state: 'data', depth: 1 },
    ]);
    // ownOnly (merge): the parent is not asked; what the child leaves to it is a depth-1 placeholder.
    expect(await child.status(0, 4 * MiB, { ownOnly: true })).toEqual([
      { offset: 0, length: MiB, state: 'unallocated', depth: 1 },
      { offset: MiB, length: 512, state: 'data', depth: 0 },
      { offset: MiB + 512, length: 3 * MiB - 512, state: 'unallocated', depth: 1 },
    ]);
    const info = await child.info();
    expect(info.parentLocators).toEqual([`W2ku: ${p('base/parent.vhd').replace(/\//g, '\\')}`, 'W2ru: ..\\base\\parent.vhd']);
    expect(info.parentUniqueId).toBe((await par.identity()).contentId);
    expect(info.parentName).toBe('parent.vhd');
    await child.close();
    // Moved to its final folder, the child finds its parent through W2ru.
    fs.renameSync(p('diffs/child.vhd'), p('final/child.vhd'));
    const moved = await open(p('final/child.vhd'));
    expect(chainOf(moved).map((d) => d.location.path)).toEqual([p('final/child.vhd'), p('base/parent.vhd')]);
    expect((await moved.read(0, 4 * MiB)).equals(expected)).toBe(true);
    await moved.close();
  });

  it('keeps the untouched part of a sector from the parent on partial-sector writes and masks the parent with writeZeroes', async () => {
    fs.writeFileSync(p('base.raw'), pattern(3 * MiB, 4));
    const parent = await open(p('base.raw'));
    const child = await makeVhd(p('c.vhd'), { type: 'differencing', parent, blockSize: MiB });
    const model = pattern(3 * MiB, 4);
    const w = async (off: number, data: Buffer) => {
      await child.write(off, data);
      data.copy(model, off);
    };
    await w(700, Buffer.from('xy'));
    await w(MiB - 3, Buffer.from('123456'));
    await child.writeZeroes(2 * MiB + 10, 1000);
    model.fill(0, 2 * MiB + 10, 2 * MiB + 1010);
    expect((await child.read(0, 3 * MiB)).equals(model)).toBe(true);
    await child.close();
    const again = await open(p('c.vhd'));
    expect((await again.read(0, 3 * MiB)).equals(model)).toBe(true);
    expect(again.parent?.format).toBe('raw');
    await again.close();
  });

  it('detects VHDs by content (fixed by its trailing footer, also the old 511-byte one) and leaves other files to raw', async () => {
    const fx = await makeVhd(p('f.vhd'), { type: 'fixed', virtualSize: MiB });
    await fx.write(0, pattern(MiB, 5));
    await fx.close();
    const file = await localStore.open(p('f.vhd'), 'read');
    expect(await vhdDriver.probe(file)).toBe(true);
    await file.close();
    // Old Virtual PC versions wrote a 511-byte footer (the last reserved byte missing).
    fs.truncateSync(p('f.vhd'), MiB + 511);
    const old = await open(p('f.vhd'));
    expect(old.format).toBe('vhd');
    expect((await old.read(0, MiB)).equals(pattern(MiB, 5))).toBe(true);
    await old.close();
    fs.writeFileSync(p('plain.img'), pattern(MiB, 6));
    const plain = await open(p('plain.img'));
    expect(plain.format).toBe('raw');
    await plain.close();
    await expect(open(p('plain.img'), { format: 'vhd' })).rejects.toThrow(/not a VHD/);
  });

  it('shows the last flushed content after a crash before flush, with or without the new trailing footer', async () => {
    fs.writeFileSync(p('base.raw'), pattern(4 * MiB, 11));
    const child = await makeVhd(p('c.vhd'), { type: 'differencing', parent: await open(p('base.raw')), blockSize: MiB });
    const flushed = pattern(4 * MiB, 11);
    await child.write(0, pattern(4096, 12));
    pattern(4096, 12).copy(flushed, 0);
    await child.flush();
    // Unflushed: new sectors in an allocated block, and a new block.
    await child.write(4096, pattern(4096, 13));
    await child.write(2 * MiB, pattern(8192, 14));
    // A crash now: whatever was written reached the disk, nothing more.
    fs.copyFileSync(p('c.vhd'), p('crash.vhd'));
    const size = fs.statSync(p('crash.vhd')).size;
    await child.close();
    for (const cut of [0, 512]) {
      fs.truncateSync(p('crash.vhd'), size - cut);
      const r = await open(p('crash.vhd'));
      expect((await r.read(0, 4 * MiB)).equals(flushed)).toBe(true);
      await r.close();
    }
    const done = await open(p('c.vhd'));
    pattern(4096, 13).copy(flushed, 4096);
    pattern(8192, 14).copy(flushed, 2 * MiB);
    expect((await done.read(0, 4 * MiB)).equals(flushed)).toBe(true);
    await done.close();
  });

  it('refuses bad creation options with clear errors', async () => {
    await expect(makeVhd(p('a.vhd'), { type: 'dynamic', virtualSize: 1000 })).rejects.toThrow(UsageError);
    await expect(makeVhd(p('a.vhd'), { type: 'dynamic', virtualSize: MiB, blockSize: 3 * MiB })).rejects.toThrow(/block size/);
    await expect(makeVhd(p('a.vhd'), { type: 'dynamic', virtualSize: 2041 * 2 ** 30 })).rejects.toThrow(/2040 GiB/);
    await expect(makeVhd(p('a.vhd'), { type: 'fixed', virtualSize: MiB, logicalSectorSize: 4096 })).rejects.toThrow(UnsupportedError);
    await expect(makeVhd(p('a.vhd'), { type: 'differencing' })).rejects.toThrow(/parent/);
    await expect(makeVhd(p('a.vhd'), { type: 'dynamic' })).rejects.toThrow(/size/);
    expect(fs.existsSync(p('a.vhd'))).toBe(false);
    fs.writeFileSync(p('x.vhd'), 'keep');
    await expect(makeVhd(p('x.vhd'), { type: 'dynamic', virtualSize: MiB })).rejects.toThrow(AlreadyExistsError);
    expect(fs.readFileSync(p('x.vhd'), 'utf8')).toBe('keep');
  });

  it('refuses read-only writes', async () => {
    await (await makeVhd(p('d.vhd'), { type: 'dynamic', virtualSize: MiB })).close();
    const r = await open(p('d.vhd'));
    await expect(r.write(0, Buffer.alloc(1))).rejects.toThrow(/not open for writing/);
    await r.close();
  });

  describe('bad input', () => {
    const dyn = async (name = 'd.vhd') => {
      const d = await makeVhd(p(name), { type: 'dynamic', virtualSize: 4 * MiB, blockSize: MiB });
      await d.write(MiB, pattern(MiB, 9));
      await d.close();
      return p(name);
    };

    it('refuses wrong checksums unless told to ignore them', async () => {
      const f = await dyn();
      const bytes = fs.readFileSync(f);
      bytes[bytes.length - 512 + 90] ^= 1; // reserved byte: only the checksum notices
      bytes[90] ^= 1;
      fs.writeFileSync(f, bytes);
      await expect(open(f)).rejects.toThrow(/footer checksum is wrong/);
      await (await open(f, { ignoreChecksums: true })).close();
      patchFooter(f, () => {});
      patchHeader(f, () => {});
      const b2 = fs.readFileSync(f);
      b2[512 + 800] ^= 1;
      fs.writeFileSync(f, b2);
      await expect(open(f)).rejects.toThrow(CorruptImageError);
      await expect(open(f)).rejects.toThrow(/dynamic header checksum/);
    });

    it('refuses truncated files', async () => {
      const f = await dyn();
      fs.truncateSync(f, 1000);
      await expect(open(f)).rejects.toThrow(/dynamic header offset 512 lies outside the file/);
      const g = await dyn('g.vhd');
      fs.truncateSync(g, fs.statSync(g).size - 700 * 1024);
      await expect(open(g)).rejects.toThrow(/BAT entry of block 1 points past the end of the file/);
      fs.writeFileSync(p('tiny.vhd'), Buffer.alloc(100));
      await expect(open(p('tiny.vhd'), { format: 'vhd' })).rejects.toThrow(/too small/);
      const fx = await makeVhd(p('fx.vhd'), { type: 'fixed', virtualSize: MiB });
      await fx.close();
      const bytes = fs.readFileSync(p('fx.vhd'));
      fs.writeFileSync(p('fx.vhd'), Buffer.concat([bytes.subarray(0, 4096), bytes.subarray(bytes.length - 512)]));
      await expect(open(p('fx.vhd'))).rejects.toThrow(/fixed VHD is truncated/);
    });

    it('refuses a BAT entry past the end of the file', async () => {
      const f = await dyn();
      const bytes = fs.readFileSync(f);
      bytes.writeUInt32BE(0x00100000, 1536 + 8);
      fs.writeFileSync(f, bytes);
      await expect(open(f)).rejects.toThrow(/BAT entry of block 2 points past the end of the file/);
    });

    it('refuses absurd block sizes, table sizes and disk sizes before allocating anything', async () => {
      const f = await dyn();
      const orig = fs.readFileSync(f);
      for (const bs of [3 * MiB, 1 << 30, 256, 0]) {
        patchHeader(f, (h) => h.writeUInt32BE(bs >>> 0, 32));
        await expect(open(f)).rejects.toThrow(/unsupported VHD block size/);
        fs.writeFileSync(f, orig);
      }
      patchHeader(f, (h) => h.writeUInt32BE(0xffffffff, 28));
      await expect(open(f)).rejects.toThrow(/extends past the end of the file/);
      fs.writeFileSync(f, orig);
      patchHeader(f, (h) => h.writeUInt32BE(2, 28));
      await expect(open(f)).rejects.toThrow(/BAT has 2 entries but 4 MiB needs 4/);
      fs.writeFileSync(f, orig);
      patchHeader(f, (h) => h.writeBigUInt64BE(1n << 60n, 16));
      await expect(open(f)).rejects.toThrow(CorruptImageError);
      fs.writeFileSync(f, orig);
      patchFooter(f, (ft) => ft.writeBigUInt64BE(1n << 50n, 48));
      await expect(open(f)).rejects.toThrow(/exceeds the format's limit/);
      fs.writeFileSync(f, orig);
      patchFooter(f, (ft) => ft.writeBigUInt64BE(1n << 40n, 16));
      await expect(open(f)).rejects.toThrow(/dynamic header offset/);
    });

    it('reads through the footer copy when the trailing footer is gone, and restores it on flush', async () => {
      const f = await dyn();
      const size = fs.statSync(f).size;
      fs.truncateSync(f, size - 512);
      const r = await open(f);
      expect((await r.read(MiB, MiB)).equals(pattern(MiB, 9))).toBe(true);
      expect((await r.info()).footerSource).toMatch(/copy at offset 0/);
      await r.close();
      const w = await open(f, { writable: true });
      await w.close();
      expect(fs.statSync(f).size).toBe(size);
      const again = await open(f);
      expect((await again.info()).footerSource).toBe('end of file');
      await again.close();
    });

    it('reports a missing parent and a parent that does not match', async () => {
      await (await makeVhd(p('parent.vhd'), { type: 'dynamic', virtualSize: 2 * MiB })).close();
      const par = await open(p('parent.vhd'));
      await (await makeVhd(p('child.vhd'), { type: 'differencing', parent: par })).close();
      fs.renameSync(p('parent.vhd'), p('elsewhere.vhd'));
      await expect(open(p('child.vhd'))).rejects.toThrow(ParentError);
      await expect(open(p('child.vhd'))).rejects.toThrow(/parent image not found.*parent\.vhd/);
      // A different image under the parent's name: its UniqueId does not match.
      await (await makeVhd(p('parent.vhd'), { type: 'dynamic', virtualSize: 2 * MiB })).close();
      await expect(open(p('child.vhd'))).rejects.toThrow(/does not match: child expects ParentUniqueId/);
      const forced = await open(p('child.vhd'), { ignoreParentMismatch: true });
      expect(forced.parent?.location.path).toBe(p('parent.vhd'));
      await forced.close();
    });

    it('detects parent loops', async () => {
      // A child renamed to its parent's name points at itself.
      await (await makeVhd(p('self.vhd'), { type: 'dynamic', virtualSize: MiB })).close();
      const par = await open(p('self.vhd'));
      await (await makeVhd(p('tmp-child.vhd'), { type: 'differencing', parent: par })).close();
      fs.renameSync(p('tmp-child.vhd'), p('self.vhd'));
      await expect(open(p('self.vhd'))).rejects.toThrow(/loops back/);
      // A -> B -> A
      await (await makeVhd(p('a.vhd'), { type: 'dynamic', virtualSize: MiB })).close();
      const a = await open(p('a.vhd'));
      await (await makeVhd(p('b.vhd'), { type: 'differencing', parent: a })).close();
      const b = await open(p('b.vhd'));
      await (await makeVhd(p('a2.vhd'), { type: 'differencing', parent: b })).close();
      fs.renameSync(p('a2.vhd'), p('a.vhd'));
      await expect(open(p('a.vhd'))).rejects.toThrow(ParentError);
      await expect(open(p('a.vhd'))).rejects.toThrow(/loops back/);
    });

    it('parses the header it writes for a differencing child', async () => {
      await (await makeVhd(p('parent.vhd'), { type: 'dynamic', virtualSize: 2 * MiB })).close();
      const par = await open(p('parent.vhd'));
      await (await makeVhd(p('child.vhd'), { type: 'differencing', parent: par })).close();
      const h = parseDynamicHeader(fs.readFileSync(p('child.vhd')).subarray(512, 1536), 'x');
      expect(h.locators.slice(0, 2).map((l) => [l.platformCode, l.dataSpace % 512, l.dataOffset % 512])).toEqual([
        ['W2ku', 0, 0],
        ['W2ru', 0, 0],
      ]);
      expect(h.parentUnicodeName).toBe('parent.vhd');
    });
  });
});
