/** Damaged VHDX files: each fails with one clear CorruptImageError, never a hang or a stack of unrelated errors. */
import { closeSync, openSync, readFileSync, readSync, statSync, truncateSync, writeSync } from 'node:fs';
import * as path from 'node:path';
import { openDisk, createDisk } from '../../../src/formats/index.js';
import * as hdr from '../../../src/formats/vhdx/header.js';
import * as rt from '../../../src/formats/vhdx/region-table.js';
import * as log from '../../../src/formats/vhdx/log.js';
import { CorruptImageError, UnsupportedError } from '../../../src/util/errors.js';
import { newGuid } from '../../../src/util/guid.js';
import { makeTempDir } from '../../helpers/tmp.js';

const MiB = 1 << 20;
// Layout of the images createDisk makes: log at 1 MiB, metadata at 2 MiB, BAT at 3 MiB.
const LOG = MiB;
const METADATA = 2 * MiB;
const BAT = 3 * MiB;

const tmp = makeTempDir('vhdx-bad-');
afterAll(() => tmp.cleanup());
let n = 0;

/** A small dynamic image with two allocated blocks. */
async function image(): Promise<string> {
  const p = path.join(tmp.dir, `img-${n++}.vhdx`);
  const d = await createDisk(p, { format: 'vhdx', type: 'dynamic', virtualSize: 8 * MiB, blockSize: MiB });
  await d.write(0, Buffer.alloc(4096, 0x11));
  await d.write(5 * MiB, Buffer.alloc(8192, 0x22));
  await d.close();
  return p;
}

function poke(file: string, offset: number, bytes: Buffer): void {
  const fd = openSync(file, 'r+');
  writeSync(fd, bytes, 0, bytes.length, offset);
  closeSync(fd);
}

function peek(file: string, offset: number, length: number): Buffer {
  const fd = openSync(file, 'r');
  const b = Buffer.alloc(length);
  readSync(fd, b, 0, length, offset);
  closeSync(fd);
  return b;
}

/** Rewrites both headers with `patch` (checksums recomputed). */
function patchHeaders(file: string, patch: Partial<hdr.VhdxHeader>): void {
  for (const off of hdr.HEADER_OFFSETS) {
    const h = hdr.parse(peek(file, off, 4096)) as hdr.VhdxHeader;
    poke(file, off, hdr.serialize({ ...h, ...patch }));
  }
}

