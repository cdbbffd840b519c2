/**
 * The metafile rotation at the end of a merge: the diff's metafile (which already lists the content the parent
 * has after the merge) becomes the parent's, stamped with the parent's new identity.
 * PROVISIONAL: waits for src/meta (readMetafile/writeMetafile); until then only the "no metafile" case works.
 */
import type { Location } from '../io/location.js';
import { displayLocation, sibling } from '../io/location.js';
import { UnsupportedError } from '../util/errors.js';

/** The metafile of an image: `<image>.blocklist.bin` next to it. */
function metaOf(loc: Location): Location {
  return sibling(loc, loc.store.paths.basename(loc.path) + '.blocklist.bin');
}

/** Checks that the diff's metafile, if any, is readable and fits the disk, before a merge touches the parent. */
export async function checkDiffMetafile(diffLoc: Location, _virtualSize: number): Promise<void> {
  if (await diffLoc.store.stat(metaOf(diffLoc).path)) throw new UnsupportedError('metafile rotation not available yet', displayLocation(diffLoc));
}

/** Writes the parent's new metafile from the diff's; returns its location text, or null when the diff has none. */
export async function rotateMetafile(diffLoc: Location, _parentLoc: Location): Promise<string | null> {
  if (await diffLoc.store.stat(metaOf(diffLoc).path)) throw new UnsupportedError('metafile rotation not available yet', displayLocation(diffLoc));
  return null;
}

/** Removes the diff's metafile if present. */
export async function removeDiffMetafile(diffLoc: Location): Promise<void> {
  const m = metaOf(diffLoc);
  if (await m.store.stat(m.path)) await m.store.unlink(m.path);
}
