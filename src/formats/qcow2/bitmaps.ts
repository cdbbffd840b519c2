/**
 * Persistent dirty bitmaps (qcow2.rst, "Bitmaps extension" and "Bitmap directory"). This writer does not record its
 * writes in them, so before the first write every enabled (`auto`) bitmap is marked in use, which the spec defines
 * as "may be inconsistent" and which qemu itself sets on bitmaps it opens for writing. Their clusters stay referenced
 * (qemu-img check stays clean) and the bitmaps autoclear bit stays set; qemu will not use those bitmaps again until
 * they are removed (`qemu-img bitmap --remove`) and re-created.
 */
import type { RandomAccessFile } from '../../io/store.js';
import { CorruptImageError } from '../../util/errors.js';

const IN_USE = 1;
const AUTO = 2;
/** Fixed part of a directory entry: table offset u64, table size u32, flags u32, type, granularity, name size u16, extra size u32. */
const ENTRY_FIXED = 24;

/** Where the bitmap directory is (from the bitmaps extension). */
export interface BitmapDirectory {
  count: number;
  offset: number;
  size: number;
}

/** Marks every enabled bitmap not yet in use as in use, durably; returns how many it marked. */
export async function markBitmapsInUse(file: RandomAccessFile, dir: BitmapDirectory, clusterSize: number, subject: string): Promise<number> {
  const corrupt = (why: string) => new CorruptImageError(`bitmap directory ${why}`, subject);
  if (dir.offset === 0 || dir.offset % clusterSize !== 0) throw corrupt(`offset ${dir.offset} is not a cluster-aligned offset after the header`);
  const bytes = await file.read(dir.offset, dir.size);
  if (bytes.length < dir.size) throw corrupt(`at ${dir.offset}+${dir.size} is cut short by the end of the file`);
  let at = 0;
  let marked = 0;
  for (let i = 0; i < dir.count; i++) {
    if (at + ENTRY_FIXED > bytes.length) throw corrupt(`holds fewer than the ${dir.count} entries the extension says`);
    const flags = bytes.readUInt32BE(at + 12);
    const length = Math.ceil((ENTRY_FIXED + bytes.readUInt32BE(at + 20) + bytes.readUInt16BE(at + 18)) / 8) * 8;
    if (at + length > bytes.length) throw corrupt(`entry ${i} runs past the directory's end`);
    if (flags & AUTO && !(flags & IN_USE)) {
      bytes.writeUInt32BE((flags | IN_USE) >>> 0, at + 12);
      marked++;
    }
    at += length;
  }
  if (marked > 0) {
    await file.write(dir.offset, bytes);
    await file.flush();
  }
  return marked;
}
