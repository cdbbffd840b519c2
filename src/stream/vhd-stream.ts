/**
 * Reading a VHD as a forward-only stream: footer at 0, dynamic header, BAT, then blocks at increasing positions,
 * then the trailing footer. Accepts vhd-tool's layout (`caml`, BAT at 2048), Xen Orchestra's (`xo  `, BAT at 1536)
 * and ours, and any dynamic or differencing VHD file whose blocks lie in ascending order.
 */
import { batBytes, parseBat, UNALLOCATED } from '../formats/vhd/bat.js';
import { DYNAMIC_HEADER_SIZE, parseDynamicHeader, type DynamicHeader } from '../formats/vhd/dynamic-header.js';
import { FOOTER_SIZE, parseFooter, type VhdFooter } from '../formats/vhd/footer.js';
import { virtualSizeOf, type VhdSizeRule } from '../formats/vhd/geometry.js';
import { bitmapBytes } from '../formats/vhd/sector-bitmap.js';
import { CorruptImageError, UnsupportedError } from '../util/errors.js';
import { isPowerOfTwo } from '../util/units.js';
import type { ForwardReader } from './forward-reader.js';

const SECTOR = 512;
/** Limits on what a stream may declare before any allocation is sized by it. */
const MIN_BLOCK = 512;
const MAX_BLOCK = 256 << 20;
const MAX_ENTRIES = 1 << 24;

/** What the stream's head says. */
export interface VhdStreamHead {
  footer: VhdFooter;
  footerBytes: Buffer;
  header: DynamicHeader;
  virtualSize: number;
  blockSize: number;
  /** Allocated blocks in stream order: block index and byte position of its bitmap. */
  blocks: { index: number; position: number }[];
}

/** Reads footer, dynamic header and BAT, and checks where the blocks lie before anything is written. */
export async function readVhdStreamHead(r: ForwardReader, vhdSize?: VhdSizeRule): Promise<VhdStreamHead> {
  const footerBytes = Buffer.from(await r.read(FOOTER_SIZE, 'the VHD footer'));
  const footer = parseFooter(footerBytes, r.name);
  if (footer.diskType === 'fixed' || footer.dataOffset === null) {
    throw new UnsupportedError('a fixed VHD cannot be read as a stream (its footer is at the end): use --source-format raw', r.name);
  }
  await r.skipTo(footer.dataOffset, 'the VHD dynamic header');
  const header = parseDynamicHeader(await r.read(DYNAMIC_HEADER_SIZE, 'the VHD dynamic header'), r.name);
  const blockSize = header.blockSize;
  if (!isPowerOfTwo(blockSize) || blockSize < MIN_BLOCK || blockSize > MAX_BLOCK) {
    throw new CorruptImageError(`VHD block size ${blockSize} is not a power of two from 512 bytes to 256 MiB`, r.name);
  }
  const virtualSize = virtualSizeOf(footer.creatorApp, footer.geometry, footer.currentSize, vhdSize);
  if (header.maxTableEntries < Math.ceil(virtualSize / blockSize) || header.maxTableEntries > MAX_ENTRIES) {
    throw new CorruptImageError(`VHD BAT has ${header.maxTableEntries} entries for a ${footer.currentSize}-byte disk of ${blockSize}-byte blocks`, r.name);
  }
  if (header.tableOffset < r.position) {
    throw new CorruptImageError(`VHD BAT at byte ${header.tableOffset} lies before the end of the dynamic header (${r.position}): cannot be read in one pass`, r.name);
  }
  await r.skipTo(header.tableOffset, 'the VHD BAT');
  const entries = header.maxTableEntries;
  const bat = parseBat(await r.read(entries * 4, 'the VHD BAT'), entries, r.name);
  const tableEnd = header.tableOffset + batBytes(entries);
  const perBlock = bitmapBytes(blockSize) + blockSize;
  const blocks: { index: number; position: number }[] = [];
  for (let i = 0; i < entries; i++) if (bat[i] !== UNALLOCATED) blocks.push({ index: i, position: bat[i] * SECTOR });
  blocks.sort((a, b) => a.position - b.position);
  let end = tableEnd;
  for (const b of blocks) {
    if (b.position < end) {
      throw new CorruptImageError(`VHD block ${b.index} at byte ${b.position} overlaps ${end === tableEnd ? 'the BAT' : 'the block before it'} (ends at ${end}): blocks out of order`, r.name);
    }
    end = b.position + perBlock;
  }
  if (r.length !== null && end + FOOTER_SIZE > r.length) {
    const last = blocks[blocks.length - 1];
    throw new CorruptImageError(`VHD block ${last.index} at byte ${last.position} ends past the stream's length (${r.length} bytes, footer included)`, r.name);
  }
  return { footer, footerBytes, header, virtualSize, blockSize, blocks };
}

/** Reads the rest of the stream after the last block and checks the trailing footer equals the leading one. */
export async function checkVhdStreamTail(r: ForwardReader, head: VhdStreamHead): Promise<void> {
  const start = r.position;
  const tail = await r.tail(FOOTER_SIZE);
  if (r.position - start < FOOTER_SIZE) throw r.truncated('the trailing VHD footer');
  if (!tail.equals(head.footerBytes)) {
    throw new CorruptImageError('the trailing VHD footer differs from the footer at the start of the stream', r.name);
  }
}

/** One block as read from the stream: its index, sector bitmap and data (valid until the next block is read). */
export interface StreamBlock {
  index: number;
  bitmap: Buffer;
  data: Buffer;
}

/** The block buffer's first size: it doubles as a block's bytes arrive, up to the header's block size. */
const FIRST_BLOCK_BUFFER = 4 << 20;

/**
 * Reads the blocks in stream order into two reused buffers. The data buffer grows with the bytes that arrive, so a
 * header naming 256 MiB blocks costs memory only once a stream really carries them (a truncated or hostile one fails
 * first).
 */
export async function* readVhdStreamBlocks(r: ForwardReader, head: VhdStreamHead): AsyncGenerator<StreamBlock> {
  const bitmap = Buffer.alloc(bitmapBytes(head.blockSize));
  let data = Buffer.allocUnsafeSlow(Math.min(head.blockSize, FIRST_BLOCK_BUFFER));
  for (const b of head.blocks) {
    await r.skipTo(b.position, `VHD block ${b.index}`);
    await r.read(bitmap.length, `the bitmap of VHD block ${b.index}`, bitmap);
    for (let got = 0; got < head.blockSize; ) {
      if (got === data.length) {
        const bigger = Buffer.allocUnsafeSlow(Math.min(head.blockSize, data.length * 2));
        data.copy(bigger, 0, 0, got);
        data = bigger;
      }
      const n = data.length - got;
      await r.read(n, `VHD block ${b.index}`, data.subarray(got));
      got += n;
    }
    yield { index: b.index, bitmap, data };
  }
}
