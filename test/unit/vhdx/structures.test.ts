/** Each VHDX on-disk structure alone: round trips and the checks its parser makes; and how much of the metadata an open reads. */
import * as hdr from '../../../src/formats/vhdx/header.js';
import * as rt from '../../../src/formats/vhdx/region-table.js';
import * as md from '../../../src/formats/vhdx/metadata.js';
import * as pl from '../../../src/formats/vhdx/parent-locator.js';
import * as fid from '../../../src/formats/vhdx/file-identifier.js';
import * as log from '../../../src/formats/vhdx/log.js';
import * as sb from '../../../src/formats/vhdx/sector-bitmap.js';
import { Bat, PAYLOAD, bitmapIndex, geometry, payloadIndex } from '../../../src/formats/vhdx/bat.js';
import { CorruptImageError, UnsupportedError } from '../../../src/util/errors.js';
import { crc32c } from '../../../src/util/crc32c.js';
import { newGuid, parseGuidLE } from '../../../src/util/guid.js';
import { readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import '../../../src/formats/index.js';
import { createDisk } from '../../../src/formats/index.js';
import { METADATA_LENGTH, METADATA_OFFSET } from '../../../src/formats/vhdx/create.js';
import { readLayout } from '../../../src/formats/vhdx/vhdx-disk.js';
import { localStore } from '../../../src/io/local.js';
import { makeTempDir } from '../../helpers/tmp.js';
import { run } from '../../helpers/tools.js';

const MiB = 1 << 20;

const header = (seq: bigint): hdr.VhdxHeader => ({
  sequenceNumber: seq,
  fileWriteGuid: newGuid(),
  dataWriteGuid: newGuid(),
  logGuid: Buffer.alloc(16),
  logVersion: 0,
  version: 1,
  logLength: MiB,
  logOffset: MiB,
});

test('CRC-32C is the Castagnoli polynomial', () => {
  expect(crc32c(Buffer.from('123456789'))).toBe(0xe3069283);
});

describe('file identifier', () => {
  test('round trip and signature check', () => {
    const b = fid.serialize({ creator: 'vhdsync test' });
    expect(b.length).toBe(64 * 1024);
    expect(fid.parse(b).creator).toBe('vhdsync test');
    expect(() => fid.parse(Buffer.alloc(64))).toThrow(CorruptImageError);
  });
});

describe('header', () => {
  test('round trip, checksum, current copy', () => {
    const a = header(5n);
    const parsed = hdr.parse(hdr.serialize(a)) as hdr.VhdxHeader;
    expect(parsed).toEqual(a);
    const bad = hdr.serialize(a);
    bad[100] ^= 1;
    expect(hdr.parse(bad)).toMatch(/checksum/);
    expect(hdr.pickCurrent([a, header(6n)]).slot).toBe(1);
    expect(hdr.pickCurrent([header(7n), header(6n)]).slot).toBe(0);
    expect(hdr.pickCurrent(['bad', a]).header).toBe(a);
    // Disk2vhd writes two identical headers with equal sequence numbers.
    expect(hdr.pickCurrent([a, { ...a }]).header.sequenceNumber).toBe(5n);
    expect(() => hdr.pickCurrent(['x', 'y'])).toThrow(CorruptImageError);
  });

  test('refuses unaligned logs and unknown versions', () => {
    expect(hdr.parse(hdr.serialize({ ...header(1n), logOffset: MiB + 4096 }))).toMatch(/aligned/);
    expect(hdr.parse(hdr.serialize({ ...header(1n), version: 2 }))).toMatch(/version/);
  });
});

describe('region table', () => {
  const regions: rt.Region[] = [
    { guid: rt.BAT_REGION, fileOffset: 3 * MiB, length: MiB, required: true },
    { guid: rt.METADATA_REGION, fileOffset: 2 * MiB, length: MiB, required: true },
  ];
  test('round trip and checksum', () => {
    expect(rt.parse(rt.serialize(regions))).toEqual(regions);
    const bad = rt.serialize(regions);
    bad[60000] = 1;
    expect(rt.parse(bad)).toMatch(/checksum/);
    expect(rt.pickValid([rt.parse(bad), rt.parse(rt.serialize(regions))])).toEqual(regions);
    expect(() => rt.pickValid([rt.parse(bad), rt.parse(bad)])).toThrow(CorruptImageError);
  });
  test('overlaps, unknown required regions, missing regions', () => {
    expect(() => rt.parse(rt.serialize([regions[0], { ...regions[1], fileOffset: 3 * MiB }]))).toThrow(/overlapping/);
    const unknown = { guid: 'aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee', fileOffset: 8 * MiB, length: MiB, required: true };
    expect(() => rt.parse(rt.serialize([...regions, unknown]))).toThrow(UnsupportedError);
    expect(rt.parse(rt.serialize([...regions, { ...unknown, required: false }]))).toHaveLength(3);
    expect(() => rt.parse(rt.serialize([regions[0]]))).toThrow(/metadata/);
  });
});

describe('metadata', () => {
  const meta: md.VhdxMetadata = {
    blockSize: 2 * MiB,
    leaveBlockAllocated: false,
    hasParent: true,
    virtualSize: 10 * MiB,
    logicalSectorSize: 4096,
    physicalSectorSize: 4096,
    page83: newGuid(),
    parentLocator: { type: pl.VHDX_LOCATOR_TYPE, entries: [['parent_linkage', '{11111111-2222-3333-4444-555555555555}'], ['relative_path', '.\\p.vhdx']] },
  };
  test('round trip', () => {
    expect(md.parse(md.serialize(meta))).toEqual(meta);
  });
  test('refuses bad values', () => {
    expect(() => md.parse(md.serialize({ ...meta, blockSize: 3 * MiB }))).toThrow(/power of two/);
    expect(() => md.parse(md.serialize({ ...meta, blockSize: 512 * 1024 }))).toThrow(CorruptImageError);
    expect(() => md.parse(md.serialize({ ...meta, logicalSectorSize: 1024 }))).toThrow(CorruptImageError);
    const huge = md.serialize(meta);
    const sizeItem = md.parseTable(huge).find((e) => e.itemId === '2fa54224-cd1b-4876-b211-5dbed83bf4b8')!;
    huge.writeBigUInt64LE(1n << 63n, sizeItem.offset);
    expect(() => md.parse(huge)).toThrow(/virtual disk size/);
  });
  test('overlapping items, items outside the region, unknown required items', () => {
    const b = md.serialize(meta);
    b.writeUInt32LE(b.readUInt32LE(32 + 16), 64 + 16); // second item at the first one's offset
    expect(() => md.parse(b)).toThrow(/overlapping metadata items/);
    const c = md.serialize(meta);
    c.writeUInt32LE(MiB - 4, 32 + 16);
    expect(() => md.parse(c)).toThrow(/outside the metadata region/);
    const d = md.serialize(meta);
    parseGuidLE('aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee').copy(d, 32 + 5 * 32);
    expect(() => md.parse(d)).toThrow(UnsupportedError);
  });
  test('a zero-length item naming an offset past the bytes read occupies nothing: parsed from the first bytes alone', () => {
    // Found by the fuzzer (vhdx-read): itemsEnd skipped the item, parse counted it and threw a bare Error (a crash).
    const b = md.serialize(meta);
    const head = 128 << 10;
    const user = md.parseTable(b).length; // a user item after the system ones: zero length, offset far past the head
    b.writeUInt16LE(user + 1, 10);
    parseGuidLE('aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee').copy(b, 32 + user * 32);
    b.writeUInt32LE(900 << 10, 32 + user * 32 + 16);
    b.writeUInt32LE(0, 32 + user * 32 + 20);
    b.writeUInt32LE(1, 32 + user * 32 + 24); // IsUser
    expect(md.itemsEnd(b.subarray(0, head))).toBeLessThanOrEqual(head);
    expect(md.parse(b.subarray(0, head), undefined, b.length)).toEqual(meta);
  });
});

test('metadata items past the first 128 KiB of the region: read once, the rest of the region only (qemu agrees)', async () => {
  const tmp = makeTempDir('vhdx-meta-');
  try {
    const file = path.join(tmp.dir, 'far.vhdx');
    const disk = await createDisk(file, { format: 'vhdx', type: 'dynamic', virtualSize: 48 * MiB, blockSize: MiB });
    await disk.close();
    // Move the virtual disk size item to 512 KiB into the metadata region (the table has no checksum).
    const bytes = readFileSync(file);
    const region = bytes.subarray(METADATA_OFFSET, METADATA_OFFSET + METADATA_LENGTH);
    const entry = md.parseTable(region).findIndex((e) => e.itemId === '2fa54224-cd1b-4876-b211-5dbed83bf4b8');
    const at = region.readUInt32LE(32 + entry * 32 + 16);
    region.copy(region, 512 << 10, at, at + 8);
    region.fill(0, at, at + 8);
    region.writeUInt32LE(512 << 10, 32 + entry * 32 + 16);
    writeFileSync(file, bytes);
    expect(JSON.parse(run('qemu-img', ['info', '--output=json', file]).toString())['virtual-size']).toBe(48 * MiB);
    const f = await localStore.open(file, 'read');
    let metaBytesRead = 0;
    const counting = Object.create(f, {
      read: {
        value: (position: number, length: number, into?: Buffer) => {
          const from = Math.max(position, METADATA_OFFSET);
          const to = Math.min(position + length, METADATA_OFFSET + METADATA_LENGTH);
          if (from < to) metaBytesRead += to - from;
          return f.read(position, length, into);
        },
      },
    });
    try {
      const { layout } = await readLayout(counting, file, false);
      expect(layout.meta.virtualSize).toBe(48 * MiB);
      expect(metaBytesRead).toBe(METADATA_LENGTH);
    } finally {
      await f.close();
    }
  } finally {
    tmp.cleanup();
  }
});

describe('parent locator', () => {
  test('round trip and bounds', () => {
    const loc: pl.ParentLocator = { type: pl.VHDX_LOCATOR_TYPE, entries: [['parent_linkage', '{x}'], ['absolute_win32_path', 'C:\\vms\\päth.vhdx']] };
    const b = pl.serialize(loc);
    expect(pl.parse(b)).toEqual(loc);
    expect(pl.locatorValue(loc, 'absolute_win32_path')).toBe('C:\\vms\\päth.vhdx');
    const bad = Buffer.from(b);
    bad.writeUInt32LE(b.length, 20 + 4);
    expect(() => pl.parse(bad)).toThrow(CorruptImageError);
    const many = Buffer.from(b);
    many.writeUInt16LE(5000, 18);
    expect(() => pl.parse(many)).toThrow(/entries/);
  });
});

describe('BAT', () => {
  test('chunk ratios and entry counts follow the spec', () => {
    expect(geometry(MiB, MiB, 512, false).chunkRatio).toBe(4096);
    expect(geometry(MiB, 2 * MiB, 512, false).chunkRatio).toBe(2048);
    expect(geometry(MiB, 32 * MiB, 512, false).chunkRatio).toBe(128);
    expect(geometry(MiB, 32 * MiB, 4096, false).chunkRatio).toBe(1024);
    const g = geometry(10 * 1024 * MiB, 32 * MiB, 512, false); // 320 blocks, cr 128
    expect(g.totalEntries).toBe(320 + 2);
    expect(payloadIndex(g, 128)).toBe(129);
    expect(bitmapIndex(g, 0)).toBe(128);
    const d = geometry(10 * 1024 * MiB, 32 * MiB, 512, true);
    expect(d.totalEntries).toBe(3 * 129);
  });
  test('entries keep state and large offsets', () => {
    const g = geometry(64 * MiB, MiB, 512, false);
    const bat = Bat.empty(g, MiB);
    bat.set(3, { state: PAYLOAD.FULLY_PRESENT, fileOffset: 5 * 1024 ** 4 });
    expect(bat.get(3)).toEqual({ state: 6, fileOffset: 5 * 1024 ** 4 });
    expect(bat.bytes.readBigUInt64LE(24)).toBe((BigInt(5 * 1024 ** 4 / MiB) << 20n) | 6n);
    expect(() => Bat.parse(geometry(1024 ** 4, MiB, 512, false), Buffer.alloc(MiB))).toThrow(CorruptImageError);
  });
});

describe('sector bitmap', () => {
  test('LSB first, runs', () => {
    const b = Buffer.alloc(16);
    sb.setRange(b, 3, 21);
    expect(b[0]).toBe(0b11111000);
    expect(b[1]).toBe(0xff);
    expect(b[2]).toBe(0b00011111);
    expect(sb.isSet(b, 2)).toBe(false);
    expect(sb.isSet(b, 3)).toBe(true);
    expect(sb.runEnd(b, 0, 128)).toBe(3);
    expect(sb.runEnd(b, 3, 128)).toBe(21);
    expect(sb.runEnd(b, 21, 128)).toBe(128);
    expect(sb.runEnd(b, 5, 10)).toBe(10);
  });
});

describe('log', () => {
  const guid = newGuid();
  const sector = (v: number) => {
    const b = Buffer.alloc(4096, v);
    b.writeUInt32LE(0xdeadbeef, 0); // the leading and trailing bytes travel in the descriptor
    b.writeUInt32LE(0xcafef00d, 4092);
    return b;
  };
  const entry = (seq: bigint, tail: number, changes: log.LogChange[], g = guid) =>
    log.serializeEntry({ sequenceNumber: seq, tail, logGuid: g, flushedFileOffset: 8 * MiB, lastFileOffset: 9 * MiB, changes });
  const place = (logBuf: Buffer, at: number, e: Buffer) => {
    for (const [o, piece] of log.placeInLog(logBuf.length, at, e)) piece.copy(logBuf, o);
  };

  test('entry round trip with data and zero descriptors', () => {
    const buf = Buffer.alloc(MiB);
    const e = entry(7n, 0, [{ kind: 'data', fileOffset: 3 * MiB, data: sector(1) }, { kind: 'zero', fileOffset: 4 * MiB, length: 8192 }]);
    expect(e.length).toBe(log.entryLength(1, 1));
    place(buf, 0, e);
    const p = log.parseEntryAt(buf, 0, guid)!;
    expect(p.sequenceNumber).toBe(7n);
    expect(p.changes[0]).toEqual({ kind: 'data', fileOffset: 3 * MiB, data: sector(1) });
    expect(p.changes[1]).toEqual({ kind: 'zero', fileOffset: 4 * MiB, length: 8192 });
    expect(log.parseEntryAt(buf, 0, newGuid())).toBeNull();
  });

  test('active sequence: highest head, from its tail; torn and out-of-sequence entries end a run', () => {
    const buf = Buffer.alloc(MiB);
    const e1 = entry(10n, 0, [{ kind: 'data', fileOffset: 3 * MiB, data: sector(1) }]);
    const e2 = entry(11n, 0, [{ kind: 'data', fileOffset: 3 * MiB, data: sector(2) }]);
    place(buf, 0, e1);
    place(buf, e1.length, e2);
    let seq = log.findActiveSequence(buf, guid)!;
    expect(seq.map((e) => e.sequenceNumber)).toEqual([10n, 11n]);
    // A torn third entry (its data sector never written) does not count.
    const e3 = entry(12n, 0, [{ kind: 'data', fileOffset: 3 * MiB, data: sector(3) }]);
    place(buf, e1.length + e2.length, e3.subarray(0, 4096));
    seq = log.findActiveSequence(buf, guid)!;
    expect(seq[seq.length - 1].sequenceNumber).toBe(11n);
    // An out-of-sequence entry right after starts no longer run than its own.
    const e9 = entry(30n, e1.length + e2.length, [{ kind: 'zero', fileOffset: 5 * MiB, length: 4096 }]);
    place(buf, e1.length + e2.length, e9);
    seq = log.findActiveSequence(buf, guid)!;
    expect(seq.map((e) => e.sequenceNumber)).toEqual([30n]);
    // A head whose tail is outside its run is no valid sequence.
    const lone = Buffer.alloc(MiB);
    place(lone, 8192, entry(5n, 0, [{ kind: 'zero', fileOffset: 5 * MiB, length: 4096 }]));
    expect(log.findActiveSequence(lone, guid)).toBeNull();
    expect(log.findActiveSequence(Buffer.alloc(MiB), guid)).toBeNull();
  });

  test('entries wrap around the end of the log', () => {
    const buf = Buffer.alloc(MiB);
    const e = entry(3n, MiB - 4096, [{ kind: 'data', fileOffset: 3 * MiB, data: sector(9) }, { kind: 'data', fileOffset: 3 * MiB + 4096, data: sector(8) }]);
    place(buf, MiB - 4096, e);
    const seq = log.findActiveSequence(buf, guid)!;
    expect(seq).toHaveLength(1);
    expect(seq[0].changes.map((c) => (c.kind === 'data' ? c.data[100] : -1))).toEqual([9, 8]);
  });
});

test('a log packed with valid entries is searched quickly', () => {
  const guid = newGuid();
  const len = 16 * MiB;
  const buf = Buffer.alloc(len);
  for (let i = 0; i < len / 4096; i++) {
    log.serializeEntry({ sequenceNumber: BigInt(i + 1), tail: 0, logGuid: guid, flushedFileOffset: 0, lastFileOffset: 0, changes: [] }).copy(buf, i * 4096);
  }
  const t0 = Date.now();
  const seq = log.findActiveSequence(buf, guid)!;
  expect(seq).toHaveLength(len / 4096);
  expect(Date.now() - t0).toBeLessThan(10000);
});
