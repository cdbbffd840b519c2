/**
 * The sector bitmap in front of each VHD data block: one bit per 512-byte sector, most significant bit
 * first. In a differencing image 1 = the sector is in this file, 0 = read the parent; in a dynamic
 * image it is informational.
 */
import { alignUp } from '../../util/units.js';

/** On-disk size of the bitmap of a block of `blockSize` bytes (rounded up to a sector). */
export function bitmapBytes(blockSize: number): number {
  return alignUp(Math.ceil(blockSize / 512 / 8), 512);
}

/** True when sector `i` of the block is marked present. */
export function isSectorSet(bitmap: Uint8Array, i: number): boolean {
  return (bitmap[i >>> 3] & (0x80 >>> (i & 7))) !== 0;
}

/** Marks sectors [from, from+count) present. */
export function setSectors(bitmap: Uint8Array, from: number, count: number): void {
  let i = from;
  const end = from + count;
  while (i < end && i & 7) setOne(bitmap, i++);
  while (i + 8 <= end) {
    bitmap[i >>> 3] = 0xff;
    i += 8;
  }
  while (i < end) setOne(bitmap, i++);
}

function setOne(bitmap: Uint8Array, i: number): void {
  bitmap[i >>> 3] |= 0x80 >>> (i & 7);
}

/** A run of sectors with one presence state. */
export interface SectorRun {
  first: number;
  count: number;
  present: boolean;
}

/** Splits sectors [from, from+count) into runs of equal presence; whole 0x00/0xFF bytes are skipped fast. */
export function sectorRuns(bitmap: Uint8Array, from: number, count: number): SectorRun[] {
  const runs: SectorRun[] = [];
  const end = from + count;
  let i = from;
  while (i < end) {
    const present = isSectorSet(bitmap, i);
    const full = present ? 0xff : 0x00;
    let j = i + 1;
    while (j < end) {
      if ((j & 7) === 0 && j + 8 <= end && bitmap[j >>> 3] === full) {
        j += 8;
        continue;
      }
      if (isSectorSet(bitmap, j) !== present) break;
      j++;
    }
    runs.push({ first: i, count: j - i, present });
    i = j;
  }
  return runs;
}