async function expectCorrupt(file: string, pattern: RegExp): Promise<void> {
  const err = await openDisk(file).then(
    async (d) => {
      await d.close();
      return null;
    },
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(CorruptImageError);
  const e = err as CorruptImageError;
  expect(e.message).toMatch(pattern);
  expect(e.message).not.toContain('\n');
  expect(e.subject).toBe(file);
}

test('both headers corrupt; one corrupt header is tolerated', async () => {
  const p = await image();
  poke(p, hdr.HEADER_OFFSETS[1] + 200, Buffer.from([1]));
  const d = await openDisk(p);
  expect((await d.read(0, 4096)).equals(Buffer.alloc(4096, 0x11))).toBe(true);
  await d.close();
  poke(p, hdr.HEADER_OFFSETS[0] + 200, Buffer.from([1]));
  await expectCorrupt(p, /both VHDX headers are invalid/);
});

test('both region tables corrupt; a corrupt first table falls back to the second', async () => {
  const p = await image();
  poke(p, rt.REGION_TABLE_OFFSETS[0] + 100, Buffer.from([7]));
  const d = await openDisk(p);
  expect((await d.read(5 * MiB, 8192)).equals(Buffer.alloc(8192, 0x22))).toBe(true);
  await d.close();
  poke(p, rt.REGION_TABLE_OFFSETS[1] + 100, Buffer.from([7]));
  await expectCorrupt(p, /both VHDX region tables are invalid/);
});

test('overlapping regions and regions past the end of the file', async () => {
  const p = await image();
  const overlapping = rt.serialize([
    { guid: rt.BAT_REGION, fileOffset: BAT, length: MiB, required: true },
    { guid: rt.METADATA_REGION, fileOffset: BAT, length: MiB, required: true },
  ]);
  for (const o of rt.REGION_TABLE_OFFSETS) poke(p, o, overlapping);
  await expectCorrupt(p, /overlapping regions/);
  const q = await image();
  const past = rt.serialize([
    { guid: rt.BAT_REGION, fileOffset: 1024 * MiB, length: MiB, required: true },
    { guid: rt.METADATA_REGION, fileOffset: METADATA, length: MiB, required: true },
  ]);
  for (const o of rt.REGION_TABLE_OFFSETS) poke(q, o, past);
  await expectCorrupt(q, /past the end of the file/);
});

test('overlapping metadata items', async () => {
  const p = await image();
  // Point the second table entry at the first one's item.
  const first = peek(p, METADATA + 32 + 16, 4);
  poke(p, METADATA + 64 + 16, first);
  await expectCorrupt(p, /overlapping metadata items/);
});

test('non-power-of-two block size and virtual sizes that overflow', async () => {
  const p = await image();
  const offsetOf = (i: number) => peek(p, METADATA + 32 + i * 32 + 16, 4).readUInt32LE(0);
  const bs = Buffer.alloc(4);
  bs.writeUInt32LE(3 * MiB);
  poke(p, METADATA + offsetOf(0), bs);
  await expectCorrupt(p, /power of two/);
  const q = await image();
  const huge = Buffer.alloc(8);
  huge.writeBigUInt64LE(0xffffffffffffff00n);
  poke(q, METADATA + offsetOf(1), huge);
  await expectCorrupt(q, /virtual disk size/);
});

test('BAT entries past the end of the file', async () => {
  const p = await image();
  const e = Buffer.alloc(8);
  e.writeBigUInt64LE((1024n * 1024n << 20n) | 6n); // FULLY_PRESENT at 1 TiB
  poke(p, BAT, e);
  await expectCorrupt(p, /outside the file/);
});

test('a file smaller than the header area or not VHDX at all', async () => {
  const p = await image();
  truncateSync(p, 300 * 1024);
  await expectCorrupt(p, /smaller than the 1 MiB/);
});

test('torn or missing log entries with LogGuid set', async () => {
  const p = await image();
  const guid = newGuid();
  patchHeaders(p, { logGuid: guid });
  await expectCorrupt(p, /no valid entry sequence/);
  // A torn entry: header sector written, its data sector not.
  const data = Buffer.alloc(4096, 0x33);
  const entry = log.serializeEntry({ sequenceNumber: 1n, tail: 0, logGuid: guid, flushedFileOffset: MiB, lastFileOffset: MiB, changes: [{ kind: 'data', fileOffset: BAT, data }] });
  poke(p, LOG, entry.subarray(0, 4096));
  await expectCorrupt(p, /no valid entry sequence/);
  // Complete, but claiming a file longer than this one: the file was truncated after the entry was written.
  const long = log.serializeEntry({ sequenceNumber: 1n, tail: 0, logGuid: guid, flushedFileOffset: 1024 * MiB, lastFileOffset: 1024 * MiB, changes: [{ kind: 'data', fileOffset: BAT, data }] });
  poke(p, LOG, long);
  await expectCorrupt(p, /truncated/);
});

test('unknown required regions are refused as unsupported', async () => {
  const p = await image();
  const table = rt.serialize([
    { guid: rt.BAT_REGION, fileOffset: BAT, length: MiB, required: true },
    { guid: rt.METADATA_REGION, fileOffset: METADATA, length: MiB, required: true },
    { guid: '01234567-89ab-cdef-0123-456789abcdef', fileOffset: 64 * MiB, length: MiB, required: true },
  ]);
  for (const o of rt.REGION_TABLE_OFFSETS) poke(p, o, table);
  await expect(openDisk(p)).rejects.toBeInstanceOf(UnsupportedError);
});

describe('log replay of a crafted entry (data and zero descriptors, file extension)', () => {
  test('read-only: replayed in memory, file untouched; writable: replayed in place and the log cleared', async () => {
    const p = await image();
    const blockAt = Number(peek(p, BAT, 8).readBigUInt64LE(0) >> 20n) * MiB;
    const size = statSync(p).size;
    const sector = Buffer.alloc(4096, 0x77);
    sector.write('LEAD', 0);
    sector.write('TAIL', 4092);
    const guid = newGuid();
    const entry = log.serializeEntry({
      sequenceNumber: 42n,
      tail: 0,
      logGuid: guid,
      flushedFileOffset: size,
      lastFileOffset: size + 3 * MiB,
      changes: [
        { kind: 'zero', fileOffset: blockAt, length: 4096 },
        { kind: 'data', fileOffset: blockAt + 8192, data: sector },
      ],
    });
    poke(p, LOG, entry);
    patchHeaders(p, { logGuid: guid });
    const before = readFileSync(p);

    const ro = await openDisk(p);
    expect((await ro.read(0, 4096)).equals(Buffer.alloc(4096))).toBe(true);
    expect((await ro.read(8192, 4096)).equals(sector)).toBe(true);
    expect((await ro.info()).logState).toMatch(/replayed 1 entries in memory/);
    await expect(ro.write(0, Buffer.alloc(512))).rejects.toThrow(/read-only/);
    await ro.close();
    expect(readFileSync(p).equals(before)).toBe(true);

    const rw = await openDisk(p, { writable: true });
    expect((await rw.read(8192, 4096)).equals(sector)).toBe(true);
    await rw.close();
    expect(statSync(p).size).toBe(size + 3 * MiB);
    const again = await openDisk(p);
    const info = await again.info();
    expect(info.logState).toBe('empty');
    expect(info.logGuid).toBe('00000000-0000-0000-0000-000000000000');
    expect((await again.read(0, 12288)).equals(Buffer.concat([Buffer.alloc(8192), sector]))).toBe(true);
    await again.close();
  });
});

describe('crafted logs and layouts found in review', () => {
  test('a zero descriptor past the end of the file extends it with a hole, never by writing zeros', async () => {
    const p = await image();
    const size = statSync(p).size;
    const guid = newGuid();
    const huge = 2 ** 40;
    poke(p, LOG, log.serializeEntry({
      sequenceNumber: 7n,
      tail: 0,
      logGuid: guid,
      flushedFileOffset: size,
      lastFileOffset: size + huge,
      changes: [{ kind: 'zero', fileOffset: size, length: huge }],
    }));
    patchHeaders(p, { logGuid: guid });
    const rw = await openDisk(p, { writable: true });
    await rw.close();
    // The file now claims 1 TiB, but as a hole: next to nothing was written.
    expect(statSync(p).size).toBe(size + huge);
    expect(statSync(p).blocks * 512).toBeLessThan(size + 64 * MiB);
  });

  test('a log that says the file extends past any possible VHDX is refused', async () => {
    const p = await image();
    const size = statSync(p).size;
    const guid = newGuid();
    poke(p, LOG, log.serializeEntry({ sequenceNumber: 7n, tail: 0, logGuid: guid, flushedFileOffset: size, lastFileOffset: 2 ** 50, changes: [] }));
    patchHeaders(p, { logGuid: guid });
    await expect(openDisk(p)).rejects.toThrow(/more than any VHDX needs/);
  });

  test('a log region past the end of the file is refused, so no block is ever allocated over it', async () => {
    const p = await image();
    patchHeaders(p, { logOffset: statSync(p).size });
    await expect(openDisk(p, { writable: true })).rejects.toThrow(/region log .* lies past the end of the file/);
  });
});
