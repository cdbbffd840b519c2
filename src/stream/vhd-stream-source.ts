/**
 * A forward-only VHD stream as an encoder's input (a pipe re-encoded in one pass) and as a writer onto a Disk
 * (a stream applied to an image).
 */
import type { Disk } from '../formats/disk.js';
import { sectorRuns } from '../formats/vhd/sector-bitmap.js';
import type { VhdSizeRule } from '../formats/vhd/geometry.js';
import { CorruptImageError, UnsupportedError } from '../util/errors.js';
import { isAllZero } from '../util/struct.js';
import { serialReads, type ContentSource, type ByteRange } from './content.js';
import type { ForwardReader } from './forward-reader.js';
import { checkVhdStreamTail, readVhdStreamBlocks, readVhdStreamHead, type StreamBlock, type VhdStreamHead } from './vhd-stream.js';

const SECTOR = 512;

/**
 * The content of a dynamic VHD stream: its allocated blocks, read as the encoder asks for them. The blocks must
 * come in ascending order, or the stream could not be re-encoded without holding it all.
 */
export async function vhdStreamContent(r: ForwardReader, vhdSize?: VhdSizeRule): Promise<ContentSource> {
  const head = await readVhdStreamHead(r, vhdSize);
  if (head.footer.diskType === 'differencing') {
    throw new UnsupportedError('a differencing VHD stream needs its parent and cannot be read from a pipe on its own', r.name);
  }
  const ranges: ByteRange[] = [];
  let prev = -1;
  for (const b of head.blocks) {
    if (b.index < prev) {
      throw new CorruptImageError(`VHD block ${b.index} comes after block ${prev} in the stream: blocks out of order (a stream needs ascending blocks)`, r.name);
    }
    prev = b.index;
    const offset = b.index * head.blockSize;
    if (offset >= head.virtualSize) continue;
    const length = Math.min(head.blockSize, head.virtualSize - offset);
    const last = ranges[ranges.length - 1];
    if (last && last.offset + last.length === offset) last.length += length;
    else ranges.push({ offset, length });
  }
  const blocks = readVhdStreamBlocks(r, head);
  let current: StreamBlock | null = null;
  const readNow = async (offset: number, length: number, out: Buffer): Promise<Buffer> => {
    for (let done = 0; done < length; ) {
      const index = Math.floor((offset + done) / head.blockSize);
      while (!current || current.index < index) {
        const n = await blocks.next();
        if (n.done) throw new Error(`internal: read past the last VHD block (${offset}+${length})`);
        current = n.value;
      }
      if (current.index !== index) throw new Error(`internal: read of unallocated VHD block ${index}`);
      const inBlock = offset + done - index * head.blockSize;
      const n = Math.min(length - done, head.blockSize - inBlock);
      current.data.copy(out, done, inBlock, inBlock + n);
      done += n;
    }
    return out;
  };
  const reads = serialReads(readNow);
  return {
    virtualSize: head.virtualSize,
    ranges,
    base: null,
    name: r.name,
    // Read in order from one stream: a read ahead could only wait for this one.
    readsInFlight: 1,
    read: reads.read,
    async finish() {
      await reads.idle();
      // Blocks past the virtual size (the last one's tail) are still in the stream: read over them.
      for (;;) if ((await blocks.next()).done) break;
      await checkVhdStreamTail(r, head);
    },
  };
}

/**
 * Applies a dynamic or differencing VHD stream onto `disk`: the sectors each block's bitmap marks present are
 * written, zeros included unless `fresh` says the disk reads as zeros already. Returns the head. The stream's disk
 * may be smaller than the image, as XAPI's importer (vhd-tool) allows: its sectors land where they say and the rest
 * of the image is left as it is (sectors past the stream's own size, a last block's padding, are not written).
 * A larger one is refused before anything is written.
 */
export async function applyVhdStream(r: ForwardReader, disk: Disk, opts: { fresh?: boolean } = {}): Promise<VhdStreamHead> {
  const head = await readVhdStreamHead(r);
  if (head.virtualSize > disk.virtualSize) {
    throw new CorruptImageError(`the stream's disk has ${head.virtualSize} bytes, more than the image's ${disk.virtualSize}`, r.name);
  }
  const sectors = head.blockSize / SECTOR;
  for await (const b of readVhdStreamBlocks(r, head)) {
    const start = b.index * head.blockSize;
    for (const run of sectorRuns(b.bitmap, 0, sectors)) {
      if (!run.present) continue;
      const offset = start + run.first * SECTOR;
      const length = Math.min(run.count * SECTOR, head.virtualSize - offset);
      if (length <= 0) continue;
      const data = b.data.subarray(run.first * SECTOR, run.first * SECTOR + length);
      if (!isAllZero(data)) await disk.write(offset, data);
      else if (!opts.fresh) await disk.writeZeroes(offset, length);
    }
  }
  await checkVhdStreamTail(r, head);
  return head;
}
