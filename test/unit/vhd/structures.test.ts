import { localStore } from '../../../src/io/local.js';
import type { Location } from '../../../src/io/location.js';
import { CorruptImageError } from '../../../src/util/errors.js';
import { batBytes, emptyBatBytes, parseBat, serializeBat, UNALLOCATED } from '../../../src/formats/vhd/bat.js';
import { vhdChecksum } from '../../../src/formats/vhd/checksum.js';
import { parseDynamicHeader, serializeDynamicHeader } from '../../../src/formats/vhd/dynamic-header.js';
import { parseFooter, serializeFooter, MAX_VHD_SIZE, type VhdFooter } from '../../../src/formats/vhd/footer.js';
import { chsBytes, chsForSize, virtualSizeOf } from '../../../src/formats/vhd/geometry.js';
import {
  checkLocatorBounds,
  decodeLocatorData,
  encodeWindowsPath,
  parentCandidates,
  parseLocatorEntry,
  serializeLocatorEntry,
  windowsAbsolutePath,
  windowsRelativePath,
} from '../../../src/formats/vhd/parent-locator.js';
import { bitmapBytes, isSectorSet, sectorRuns, setSectors } from '../../../src/formats/vhd/sector-bitmap.js';

const footerFields = (): Omit<VhdFooter, 'checksum' | 'checksumOk'> => ({
  features: 2,
  formatVersion: 0x10000,
  dataOffset: 512,
  timestamp: 0x2719_8e1b,
  creatorApp: 'win ',
  creatorVersion: 0xa0000,
  creatorHostOs: 0x5769326b,
  originalSize: 4 << 20,
  currentSize: 4 << 20,
  geometry: { cylinders: 120, heads: 4, sectorsPerTrack: 17 },
  diskType: 'differencing',
  uniqueId: Buffer.from('fffff02cf84f1636cd9e9041a69edcc2', 'hex'),
  savedState: 0,
});

describe('VHD footer', () => {
  it('round-trips and computes the checksum as the spec defines it', () => {
    const bytes = serializeFooter(footerFields());
    expect(bytes.length).toBe(512);
    expect(bytes.toString('latin1', 0, 8)).toBe('conectix');
    const f = parseFooter(bytes, 'x');
    expect(f).toMatchObject({ ...footerFields(), checksumOk: true });
    // One's complement of the byte sum, checksum field excluded.
    let sum = 0;
    for (let i = 0; i < 512; i++) if (i < 64 || i >= 68) sum += bytes[i];
    expect(f.checksum).toBe(~sum >>> 0);
    expect(serializeFooter(f).equals(bytes)).toBe(true);
  });

  it('records a fixed image data offset as all ones', () => {
    const bytes = serializeFooter({ ...footerFields(), diskType: 'fixed', dataOffset: null });
    expect(bytes.subarray(16, 24).equals(Buffer.alloc(8, 0xff))).toBe(true);
    expect(parseFooter(bytes, 'x').dataOffset).toBeNull();
  });

  it('refuses a wrong checksum unless told to ignore it', () => {
    const bytes = serializeFooter(footerFields());
    bytes[100] ^= 1;
    expect(() => parseFooter(bytes, 'f.vhd')).toThrow(CorruptImageError);
    expect(() => parseFooter(bytes, 'f.vhd')).toThrow(/footer checksum is wrong/);
    expect(parseFooter(bytes, 'f.vhd', { ignoreChecksums: true }).checksumOk).toBe(false);
  });

  it('refuses a missing cookie, an unknown disk type and sizes beyond the format', () => {
    const noCookie = serializeFooter(footerFields());
    noCookie[0] = 0x43;
    expect(() => parseFooter(noCookie, 'x')).toThrow(/cookie/);
    const badType = serializeFooter(footerFields());
    badType.writeUInt32BE(5, 60);
    badType.writeUInt32BE(vhdChecksum(badType, 64), 64);
    expect(() => parseFooter(badType, 'x')).toThrow(/disk type 5/);
    const huge = serializeFooter({ ...footerFields(), currentSize: MAX_VHD_SIZE + 512 });
    expect(() => parseFooter(huge, 'x')).toThrow(/2040 GiB/);
    const absurd = serializeFooter(footerFields());
    absurd.writeBigUInt64BE(0xfffffffffff00000n, 48);
    absurd.writeUInt32BE(vhdChecksum(absurd, 64), 64);
    expect(() => parseFooter(absurd, 'x')).toThrow(CorruptImageError);
    expect(() => parseFooter(Buffer.alloc(100), 'x')).toThrow(/truncated/);
  });
});

