/**
 * Staleness: whether a metafile still describes its image (the rule is in docs/metafile.md, "Staleness").
 */
import type { Disk, DiskIdentity } from '../formats/disk.js';
import { openDisk } from '../formats/index.js';
import { displayLocation, type Location } from '../io/location.js';
import { MetafileError } from '../util/errors.js';
import { formatSize } from '../util/units.js';
import { metafileLocationFor, readMetafile, type Metafile } from './metafile.js';

/**
 * Why `current` is not the image `recorded` describes, or null when it still is. `strict` also compares a VHDX's
 * file size and mtime: while an image is being hashed any write is a change, and a VHDX opened earlier would not
 * see another writer's new DataWriteGuid.
 */
export function identityProblem(recorded: DiskIdentity, current: DiskIdentity, strict = false): string | null {
  if (recorded.format !== current.format) return `it was made from a ${recorded.format} image, this is ${current.format}`;
  if (recorded.format !== 'raw' && recorded.contentId !== current.contentId) {
    const what = recorded.format === 'vhdx' ? 'DataWriteGuid' : 'UniqueId';
    return `the image's ${what} changed (${recorded.contentId} -> ${current.contentId})`;
  }
  // VHDX writers renew DataWriteGuid on every visible change; VHD and raw writers leave only size and mtime.
  if (recorded.format === 'vhdx' && !strict) return null;
  if (recorded.fileSize !== current.fileSize) return `the image's file size changed (${recorded.fileSize} -> ${current.fileSize} bytes)`;
  if (recorded.mtimeMs !== current.mtimeMs) {
    return `the image was modified at ${new Date(current.mtimeMs).toISOString()}, after the metafile's record of ${new Date(recorded.mtimeMs).toISOString()}`;
  }
  return null;
}

/**
 * Throws a one-line MetafileError naming the metafile and the fix when `meta` no longer describes the image (an
 * opened Disk, or a location that is opened read-only for the check): a different geometry, a changed identity,
 * or (vbb files, which record none) a metafile older than the image. `identity` is the opened Disk's, when the
 * caller has just read it (it is what the check then vouches for).
 */
export async function checkFresh(meta: Metafile, image: Disk | Location, identity?: DiskIdentity): Promise<void> {
  if (!('read' in image)) {
    const disk = await openDisk(image);
    try {
      return await checkFresh(meta, disk);
    } finally {
      await disk.close();
    }
  }
  const disk = image;
  const s = meta.summary;
  const name = displayLocation(disk.location);
  const stale = (why: string) => new MetafileError(`stale: ${why} (run vhdsync createmeta ${name})`, meta.name);
  if (s.virtualSizeExact && s.virtualSize !== disk.virtualSize) {
    throw stale(`it describes ${formatSize(s.virtualSize)} (${s.virtualSize} bytes) of virtual size, the image has ${disk.virtualSize}`);
  }
  if (!s.virtualSizeExact && s.blockCount !== Math.ceil(disk.virtualSize / s.blockSize)) {
    throw stale(`it lists ${s.blockCount} blocks, the image has ${Math.ceil(disk.virtualSize / s.blockSize)}`);
  }
  if (s.logicalSectorSize !== null && s.logicalSectorSize !== disk.logicalSectorSize) {
    throw stale(`it was made for ${s.logicalSectorSize}-byte sectors, the image has ${disk.logicalSectorSize}`);
  }
  const current = identity ?? (await disk.identity());
  if (s.identity) {
    const why = identityProblem(s.identity, current);
    if (why) throw stale(why);
  } else if (meta.mtimeMs < current.mtimeMs) {
    throw stale('the metafile is older than the image');
  }
}

/**
 * Opens an image's metafile and refuses it (MetafileError, one line) when missing, corrupt or stale; `identity` as
 * in checkFresh.
 */
export async function openFreshMetafile(disk: Disk, identity?: DiskIdentity): Promise<Metafile> {
  const meta = await readMetafile(metafileLocationFor(disk.location), { virtualSize: disk.virtualSize, logicalSectorSize: disk.logicalSectorSize });
  try {
    await checkFresh(meta, disk, identity);
  } catch (err) {
    await meta.close();
    throw err;
  }
  return meta;
}
