/** Broken streams are refused with one clear reason each, before or while reading, never silently. */
import { diskContent } from '../../../src/stream/content.js';
import { encode } from '../../../src/stream/encode.js';
import { applyChunked, writeContentOnto } from '../../../src/stream/apply.js';
import { frameHeader } from '../../../src/stream/chunked.js';
import { vhdStreamContent } from '../../../src/stream/vhd-stream-source.js';
import { serializeFooter, parseFooter } from '../../../src/formats/vhd/footer.js';
import { parseDynamicHeader, serializeDynamicHeader } from '../../../src/formats/vhd/dynamic-header.js';
import { installAllocationCap, withAllocationCap } from '../../fuzz/guards.js';
import { CorruptImageError } from '../../../src/util/errors.js';
import { MemDisk } from '../sync/mem-disk.js';
import { collect, MIB, patternBytes, readerOf } from './helpers.js';

/** A 5 MiB disk with data in blocks 0 and 2, as a VHD stream. */
async function vhdStream(): Promise<{ disk: MemDisk; bytes: Buffer }> {
  const disk = new MemDisk(5 * MIB);
  await disk.write(4096, patternBytes(8192, 1));
  await disk.write(4 * MIB + 512, patternBytes(1024, 2));
  return { disk, bytes: await collect(await encode('vhd', await diskContent(disk))) };
}

async function decode(bytes: Buffer, length: number | null = null): Promise<MemDisk> {
  const back = new MemDisk(5 * MIB);
  await writeContentOnto(await vhdStreamContent(readerOf(bytes, { length })), back, { fresh: true });
  return back;
}

describe('VHD stream bad input', () => {
  it('truncated anywhere: refused', async () => {
    const { bytes } = await vhdStream();
    for (const cut of [100, 700, 2100, 2560 + 1000, bytes.length - 512 - 1, bytes.length - 1]) {
      await expect(decode(bytes.subarray(0, cut))).rejects.toThrow(/truncated/);
    }
  });

  it('a header naming 256 MiB blocks over a stream that stops short: refused as truncated, with memory sized by what arrived', async () => {
    // Found by the fuzzer (vhd-stream): the block buffer was allocated at the header's block size before any of it
    // arrived. One block (block 0) keeps the head's checks from refusing the layout first.
    const disk = new MemDisk(5 * MIB);
    await disk.write(4096, patternBytes(8192, 1));
    const bytes = await collect(await encode('vhd', await diskContent(disk)));
    const h = parseDynamicHeader(bytes.subarray(512, 512 + 1024), 'x');
    serializeDynamicHeader({ ...h, blockSize: 256 * MIB }).copy(bytes, 512);
    installAllocationCap();
    const cut = bytes.subarray(0, bytes.length - 512 - MIB);
    const { worst } = await withAllocationCap(32 * MIB, () => expect(decode(cut)).rejects.toThrow(/truncated/));
    expect(worst).toBeLessThanOrEqual(8 * MIB);
  });

  it('a trailing footer that differs from the first: refused', async () => {
    const { bytes } = await vhdStream();
    const f = parseFooter(bytes.subarray(0, 512), 'x');
    const other = serializeFooter({ ...f, timestamp: f.timestamp + 1 });
    const bad = Buffer.concat([bytes.subarray(0, bytes.length - 512), other]);
    await expect(decode(bad)).rejects.toThrow(/trailing VHD footer differs/);
  });

  it('blocks out of order: refused', async () => {
    const { bytes } = await vhdStream();
    // Swap the BAT entries of blocks 0 and 2: block 2 now comes first in the stream.
    const bad = Buffer.from(bytes);
    const e0 = bad.readUInt32BE(2048);
    bad.writeUInt32BE(bad.readUInt32BE(2048 + 8), 2048);
    bad.writeUInt32BE(e0, 2048 + 8);
    await expect(decode(bad)).rejects.toThrow(/out of order/);
    // Two entries pointing at the same place overlap.
    const dup = Buffer.from(bytes);
    dup.writeUInt32BE(dup.readUInt32BE(2048), 2048 + 8);
    await expect(decode(dup)).rejects.toThrow(/overlaps.*out of order/);
    // A block inside the BAT.
    const inside = Buffer.from(bytes);
    inside.writeUInt32BE(4, 2048);
    await expect(decode(inside)).rejects.toThrow(/overlaps the BAT/);
  });

  it('BAT entries past the announced length: refused before any write', async () => {
    const { bytes } = await vhdStream();
    const bad = Buffer.from(bytes);
    bad.writeUInt32BE(0x100000, 2048 + 8);
    await expect(decode(bad, bad.length)).rejects.toThrow(/past the stream's length/);
  });

  it('every refusal is a CorruptImageError', async () => {
    const { bytes } = await vhdStream();
    await expect(decode(bytes.subarray(0, 3000))).rejects.toBeInstanceOf(CorruptImageError);
  });
});

describe('chunked frames bad input', () => {
  const frames = (...parts: Buffer[]) => Buffer.concat(parts);
  it('missing end marker, short frame, frame past the end, bytes after the marker: refused', async () => {
    const d = () => new MemDisk(MIB);
    const data = patternBytes(1024, 3);
    await expect(applyChunked(readerOf(frames(frameHeader(0, 1024), data)), d())).rejects.toThrow(/truncated/);
    await expect(applyChunked(readerOf(frames(frameHeader(0, 1024), data.subarray(0, 10))), d())).rejects.toThrow(/truncated/);
    await expect(applyChunked(readerOf(frames(frameHeader(MIB - 512, 1024), data, frameHeader(0, 0))), d())).rejects.toThrow(/past the disk's end/);
    await expect(applyChunked(readerOf(frames(frameHeader(0, 1024), data, frameHeader(0, 0), Buffer.from('x'))), d())).rejects.toThrow(/after the chunked end marker/);
    const ok = d();
    await applyChunked(readerOf(frames(frameHeader(4096, 1024), data, frameHeader(0, 0))), ok, { fresh: true });
    expect((await ok.read(4096, 1024)).equals(data)).toBe(true);
  });
});
