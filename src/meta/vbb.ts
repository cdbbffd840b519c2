/**
 * VhdBlockBackup's headerless metafile: for each 2 MiB block, the first 16 bytes of its SHA-1, nothing else
 * (docs/metafile.md, "vbb layout").
 */
import { MetafileError } from '../util/errors.js';
import { formatSize } from '../util/units.js';
import type { EntryBatch } from './entries.js';

export const VBB_BLOCK_SIZE = 2 << 20;
export const VBB_DIGEST_LENGTH = 16;
const STATE_DATA = 2;

/** The exact length of a vbb list for an image of `virtualSize` bytes. */
export function vbbLength(virtualSize: number): number {
  return VBB_DIGEST_LENGTH * Math.ceil(virtualSize / VBB_BLOCK_SIZE);
}

/**
 * Checks a headerless file's length and returns its block count. With the image's virtual size the length must
 * match exactly; without it, any multiple of 16 is accepted.
 */
export function vbbBlockCount(fileLength: number, virtualSize: number | undefined, subject: string): number {
  if (virtualSize !== undefined && fileLength !== vbbLength(virtualSize)) {
    throw new MetafileError(
      `not a metafile for this image: no vhdsync header, and its ${fileLength} bytes are not the ${vbbLength(virtualSize)} a VhdBlockBackup list of a ${formatSize(virtualSize)} image has (recreate it with vhdsync createmeta)`,
      subject,
    );
  }
  if (fileLength === 0 && virtualSize === undefined) {
    throw new MetafileError('empty file: not a metafile (recreate it with vhdsync createmeta)', subject);
  }
  if (fileLength % VBB_DIGEST_LENGTH !== 0) {
    throw new MetafileError(`not a metafile: no vhdsync header, and ${fileLength} bytes is not a multiple of 16 as a VhdBlockBackup list would be`, subject);
  }
  return fileLength / VBB_DIGEST_LENGTH;
}

/** Turns raw vbb bytes into an EntryBatch; every entry reads as data (the layout has no states). */
export function decodeVbbEntries(bytes: Buffer, first: number): EntryBatch {
  const count = bytes.length / VBB_DIGEST_LENGTH;
  return { first, count, digestLength: VBB_DIGEST_LENGTH, states: new Uint8Array(count).fill(STATE_DATA), digests: bytes };
}
