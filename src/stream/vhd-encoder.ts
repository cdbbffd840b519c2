/**
 * The VHD stream encoder, in vhd-tool's one-pass layout (xapi-http-notes 3.5) with creator `win ` (decision 0005):
 * footer copy at 0, dynamic header at 512, one sector for a parent locator at 1536, BAT at 2048, then the included
 * blocks in ascending order (512-byte sector bitmap + 2 MiB of data each), then the footer again, byte for byte.
 * Which blocks are included is known from the source's ranges before the first byte, so the length is too.
 */
import type { ContentSource } from './content.js';
import { blockChunks, readPieces, splitRanges } from './content.js';
import type { EncodedStream, StreamChunk } from './encoded.js';
import { batBytes } from '../formats/vhd/bat.js';
import { HEADER_VERSION, serializeDynamicHeader } from '../formats/vhd/dynamic-header.js';
import { FEATURE_RESERVED, FOOTER_SIZE, FORMAT_VERSION, HOST_OS_WINDOWS, MAX_VHD_SIZE, serializeFooter, vhdNow } from '../formats/vhd/footer.js';
import { chsForSize } from '../formats/vhd/geometry.js';
import { encodeWindowsPath, LOCATOR_COUNT, type LocatorEntry } from '../formats/vhd/parent-locator.js';
import { setSectors } from '../formats/vhd/sector-bitmap.js';
import { UnsupportedError } from '../util/errors.js';
import { newGuid, ZERO_GUID } from '../util/guid.js';
import { alignUp } from '../util/units.js';

export const STREAM_BLOCK_SIZE = 2 << 20;
const SECTOR = 512;
const BITMAP = 512;
/** vhd-tool's offsets: header at 512, a locator sector at 1536, BAT at 2048. */
export const HEADER_OFFSET = 512;
export const LOCATOR_OFFSET = 1536;
export const TABLE_OFFSET = 2048;
const CREATOR_APP = 'win ';
const CREATOR_VERSION = 0x000a0000;

/** The included blocks of a source and, for a delta, which sectors of each are present. */
interface BlockPlan {
  index: number;
  /** Ranges of the source inside this block. */
  ranges: { offset: number; length: number }[];
}

/** Encodes `source` as a VHD stream: dynamic for a full disk, differencing (type 4) for a delta. */
export function encodeVhd(source: ContentSource): EncodedStream {
  const size = alignUp(source.virtualSize, SECTOR);
  if (size > MAX_VHD_SIZE) throw new UnsupportedError(`a VHD holds at most 2040 GiB; this disk has ${source.virtualSize} bytes (use raw or chunked)`, source.name);
  const entries = Math.ceil(size / STREAM_BLOCK_SIZE);
  const blocks = planBlocks(source);
  const firstBlock = TABLE_OFFSET + batBytes(entries);
  const perBlock = BITMAP + STREAM_BLOCK_SIZE;
  const length = firstBlock + blocks.length * perBlock + FOOTER_SIZE;

  const footer = serializeFooter({
    features: FEATURE_RESERVED,
    formatVersion: FORMAT_VERSION,
    dataOffset: HEADER_OFFSET,
    timestamp: vhdNow(),
    creatorApp: CREATOR_APP,
    creatorVersion: CREATOR_VERSION,
    creatorHostOs: HOST_OS_WINDOWS,
    originalSize: size,
    currentSize: size,
    geometry: chsForSize(size),
    diskType: source.base ? 'differencing' : 'dynamic',
    uniqueId: newGuid(),
    savedState: 0,
  });
  const locatorSector = Buffer.alloc(TABLE_OFFSET - LOCATOR_OFFSET);
  const locators: LocatorEntry[] = [];
  const base = source.base;
  if (base?.locatorPath) {
    const data = encodeWindowsPath(base.locatorPath);
    // One sector is all vhd-tool's layout has room for; a longer path goes unrecorded (the name still is).
    if (data.length <= locatorSector.length) {
      data.copy(locatorSector);
      locators.push({ platformCode: base.locatorCode, dataSpace: locatorSector.length, dataLength: data.length, dataOffset: LOCATOR_OFFSET });
    }
  }
  while (locators.length < LOCATOR_COUNT) locators.push({ platformCode: '', dataSpace: 0, dataLength: 0, dataOffset: 0 });
  const header = serializeDynamicHeader({
    tableOffset: TABLE_OFFSET,
    headerVersion: HEADER_VERSION,
    maxTableEntries: entries,
    blockSize: STREAM_BLOCK_SIZE,
    parentUniqueId: base ? base.uniqueId : ZERO_GUID,
    parentTimestamp: base ? base.timestamp : 0,
    parentUnicodeName: base ? base.name.slice(0, 256) : '',
    locators,
  });
  const bat = Buffer.alloc(batBytes(entries), 0xff);
  blocks.forEach((b, j) => bat.writeUInt32BE((firstBlock + j * perBlock) / SECTOR, b.index * 4));

  return {
    format: 'vhd',
    length,
    async *chunks(): AsyncGenerator<StreamChunk> {
      yield footer;
      yield header;
      yield locatorSector;
      yield bat;
      const reads = readPieces(source, splitRanges(source.ranges, STREAM_BLOCK_SIZE, STREAM_BLOCK_SIZE), STREAM_BLOCK_SIZE);
      for (const b of blocks) {
        yield bitmapOf(b, Boolean(base));
        yield* blockChunks(reads, b.index * STREAM_BLOCK_SIZE, STREAM_BLOCK_SIZE, b.ranges.length);
      }
      await reads.return(undefined);
      await source.finish?.();
      yield footer;
    },
  };
}

/** Groups the source's ranges by 2 MiB block, in ascending order. */
function planBlocks(source: ContentSource): BlockPlan[] {
  const out: BlockPlan[] = [];
  for (const piece of splitRanges(source.ranges, STREAM_BLOCK_SIZE, STREAM_BLOCK_SIZE)) {
    const index = Math.floor(piece.offset / STREAM_BLOCK_SIZE);
    const last = out[out.length - 1];
    if (last && last.index === index) last.ranges.push(piece);
    else out.push({ index, ranges: [piece] });
  }
  return out;
}

/**
 * The sector bitmap: all ones for a full stream, as vhd-tool writes it (the block's data is complete, zeros included);
 * for a delta only the sectors that changed, so the base shows through the rest.
 */
function bitmapOf(b: BlockPlan, delta: boolean): Buffer {
  if (!delta) return Buffer.alloc(BITMAP, 0xff);
  const bm = Buffer.alloc(BITMAP);
  const start = b.index * STREAM_BLOCK_SIZE;
  for (const r of b.ranges) {
    const first = Math.floor((r.offset - start) / SECTOR);
    const end = Math.ceil((r.offset + r.length - start) / SECTOR);
    setSectors(bm, first, end - first);
  }
  return bm;
}
