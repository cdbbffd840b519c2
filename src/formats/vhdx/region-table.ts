/** The VHDX region table ([MS-VHDX] 2.2.3): two 64 KiB copies at 192 KiB and 256 KiB, CRC-32C over 64 KiB. */
import { CorruptImageError, UnsupportedError } from '../../util/errors.js';
import { crc32cWithZeroedField } from '../../util/crc32c.js';
import { formatGuidLE, parseGuidLE } from '../../util/guid.js';

/** File offsets of the two region table copies. */
export const REGION_TABLE_OFFSETS = [192 * 1024, 256 * 1024] as const;
/** Bytes covered by the region table checksum. */
export const REGION_TABLE_SIZE = 64 * 1024;
/** Region GUIDs this implementation knows. */
export const BAT_REGION = '2dc27766-f623-4200-9d64-115e9bfd4a08';
export const METADATA_REGION = '8b7ca206-4790-4b9a-b8fe-575f050f886e';

const SIGNATURE = Buffer.from('regi', 'latin1');
const MAX_ENTRIES = 2047;
const ENTRY_SIZE = 32;
const MIB = 1 << 20;
/** Regions start after the 1 MiB header area. */
const HEADER_AREA = MIB;

/** One region: a GUID naming it and where it lies in the file. */
export interface Region {
  guid: string;
  fileOffset: number;
  length: number;
  required: boolean;
}

/**
 * Parses one region table copy. Structural damage (signature, checksum) is returned as a string so
 * the caller can fall back to the other copy; semantic problems (overlaps, unknown required
 * regions) throw, since both copies would say the same.
 */
export function parse(bytes: Buffer, subject?: string): Region[] | string {
  if (bytes.length < REGION_TABLE_SIZE) return 'region table is truncated';
  const b = bytes.subarray(0, REGION_TABLE_SIZE);
  if (!b.subarray(0, 4).equals(SIGNATURE)) return 'region table signature is not "regi"';
  if (b.readUInt32LE(4) !== crc32cWithZeroedField(b, 4)) return 'region table checksum mismatch';
  const count = b.readUInt32LE(8);
  if (count > MAX_ENTRIES) return `region table has ${count} entries (at most ${MAX_ENTRIES})`;
  const regions: Region[] = [];
  for (let i = 0; i < count; i++) {
    const at = 16 + i * ENTRY_SIZE;
    const offset = b.readBigUInt64LE(at + 16);
    const r: Region = {
      guid: formatGuidLE(b.subarray(at, at + 16)),
      fileOffset: Number(offset),
      length: b.readUInt32LE(at + 24),
      required: (b.readUInt32LE(at + 28) & 1) === 1,
    };
    if (offset > BigInt(Number.MAX_SAFE_INTEGER) || r.fileOffset % MIB !== 0 || r.length % MIB !== 0 || r.length === 0 || r.fileOffset < HEADER_AREA) {
      throw new CorruptImageError(`region ${r.guid} at ${offset}+${r.length} is not 1 MiB aligned after the header area`, subject);
    }
    regions.push(r);
  }
  checkOverlaps(regions, subject);
  for (const r of regions) {
    if (r.guid !== BAT_REGION && r.guid !== METADATA_REGION && r.required) {
      throw new UnsupportedError(`unknown required region ${r.guid}`, subject);
    }
  }
  for (const want of [BAT_REGION, METADATA_REGION]) {
    const n = regions.filter((r) => r.guid === want).length;
    if (n !== 1) throw new CorruptImageError(`region table has ${n} ${want === BAT_REGION ? 'BAT' : 'metadata'} regions (need exactly one)`, subject);
  }
  return regions;
}

/** Refuses regions that share bytes: two structures in one place would corrupt each other. */
export function checkOverlaps(ranges: Array<{ fileOffset: number; length: number; guid?: string }>, subject?: string, what = 'regions'): void {
  const sorted = [...ranges].sort((x, y) => x.fileOffset - y.fileOffset);
  for (let i = 1; i < sorted.length; i++) {
    const prev = sorted[i - 1];
    if (prev.fileOffset + prev.length > sorted[i].fileOffset) {
      throw new CorruptImageError(`overlapping ${what} at ${prev.fileOffset}+${prev.length} and ${sorted[i].fileOffset}+${sorted[i].length}`, subject);
    }
  }
}

/** Serializes a region table copy with its checksum. */
export function serialize(regions: Region[]): Buffer {
  const b = Buffer.alloc(REGION_TABLE_SIZE);
  SIGNATURE.copy(b, 0);
  b.writeUInt32LE(regions.length, 8);
  regions.forEach((r, i) => {
    const at = 16 + i * ENTRY_SIZE;
    parseGuidLE(r.guid).copy(b, at);
    b.writeBigUInt64LE(BigInt(r.fileOffset), at + 16);
    b.writeUInt32LE(r.length, at + 24);
    b.writeUInt32LE(r.required ? 1 : 0, at + 28);
  });
  b.writeUInt32LE(crc32cWithZeroedField(b, 4), 4);
  return b;
}

/** The current region table: the first valid copy (qemu reads only the first; falling back is what the spec's redundancy is for). */
export function pickValid(copies: Array<Region[] | string>, subject?: string): Region[] {
  const good = copies.find((c): c is Region[] => typeof c !== 'string');
  if (!good) throw new CorruptImageError(`both VHDX region tables are invalid (${copies.join('; ')})`, subject);
  return good;
}
