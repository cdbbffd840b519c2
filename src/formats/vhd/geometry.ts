/**
 * CHS geometry of a VHD and the rule that decides a VHD's virtual size.
 * The algorithm is the one in the appendix of Microsoft's VHD specification; the size rule is qemu's
 * (block/vpc.c), which is what real-world images need.
 */

/** Cylinders / heads / sectors per track as stored in the footer. */
export interface Geometry {
  cylinders: number;
  heads: number;
  sectorsPerTrack: number;
}

/** The largest geometry the footer can hold; Hyper-V uses it for disks larger than CHS can describe. */
export const MAX_CHS: Geometry = { cylinders: 65535, heads: 16, sectorsPerTrack: 255 };

/**
 * Creators whose current_size is authoritative. qemu's list (`win `, `qem2`, `d2v `, `CTXS`, `tap\0`); other creators get the CHS size.
 */
export const EXACT_SIZE_CREATORS: ReadonlySet<string> = new Set(['win ', 'qem2', 'd2v ', 'CTXS', 'tap\0']);

/** The geometry the spec appendix assigns to a disk of `size` bytes (rounded down to whole sectors). */
export function chsForSize(size: number): Geometry {
  let totalSectors = Math.floor(size / 512);
  const max = MAX_CHS.cylinders * MAX_CHS.heads * MAX_CHS.sectorsPerTrack;
  if (totalSectors > max) totalSectors = max;
  let sectorsPerTrack: number;
  let heads: number;
  let cylinderTimesHeads: number;
  if (totalSectors >= 65535 * 16 * 63) {
    sectorsPerTrack = 255;
    heads = 16;
    cylinderTimesHeads = Math.floor(totalSectors / sectorsPerTrack);
  } else {
    sectorsPerTrack = 17;
    cylinderTimesHeads = Math.floor(totalSectors / sectorsPerTrack);
    heads = Math.floor((cylinderTimesHeads + 1023) / 1024);
    if (heads < 4) heads = 4;
    if (cylinderTimesHeads >= heads * 1024 || heads > 16) {
      sectorsPerTrack = 31;
      heads = 16;
      cylinderTimesHeads = Math.floor(totalSectors / sectorsPerTrack);
    }
    if (cylinderTimesHeads >= heads * 1024) {
      sectorsPerTrack = 63;
      heads = 16;
      cylinderTimesHeads = Math.floor(totalSectors / sectorsPerTrack);
    }
  }
  return { cylinders: Math.floor(cylinderTimesHeads / heads), heads, sectorsPerTrack };
}

/** Bytes addressed by a geometry. */
export function chsBytes(g: Geometry): number {
  return g.cylinders * g.heads * g.sectorsPerTrack * 512;
}

/** True when the geometry is the maximum the footer can hold. */
export function isMaxChs(g: Geometry): boolean {
  return g.cylinders === MAX_CHS.cylinders && g.heads === MAX_CHS.heads && g.sectorsPerTrack === MAX_CHS.sectorsPerTrack;
}

/**
 * The virtual size a reader must use: current_size for creators known to write exact sizes or when
 * CHS is saturated, otherwise the CHS size (Virtual PC images can have CHS size < current_size).
 * An all-zero geometry cannot describe any disk, so current_size is used then too (qemu would see 0 bytes).
 */
export function virtualSizeOf(creatorApp: string, geometry: Geometry, currentSize: number): number {
  if (EXACT_SIZE_CREATORS.has(creatorApp) || isMaxChs(geometry)) return currentSize;
  const chs = chsBytes(geometry);
  return chs === 0 ? currentSize : chs;
}
