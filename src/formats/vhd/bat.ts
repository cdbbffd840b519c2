/**
 * The Block Allocation Table: one big-endian uint32 per block, the sector number of the block's
 * sector bitmap (data follows the bitmap), 0xFFFFFFFF when unallocated. Padded to a sector.
 */
import { CorruptImageError } from '../../util/errors.js';
import { alignUp } from '../../util/units.js';

export const UNALLOCATED = 0xffffffff;

/** Bytes the BAT occupies on disk for `entries` entries (padded to 512). */
export function batBytes(entries: number): number {
  return alignUp(entries * 4, 512);
}

/** Parses `entries` entries (the caller has bounded `entries` against the file). */
export function parseBat(bytes: Buffer, entries: number, subject: string): Uint32Array {
  if (bytes.length < entries * 4) throw new CorruptImageError(`VHD BAT is truncated (${entries} entries expected)`, subject);
  const out = new Uint32Array(entries);
  for (let i = 0; i < entries; i++) out[i] = bytes.readUInt32BE(i * 4);
  return out;
}

/** Serializes entries [from, to) of `bat` (no padding). */
export function serializeBat(bat: Uint32Array, from = 0, to = bat.length): Buffer {
  const b = Buffer.alloc((to - from) * 4);
  for (let i = from; i < to; i++) b.writeUInt32BE(bat[i], (i - from) * 4);
  return b;
}

/** A new table with every entry unallocated, serialized with its padding (padding is 0xFF too, as Windows writes it). */
export function emptyBatBytes(entries: number): Buffer {
  return Buffer.alloc(batBytes(entries), 0xff);
}