describe('VHD CHS geometry (spec appendix)', () => {
  it.each([
    // size, C, H, S: values found in real images (Windows, Hyper-V, qemu) and the algorithm's branches
    [10 << 20, 301, 4, 17],
    [4 << 20, 120, 4, 17],
    [4212736, 121, 4, 17],
    [104448, 3, 4, 17],
    [136365211648, 65278, 16, 255],
    [10 * 2 ** 30, 20805, 16, 63],
    [1 * 2 ** 30, 2080, 16, 63],
    [200 << 20, 825, 16, 31],
    [2040 * 2 ** 30, 65535, 16, 255],
  ])('%d bytes -> %d/%d/%d', (size, c, h, s) => {
    expect(chsForSize(size)).toEqual({ cylinders: c, heads: h, sectorsPerTrack: s });
  });

  it('sizes Virtual PC / Virtual Server images by CHS, every other creator by current_size, unless overridden', () => {
    const g = chsForSize(10 * 2 ** 30);
    expect(chsBytes(g)).toBe(20971440 * 512);
    for (const creator of ['vpc ', 'vs  ']) {
      expect(virtualSizeOf(creator, g, 10 * 2 ** 30)).toBe(20971440 * 512);
      expect(virtualSizeOf(creator, g, 10 * 2 ** 30, 'current')).toBe(10 * 2 ** 30);
    }
    for (const creator of ['win ', 'qem2', 'qemu', 'd2v ', 'CTXS', 'tap\0', 'caml', 'xo  ', 'vbox', 'zzzz']) {
      expect(virtualSizeOf(creator, g, 10 * 2 ** 30)).toBe(10 * 2 ** 30);
      expect(virtualSizeOf(creator, g, 10 * 2 ** 30, 'chs')).toBe(20971440 * 512);
    }
    // A saturated or empty geometry describes no size: current_size whatever the rule.
    expect(virtualSizeOf('win ', { cylinders: 0, heads: 0, sectorsPerTrack: 0 }, 1 << 20, 'chs')).toBe(1 << 20);
    expect(virtualSizeOf('vpc ', { cylinders: 65535, heads: 16, sectorsPerTrack: 255 }, 3e12 - 512, 'chs')).toBe(3e12 - 512);
    expect(virtualSizeOf('vpc ', { cylinders: 65535, heads: 16, sectorsPerTrack: 255 }, 3e12 - 512)).toBe(3e12 - 512);
  });
});

describe('VHD dynamic header', () => {
  const fields = () => ({
    tableOffset: 1536,
    headerVersion: 0x10000,
    maxTableEntries: 2,
    blockSize: 2 << 20,
    parentUniqueId: Buffer.from('d49c5c80350a4a89898a5ad6d10f6578', 'hex'),
    parentTimestamp: 1234,
    parentUnicodeName: 'päre nt.vhd',
    locators: [
      { platformCode: 'W2ku', dataSpace: 4096, dataLength: 84, dataOffset: 4096 },
      { platformCode: 'W2ru', dataSpace: 65536, dataLength: 32, dataOffset: 12288 },
      ...Array.from({ length: 6 }, () => ({ platformCode: '', dataSpace: 0, dataLength: 0, dataOffset: 0 })),
    ],
  });

  it('round-trips, with the parent name in UTF-16BE', () => {
    const bytes = serializeDynamicHeader(fields());
    expect(bytes.length).toBe(1024);
    expect(bytes.toString('latin1', 0, 8)).toBe('cxsparse');
    expect(bytes.subarray(64, 66).equals(Buffer.from([0, 0x70]))).toBe(true); // 'p' big-endian
    const h = parseDynamicHeader(bytes, 'x');
    expect(h).toMatchObject({ ...fields(), checksumOk: true });
    expect(serializeDynamicHeader(h).equals(bytes)).toBe(true);
  });

  it('refuses a wrong checksum or cookie unless checksums are ignored', () => {
    const bytes = serializeDynamicHeader(fields());
    bytes[30] ^= 0x10;
    expect(() => parseDynamicHeader(bytes, 'x')).toThrow(/dynamic header checksum is wrong/);
    expect(parseDynamicHeader(bytes, 'x', { ignoreChecksums: true }).checksumOk).toBe(false);
    const cookie = serializeDynamicHeader(fields());
    cookie[0] = 0;
    expect(() => parseDynamicHeader(cookie, 'x')).toThrow(/cxsparse/);
  });
});

