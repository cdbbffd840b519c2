/** The VHDX metadata region ([MS-VHDX] 2.6): a 64 KiB table of items, then the items. */
import { CorruptImageError, UnsupportedError } from '../../util/errors.js';
import { formatGuidLE, parseGuidLE } from '../../util/guid.js';
import { isPowerOfTwo } from '../../util/units.js';
import { checkOverlaps } from './region-table.js';
import * as locator from './parent-locator.js';
import type { ParentLocator } from './parent-locator.js';

/** Size of the metadata table at the start of the region; items start at or after it. */
export const METADATA_TABLE_SIZE = 64 * 1024;
const SIGNATURE = Buffer.from('metadata', 'latin1');
const MAX_ENTRIES = 2047;
const ENTRY_SIZE = 32;
const MIB = 1 << 20;
/** [MS-VHDX] caps the virtual size at 64 TiB. */
export const MAX_VIRTUAL_SIZE = 64 * 1024 ** 4;

const FILE_PARAMETERS = 'caa16737-fa36-4d43-b3b6-33f0aa44e76b';
const VIRTUAL_DISK_SIZE = '2fa54224-cd1b-4876-b211-5dbed83bf4b8';
const PAGE_83 = 'beca12ab-b2e6-4523-93ef-c309e000c746';
const LOGICAL_SECTOR_SIZE = '8141bf1d-a96f-4709-ba47-f233a8faab5f';
const PHYSICAL_SECTOR_SIZE = 'cda348c7-445d-4471-9cc9-e9885251c556';
const PARENT_LOCATOR = 'a8d35f2d-b30b-454d-abf7-d3d84834ab0c';
const KNOWN = new Set([FILE_PARAMETERS, VIRTUAL_DISK_SIZE, PAGE_83, LOGICAL_SECTOR_SIZE, PHYSICAL_SECTOR_SIZE, PARENT_LOCATOR]);

/** One metadata table entry. */
export interface MetadataEntry {
  itemId: string;
  offset: number;
  length: number;
  isUser: boolean;
  isVirtualDisk: boolean;
  isRequired: boolean;
}

/** The system metadata a reader needs. */
export interface VhdxMetadata {
  blockSize: number;
  leaveBlockAllocated: boolean;
  hasParent: boolean;
  virtualSize: number;
  logicalSectorSize: number;
  physicalSectorSize: number;
  /** Page 83 (SCSI) identifier of the virtual disk. */
  page83: Buffer;
  parentLocator: ParentLocator | null;
}

/**
 * How far into the metadata region its items reach, by the table at `start` (the region's first bytes): a reader may
 * read only that much. Infinity when `start` does not hold a whole table that reads as one (parse then judges the
 * whole region).
 */
export function itemsEnd(start: Buffer): number {
  if (start.length < METADATA_TABLE_SIZE || !start.subarray(0, 8).equals(SIGNATURE)) return Infinity;
  const count = start.readUInt16LE(10);
  if (count > MAX_ENTRIES) return Infinity;
  let end = METADATA_TABLE_SIZE;
  for (let i = 0; i < count; i++) {
    const at = 32 + i * ENTRY_SIZE;
    const length = start.readUInt32LE(at + 20);
    if (length > 0) end = Math.max(end, start.readUInt32LE(at + 16) + length);
  }
  return end;
}

/**
 * Parses the table at the start of the metadata region, bounding every item by the region's length: `regionLength`
 * when only the region's first bytes are given (they must then hold every item the table names: see itemsEnd).
 */
export function parseTable(region: Buffer, subject?: string, regionLength = region.length): MetadataEntry[] {
  if (region.length < METADATA_TABLE_SIZE) throw new CorruptImageError('metadata region is smaller than its table', subject);
  if (!region.subarray(0, 8).equals(SIGNATURE)) throw new CorruptImageError('metadata table signature is not "metadata"', subject);
  const count = region.readUInt16LE(10);
  if (count > MAX_ENTRIES) throw new CorruptImageError(`metadata table has ${count} entries (at most ${MAX_ENTRIES})`, subject);
  const entries: MetadataEntry[] = [];
  for (let i = 0; i < count; i++) {
    const at = 32 + i * ENTRY_SIZE;
    const flags = region.readUInt32LE(at + 24);
    const e: MetadataEntry = {
      itemId: formatGuidLE(region.subarray(at, at + 16)),
      offset: region.readUInt32LE(at + 16),
      length: region.readUInt32LE(at + 20),
      isUser: (flags & 1) !== 0,
      isVirtualDisk: (flags & 2) !== 0,
      isRequired: (flags & 4) !== 0,
    };
    // A zero-length item has offset 0 by the spec and occupies nothing.
    if (e.length > 0 && (e.offset < METADATA_TABLE_SIZE || e.offset + e.length > regionLength)) {
      throw new CorruptImageError(`metadata item ${e.itemId} at ${e.offset}+${e.length} lies outside the metadata region`, subject);
    }
    if (!e.isUser && entries.some((x) => !x.isUser && x.itemId === e.itemId)) {
      throw new CorruptImageError(`metadata item ${e.itemId} appears twice`, subject);
    }
    if (!e.isUser && e.isRequired && !KNOWN.has(e.itemId)) {
      throw new UnsupportedError(`unknown required metadata item ${e.itemId}`, subject);
    }
    entries.push(e);
  }
  checkOverlaps(
    entries.filter((e) => e.length > 0).map((e) => ({ fileOffset: e.offset, length: e.length })),
    subject,
    'metadata items',
  );
  return entries;
}

