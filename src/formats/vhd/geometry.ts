/**
 * CHS geometry of a VHD and the rule that decides a VHD's virtual size.
 * The algorithm is the one in the appendix of Microsoft's VHD specification; the size rule follows what each
 * producer's own ecosystem reads (docs/decisions/0005-vhd-creator.md).
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
 * Creators whose guests see the CHS size: Virtual PC and Virtual Server emulate an IDE disk of exactly the geometry,
 * so a current_size above it was never visible. Every other producer (Hyper-V `win `, vhd-tool/XAPI `caml`, Xen
 * Orchestra `xo  `, blktap `tap\0`, Disk2vhd `d2v `, XenConverter `CTXS`, qemu `qemu`/`qem2`, VirtualBox `vbox`, ...)
 * means current_size, and Windows, XAPI, XO and libvhdi read that.
 */
export const CHS_SIZE_CREATORS: ReadonlySet<string> = new Set(['vpc ', 'vs  ']);

/** Which footer field gives the virtual size: the creator's rule (default), or forced (`--vhd-size`). */
export type VhdSizeRule = 'chs' | 'current';

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
 * The virtual size a reader must use: current_size, except for Virtual PC / Virtual Server images (or with `rule`
 * 'chs'), which take the CHS size. A saturated geometry (disks larger than CHS can describe) and an all-zero one
 * describe no real size, so current_size is used for them whatever the rule, as qemu does.
 */
export function virtualSizeOf(creatorApp: string, geometry: Geometry, currentSize: number, rule?: VhdSizeRule): number {
  const useChs = rule ? rule === 'chs' : CHS_SIZE_CREATORS.has(creatorApp);
  if (!useChs || isMaxChs(geometry)) return currentSize;
  const chs = chsBytes(geometry);
  return chs === 0 ? currentSize : chs;
}
