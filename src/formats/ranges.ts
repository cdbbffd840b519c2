import type { Disk, Extent } from './disk.js';
import { UsageError } from '../util/errors.js';
import { displayLocation } from '../io/location.js';

/** Refuses reads and writes outside the virtual disk. */
export function checkRange(disk: Pick<Disk, 'virtualSize' | 'location'>, offset: number, length: number): void {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > disk.virtualSize) {
    throw new UsageError(`range ${offset}+${length} is outside the virtual disk (size ${disk.virtualSize})`, displayLocation(disk.location));
  }
}

/** Zeroes `buf` from `from` to its end and returns it. */
export function zeroFill(buf: Buffer, from: number): Buffer {
  buf.fill(0, from);
  return buf;
}

/** Appends an extent, merging it with the previous one when they touch and agree. */
export function pushExtent(out: Extent[], e: Extent): void {
  if (e.length === 0) return;
  const last = out[out.length - 1];
  if (last && last.state === e.state && last.depth === e.depth && last.offset + last.length === e.offset) {
    last.length += e.length;
  } else {
    out.push({ ...e });
  }
}