/** Parses the system items of a metadata region (or of its first bytes, as parseTable) and checks their values. */
export function parse(region: Buffer, subject?: string, regionLength = region.length): VhdxMetadata {
  const entries = parseTable(region, subject, regionLength);
  // As itemsEnd counts them: a zero-length item occupies nothing, whatever offset it names.
  if (region.length < regionLength && entries.some((e) => e.length > 0 && e.offset + e.length > region.length)) {
    throw new Error('metadata items past the bytes given: read the whole region');
  }
  const item = (id: string, size: number | null, required: boolean): Buffer | null => {
    const e = entries.find((x) => !x.isUser && x.itemId === id);
    if (!e) {
      if (required) throw new CorruptImageError(`metadata item ${id} is missing`, subject);
      return null;
    }
    if (size !== null && e.length < size) throw new CorruptImageError(`metadata item ${id} is ${e.length} bytes (need ${size})`, subject);
    return region.subarray(e.offset, e.offset + e.length);
  };
  const fp = item(FILE_PARAMETERS, 8, true)!;
  const blockSize = fp.readUInt32LE(0);
  const flags = fp.readUInt32LE(4);
  const virtualSize = Number(item(VIRTUAL_DISK_SIZE, 8, true)!.readBigUInt64LE(0));
  const logicalSectorSize = item(LOGICAL_SECTOR_SIZE, 4, true)!.readUInt32LE(0);
  const physicalSectorSize = item(PHYSICAL_SECTOR_SIZE, 4, true)!.readUInt32LE(0);
  const page83 = Buffer.from(item(PAGE_83, 16, true)!.subarray(0, 16));
  const hasParent = (flags & 2) !== 0;
  if (!isPowerOfTwo(blockSize) || blockSize < MIB || blockSize > 256 * MIB) {
    throw new CorruptImageError(`block size ${blockSize} is not a power of two between 1 MiB and 256 MiB`, subject);
  }
  if (logicalSectorSize !== 512 && logicalSectorSize !== 4096) throw new CorruptImageError(`logical sector size ${logicalSectorSize} is not 512 or 4096`, subject);
  if (physicalSectorSize !== 512 && physicalSectorSize !== 4096) throw new CorruptImageError(`physical sector size ${physicalSectorSize} is not 512 or 4096`, subject);
  if (!Number.isSafeInteger(virtualSize) || virtualSize === 0 || virtualSize > MAX_VIRTUAL_SIZE || virtualSize % logicalSectorSize !== 0) {
    throw new CorruptImageError(`virtual disk size ${virtualSize} is not a multiple of ${logicalSectorSize} between 1 and 64 TiB`, subject);
  }
  const loc = item(PARENT_LOCATOR, null, hasParent);
  return {
    blockSize,
    leaveBlockAllocated: (flags & 1) !== 0,
    hasParent,
    virtualSize,
    logicalSectorSize,
    physicalSectorSize,
    page83,
    parentLocator: hasParent && loc ? locator.parse(loc, subject) : null,
  };
}

/** Serializes a metadata region of `regionLength` bytes: table, then items from 64 KiB on. */
export function serialize(m: VhdxMetadata, regionLength = MIB): Buffer {
  const used = serializeItems(m, regionLength);
  const region = Buffer.alloc(regionLength);
  used.copy(region);
  return region;
}

/**
 * The metadata table and its items as they start a region of `regionLength` bytes, without the zeros that pad them to
 * its length (a new image's file is zeros there already: writing or scanning the padding of a fresh 1 MiB buffer costs
 * page faults).
 */
export function serializeItems(m: VhdxMetadata, regionLength = MIB): Buffer {
  const items: Array<[string, Buffer, number]> = [];
  const u32 = (v: number) => {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v);
    return b;
  };
  const fp = Buffer.alloc(8);
  fp.writeUInt32LE(m.blockSize, 0);
  fp.writeUInt32LE((m.leaveBlockAllocated ? 1 : 0) | (m.hasParent ? 2 : 0), 4);
  const vs = Buffer.alloc(8);
  vs.writeBigUInt64LE(BigInt(m.virtualSize));
  // Flags: 4 = IsRequired, 2 = IsVirtualDisk, as Hyper-V and qemu set them (checked against a Hyper-V child).
  items.push([FILE_PARAMETERS, fp, 4], [VIRTUAL_DISK_SIZE, vs, 6], [PAGE_83, m.page83, 6], [LOGICAL_SECTOR_SIZE, u32(m.logicalSectorSize), 6], [PHYSICAL_SECTOR_SIZE, u32(m.physicalSectorSize), 6]);
  // Hyper-V marks the parent locator IsRequired only (it describes the file, not the virtual disk).
  if (m.parentLocator) items.push([PARENT_LOCATOR, locator.serialize(m.parentLocator), 4]);
  const size = METADATA_TABLE_SIZE + items.reduce((n, [, data]) => n + Math.ceil(data.length / 8) * 8, 0);
  if (size > regionLength) throw new UnsupportedError('metadata items do not fit the metadata region');
  const region = Buffer.alloc(size);
  SIGNATURE.copy(region, 0);
  region.writeUInt16LE(items.length, 10);
  let off = METADATA_TABLE_SIZE;
  items.forEach(([id, data, flags], i) => {
    const at = 32 + i * ENTRY_SIZE;
    parseGuidLE(id).copy(region, at);
    region.writeUInt32LE(off, at + 16);
    region.writeUInt32LE(data.length, at + 20);
    region.writeUInt32LE(flags, at + 24);
    data.copy(region, off);
    off += Math.ceil(data.length / 8) * 8;
  });
  return region;
}
