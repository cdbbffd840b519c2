/**
 * The VHDX encoder: one forward pass laid out `file identifier | header x2 | region table x2 (first MiB) | log (1 MiB,
 * empty) | metadata (1 MiB) | BAT | sector bitmap blocks | payload blocks`, payload blocks in ascending order. Which
 * blocks are present (and, for a differencing child, which sectors) is decided from the source's ranges alone, so
 * every offset and the total length are known before the first byte. The log is empty (LogGuid zero): nothing to
 * replay, the file is consistent as written.
 */
import { BAT_OFFSET, LOG_LENGTH, LOG_OFFSET, METADATA_LENGTH, newHeaderAndRegions } from '../formats/vhdx/create.js';
import * as fileId from '../formats/vhdx/file-identifier.js';
import * as hdr from '../formats/vhdx/header.js';
import * as md from '../formats/vhdx/metadata.js';
import * as rt from '../formats/vhdx/region-table.js';
import { Bat, BITMAP, PAYLOAD, SECTOR_BITMAP_BLOCK_SIZE, bitmapIndex, geometry, payloadIndex, regionLengthFor, type BatGeometry } from '../formats/vhdx/bat.js';
import { setRange } from '../formats/vhdx/sector-bitmap.js';
import { UnsupportedError } from '../util/errors.js';
import { newGuid } from '../util/guid.js';
import { alignUp } from '../util/units.js';
import { blockChunks, normalizeRanges, readPieces, splitRanges, type ByteRange, type ContentSource } from './content.js';
import type { EncodedStream, StreamChunk } from './encoded.js';
import { vhdxStreamBlockSize } from './vhdx-block-size.js';

/** One payload block of the output: its index, the source's (sector-aligned) ranges inside it, whether they cover it. */
interface BlockPlan {
  index: number;
  ranges: ByteRange[];
  full: boolean;
}

/** Encodes `source` as a VHDX: dynamic for a full disk, differencing (parent = `source.base`, a VHDX) for a delta. */
export function encodeVhdx(source: ContentSource): EncodedStream {
  const base = source.base;
  const parent = base?.vhdxParent ?? null;
  if (base && !parent) {
    throw new UnsupportedError(`a VHDX differencing image needs a VHDX parent (the base is ${base.format}; Hyper-V does not allow it): use --destination-format vhd, qcow2 or chunked`, source.name);
  }
  const sector = parent?.logicalSectorSize ?? 512;
  const size = alignUp(source.virtualSize, sector);
  if (size > md.MAX_VIRTUAL_SIZE) throw new UnsupportedError(`a VHDX holds at most 64 TiB; this disk has ${source.virtualSize} bytes`, source.name);
  const blockSize = vhdxStreamBlockSize(size);
  const g = geometry(size, blockSize, sector, Boolean(base));
  // A delta's source is an image: reading whole sectors around its ranges is allowed, and a bitmap has no finer unit.
  const ranges = base ? widen(source.ranges, sector, size) : source.ranges;
  const blocks = planBlocks(ranges, blockSize, size);
  // A child gets a sector bitmap block for every chunk (chunkRatio payload blocks, 4 GiB of disk at 512-byte
  // sectors), even one whose blocks are all absent or all full: libvhdi (20210425) reads a chunk whose bitmap entry is
  // NOT_PRESENT as if its bitmap sat at file offset 0, and shows file bytes instead of the parent's. 1 MiB per 4 GiB.
  const byChunk = new Map<number, BlockPlan[]>();
  for (const b of blocks) {
    const k = Math.floor(b.index / g.chunkRatio);
    const list = byChunk.get(k);
    if (list) list.push(b);
    else byChunk.set(k, [b]);
  }
  const chunks = base ? Array.from({ length: Math.ceil(g.payloadBlocks / g.chunkRatio) }, (_, k) => k) : [];

  const batLength = regionLengthFor(g.totalEntries);
  const bat = Bat.empty(g, batLength);
  const firstBitmap = BAT_OFFSET + batLength;
  const firstBlock = firstBitmap + chunks.length * SECTOR_BITMAP_BLOCK_SIZE;
  chunks.forEach((k, j) => bat.set(bitmapIndex(g, k), { state: BITMAP.PRESENT, fileOffset: firstBitmap + j * SECTOR_BITMAP_BLOCK_SIZE }));
  blocks.forEach((b, j) => {
    bat.set(payloadIndex(g, b.index), { state: b.full || !base ? PAYLOAD.FULLY_PRESENT : PAYLOAD.PARTIALLY_PRESENT, fileOffset: firstBlock + j * blockSize });
  });
  const length = firstBlock + blocks.length * blockSize;

  const fresh = newHeaderAndRegions(batLength);
  const header = hdr.serialize(fresh.header);
  const regions = rt.serialize(fresh.regions);
  const metadata = md.serializeItems(
    {
      blockSize,
      leaveBlockAllocated: false,
      hasParent: Boolean(base),
      virtualSize: size,
      logicalSectorSize: sector,
      physicalSectorSize: Math.max(sector, parent?.physicalSectorSize ?? 4096),
      page83: newGuid(),
      parentLocator: parent?.locator ?? null,
    },
    METADATA_LENGTH,
  );

  return {
    format: 'vhdx',
    length,
    async *chunks(): AsyncGenerator<StreamChunk> {
      yield* headSection(header, regions);
      yield LOG_LENGTH;
      yield metadata;
      yield METADATA_LENGTH - metadata.length;
      // The table's entries, then the rest of its region as zeros.
      const table = bat.serialize();
      yield table;
      if (batLength > table.length) yield batLength - table.length;
      for (const k of chunks) yield sectorBitmap(g, k, byChunk.get(k) ?? []);
      const reads = readPieces(source, splitRanges(ranges, blockSize, blockSize), blockSize);
      for (const b of blocks) yield* blockChunks(reads, b.index * blockSize, blockSize, b.ranges.length);
      await reads.return(undefined);
      await source.finish?.();
    },
  };
}

