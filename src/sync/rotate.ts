/**
 * The metafile rotation at the end of a merge: the diff's metafile (which already lists the content the parent
 * has after the merge) becomes the parent's, stamped with the parent's new identity, written atomically.
 */
import type { Location } from '../io/location.js';
import { displayLocation } from '../io/location.js';
import { openDisk } from '../formats/open.js';
import { metafileLocationFor, readMetafile } from '../meta/metafile.js';
import { restampList } from '../meta/restamp.js';
import type { EntryBatch } from '../meta/entries.js';
import { MetafileError } from '../util/errors.js';
import type { Disk, OpenOptions } from '../formats/disk.js';
import type { ParentRecord } from './parent-identity.js';

/**
 * Checks that the diff's metafile, if any, is readable and belongs to this diff (size, and the diff's id recorded
 * by copy), before a merge touches the parent: a list that is not the diff's would be rotated onto the parent.
 * Returns what the diff side records about the parent.
 */
export async function checkDiffMetafile(diffLoc: Location, diff: Pick<Disk, 'virtualSize' | 'identity'>): Promise<ParentRecord> {
  const loc = metafileLocationFor(diffLoc);
  const st = await loc.store.stat(loc.path);
  if (!st) return { parentIdentity: null, writtenMs: (await diffLoc.store.stat(diffLoc.path))?.mtimeMs ?? 0 };
  const meta = await readMetafile(loc, { virtualSize: diff.virtualSize });
  await meta.close();
  const { virtualSize, identity } = meta.summary;
  if (virtualSize !== diff.virtualSize) {
    throw new MetafileError(`describes ${virtualSize} bytes, the diff has ${diff.virtualSize}; it does not belong to this diff`, displayLocation(loc));
  }
  const id = (await diff.identity()).contentId;
  if (identity && identity.contentId !== id) {
    throw new MetafileError(`was written for another diff (id ${identity.contentId}, this diff is ${id}); delete it or copy again`, displayLocation(loc));
  }
  return { parentIdentity: meta.summary.parentIdentity, writtenMs: st.mtimeMs };
}

/**
 * Writes the parent's new metafile from the diff's and returns its location text, or null when the diff has
 * none (the parent's old metafile is then stale, which `check` reports). Idempotent: a rerun rewrites it.
 */
export async function rotateMetafile(diffLoc: Location, parentLoc: Location, vhdSize?: OpenOptions['vhdSize']): Promise<string | null> {
  const from = metafileLocationFor(diffLoc);
  if (!(await from.store.stat(from.path))) return null;
  // The identity is read after the parent was closed: a VHDX writer's last header update is already in it.
  const parent = await openDisk(parentLoc, { vhdSize });
  let identity;
  let sectors;
  let size;
  try {
    identity = await parent.identity();
    sectors = parent.logicalSectorSize;
    size = parent.virtualSize;
  } finally {
    await parent.close();
  }
  const list = await readMetafile(from, { virtualSize: size, logicalSectorSize: sectors });
  const to = metafileLocationFor(parentLoc);
  try {
    await restampList(list, to, identity, sectors);
  } finally {
    await list.close();
  }
  return displayLocation(to);
}

/** Removes the diff's metafile if present. */
export async function removeDiffMetafile(diffLoc: Location): Promise<void> {
  const m = metafileLocationFor(diffLoc);
  if (await m.store.stat(m.path)) await m.store.unlink(m.path);
}

/**
 * Where the parent's content first differs from the diff's metafile (what the rotation would make the parent's
 * list), as a phrase for messages, or null when it matches or the diff has no metafile. Reads the whole parent.
 */
export async function firstDifference(diffLoc: Location, parentLoc: Location, vhdSize?: OpenOptions['vhdSize']): Promise<string | null> {
  const from = metafileLocationFor(diffLoc);
  if (!(await from.store.stat(from.path))) return null;
  // Loaded here: only a resumed merge hashes, and the hashers' modules and native helpers cost every merge start-up time.
  const { hashDisk } = await import('../meta/hash-disk.js');
  const parent = await openDisk(parentLoc, { vhdSize });
  try {
    const list = await readMetafile(from, { virtualSize: parent.virtualSize, logicalSectorSize: parent.logicalSectorSize });
    try {
      const s = list.summary;
      let batch: EntryBatch | null = null;
      for await (const b of hashDisk(parent, { algorithm: s.algorithm, blockSize: s.blockSize })) {
        if (!batch || b.index >= batch.first + batch.count) batch = await list.read(b.index, 1 << 16);
        const i = b.index - batch.first;
        if (!b.digest.equals(batch.digests.subarray(i * batch.digestLength, (i + 1) * batch.digestLength))) {
          return `block ${b.index} (offset ${b.offset}) differs from the diff's list`;
        }
      }
      return null;
    } finally {
      await list.close();
    }
  } finally {
    await parent.close();
  }
}
