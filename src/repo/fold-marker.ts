/**
 * The fold marker `<disk>/folding.json` of a folder repository: the manifest's `pending` record, kept beside it on
 * its own from before a fold's first change until a manifest without a pending step is in place. The merge's own
 * files (state, marker) are gone before the fold's last rename, so without this file a manifest lost in that window
 * would leave the dropped point's image holding the child's content under the dropped point's id, and nothing in
 * the folder would say so (`verify --repair` would list it as an untouched point). One JSON object, replaced
 * atomically; at most one exists, since a disk folds one point at a time under its lock.
 */
import { readSmallFile, writeBytesAtomically } from '../io/atomic.js';
import { displayLocation, sibling, type Location } from '../io/location.js';
import { RepositoryDamageError } from '../util/errors.js';
import { parseJsonObject } from '../util/json-object.js';
import { isPointId } from './names.js';

/** The marker's name in the disk's folder. */
export const FOLD_MARKER_NAME = 'folding.json';

/** A marker larger than this is not ours. */
const MAX_BYTES = 4 << 10;

/** The fold a marker records: `drop`'s image takes `into`'s content and then its name. */
export interface FoldMarker {
  drop: string;
  into: string;
}

/** Where the fold marker of the disk folder holding `manifest` lives. */
export function foldMarkerLocation(manifest: Location): Location {
  return sibling(manifest, FOLD_MARKER_NAME);
}

/** Parses and checks a marker's bytes; `subject` names the file in errors. */
export function parseFoldMarker(bytes: Uint8Array, subject?: string): FoldMarker {
  const bad = (why: string) => new RepositoryDamageError(`not a valid fold marker: ${why}`, subject);
  const o = parseJsonObject(bytes, MAX_BYTES, bad);
  if (o.format !== 'vhdsync-fold') throw bad('not a vhdsync fold marker');
  if (o.version !== 1) throw bad(`unknown version ${String(o.version)}`);
  if (typeof o.drop !== 'string' || !isPointId(o.drop)) throw bad('field drop is not a point id');
  if (typeof o.into !== 'string' || !isPointId(o.into) || o.into === o.drop) throw bad('field into is not another point id');
  return { drop: o.drop, into: o.into };
}

/** Reads the marker at `loc`, or null when there is none. */
export async function readFoldMarker(loc: Location): Promise<FoldMarker | null> {
  const subject = displayLocation(loc);
  const bytes = await readSmallFile(loc, MAX_BYTES, () => new RepositoryDamageError('not a valid fold marker: too large', subject));
  return bytes && parseFoldMarker(bytes, subject);
}

/** Writes the marker at `loc` atomically (temp name, flush, rename, folder flush). */
export async function writeFoldMarker(loc: Location, fold: FoldMarker): Promise<void> {
  const body = JSON.stringify({ format: 'vhdsync-fold', version: 1, drop: fold.drop, into: fold.into }, null, 2) + '\n';
  await writeBytesAtomically(loc, Buffer.from(body, 'utf8'), { overwrite: true });
}

/** Removes the marker at `loc`, if any, durably. */
export async function removeFoldMarker(loc: Location): Promise<void> {
  if (!(await loc.store.stat(loc.path))) return;
  await loc.store.unlink(loc.path);
  await loc.store.syncDir(loc.store.paths.dirname(loc.path));
}