/** The first MiB: file identifier at 0, the two headers at 64 and 128 KiB, the two region tables at 192 and 256 KiB. */
function* headSection(header: Buffer, regions: Buffer): Generator<StreamChunk> {
  const parts: [number, Buffer][] = [
    [0, fileId.serialize({ creator: 'vhdsync' })],
    [hdr.HEADER_OFFSETS[0], header],
    [hdr.HEADER_OFFSETS[1], header],
    [rt.REGION_TABLE_OFFSETS[0], regions],
    [rt.REGION_TABLE_OFFSETS[1], regions],
  ];
  let pos = 0;
  for (const [at, bytes] of parts) {
    if (at > pos) yield at - pos;
    yield bytes;
    pos = at + bytes.length;
  }
  yield LOG_OFFSET - pos;
}

/** Ranges widened to whole sectors (and merged). */
function widen(ranges: readonly ByteRange[], sector: number, size: number): ByteRange[] {
  return normalizeRanges(
    ranges.map((r) => {
      const start = Math.floor(r.offset / sector) * sector;
      return { offset: start, length: Math.min(size, alignUp(r.offset + r.length, sector)) - start };
    }),
  );
}

/** Groups ranges by payload block, in ascending order, noting the blocks they cover entirely. */
function planBlocks(ranges: readonly ByteRange[], blockSize: number, size: number): BlockPlan[] {
  const out: BlockPlan[] = [];
  for (const piece of splitRanges(ranges, blockSize, blockSize)) {
    const index = Math.floor(piece.offset / blockSize);
    const last = out[out.length - 1];
    if (last && last.index === index) last.ranges.push(piece);
    else out.push({ index, ranges: [piece], full: false });
  }
  for (const b of out) {
    const covered = b.ranges.reduce((n, r) => n + r.length, 0);
    b.full = covered === Math.min(blockSize, size - b.index * blockSize);
  }
  return out;
}

/** The 1 MiB sector bitmap of chunk `k` (holding `blocks`): a bit per sector, set where the child holds the sector. */
function sectorBitmap(g: BatGeometry, k: number, blocks: readonly BlockPlan[]): Buffer {
  const bm = Buffer.alloc(SECTOR_BITMAP_BLOCK_SIZE);
  const perBlock = g.blockSize / g.logicalSectorSize;
  for (const b of blocks) {
    const first = (b.index - k * g.chunkRatio) * perBlock;
    const start = b.index * g.blockSize;
    for (const r of b.ranges) setRange(bm, first + (r.offset - start) / g.logicalSectorSize, first + (r.offset + r.length - start) / g.logicalSectorSize);
  }
  return bm;
}