describe('VHD parent locators', () => {
  const child = (p: string): Location => ({ store: localStore, path: p });

  it('round-trips entries and path data (UTF-16LE for Windows, a file URL for MacX)', () => {
    const e = { platformCode: 'W2ru', dataSpace: 512, dataLength: 32, dataOffset: 0x3000 };
    expect(parseLocatorEntry(serializeLocatorEntry(e), 'x')).toEqual(e);
    expect(encodeWindowsPath('.\\fat-parent.vhd').equals(Buffer.from('.\\fat-parent.vhd', 'utf16le'))).toBe(true);
    expect(decodeLocatorData('W2ru', Buffer.concat([encodeWindowsPath('.\\a b.vhd'), Buffer.alloc(6)]))).toBe('.\\a b.vhd');
    expect(decodeLocatorData('MacX', Buffer.from('file://localhost/Users/me/My%20Disk.vhd'))).toBe('/Users/me/My Disk.vhd');
  });

  it('refuses locator data outside the file or longer than any path', () => {
    expect(() => checkLocatorBounds({ platformCode: 'W2ru', dataSpace: 512, dataLength: 100, dataOffset: 1000 }, 1, 1050, 'x')).toThrow(/outside the file/);
    expect(() => checkLocatorBounds({ platformCode: 'W2ku', dataSpace: 512, dataLength: 1 << 20, dataOffset: 0 }, 0, 1 << 30, 'x')).toThrow(CorruptImageError);
  });

  it('looks for the parent by W2ru, then W2ku (as is and next to the child), then the unicode name', () => {
    const c = parentCandidates(child('/data/vms/child.vhd'), [
      { source: 'ParentUnicodeName', path: 'C:\\old\\name.vhd' },
      { source: 'W2ku', path: 'C:\\Projects\\base.vhd' },
      { source: 'W2ru', path: '..\\bases\\base.vhd' },
    ]);
    expect(c.map((l) => l.path)).toEqual(['/data/bases/base.vhd', '/data/vms/base.vhd', '/data/vms/name.vhd']);
    const posix = parentCandidates(child('/a/c.vhd'), [{ source: 'W2ku', path: '\\srv\\p.vhd' }]);
    expect(posix.map((l) => l.path)).toEqual(['/srv/p.vhd', '/a/p.vhd']);
    const mac = parentCandidates(child('/a/c.vhd'), [{ source: 'MacX', path: '/Users/me/base.vhd' }]);
    expect(mac.map((l) => l.path)).toEqual(['/Users/me/base.vhd', '/a/base.vhd']);
  });

  it('computes Windows-style relative and absolute paths from the child\'s final folder', () => {
    expect(windowsRelativePath(child('/t/child.vhd'), child('/t/parent.vhd'))).toBe('.\\parent.vhd');
    expect(windowsRelativePath(child('/t/diffs/child.vhd'), child('/t/base/parent.vhd'))).toBe('..\\base\\parent.vhd');
    expect(windowsAbsolutePath(child('/t/base/parent.vhd'))).toBe('\\t\\base\\parent.vhd');
  });
});

describe('VHD BAT and sector bitmap', () => {
  it('round-trips the BAT, padded to a sector with unallocated entries', () => {
    const bat = Uint32Array.from([UNALLOCATED, 3, 0x9f, UNALLOCATED]);
    const bytes = serializeBat(bat);
    expect(bytes.readUInt32BE(4)).toBe(3);
    expect(parseBat(bytes, 4, 'x')).toEqual(bat);
    expect(batBytes(129)).toBe(1024);
    expect(emptyBatBytes(3).equals(Buffer.alloc(512, 0xff))).toBe(true);
    expect(() => parseBat(Buffer.alloc(8), 3, 'x')).toThrow(/truncated/);
  });

  it('is MSB-first and splits into runs', () => {
    expect(bitmapBytes(2 << 20)).toBe(512);
    expect(bitmapBytes(512)).toBe(512);
    expect(bitmapBytes(256 << 20)).toBe(65536);
    const bm = Buffer.alloc(512);
    setSectors(bm, 0, 1);
    expect(bm[0]).toBe(0x80);
    setSectors(bm, 7, 13);
    expect([...bm.subarray(0, 3)]).toEqual([0x81, 0xff, 0xf0]);
    expect(isSectorSet(bm, 19) && !isSectorSet(bm, 20) && !isSectorSet(bm, 1)).toBe(true);
    expect(sectorRuns(bm, 0, 64)).toEqual([
      { first: 0, count: 1, present: true },
      { first: 1, count: 6, present: false },
      { first: 7, count: 13, present: true },
      { first: 20, count: 44, present: false },
    ]);
    expect(sectorRuns(bm, 10, 5)).toEqual([{ first: 10, count: 5, present: true }]);
  });
});
