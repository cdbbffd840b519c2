/**
 * The marker `<diff>.merging.json` beside a diff being merged: it names the parent, so the merge state (which
 * sits beside the parent) is found from the diff's side even after the diff itself is gone, whichever folders
 * the two are in (`copy --diffdir`). Written before the state file, removed after it. One JSON object, replaced
 * atomically.
 */
import type { Location } from '../io/location.js';
import { displayLocation, sibling } from '../io/location.js';
import { readSmallFile, writeBytesAtomically } from '../io/atomic.js';
import { MetafileError } from '../util/errors.js';
import { parseJsonObject } from '../util/json-object.js';

/** Suffix appended to the diff's file name. */
export const MERGE_MARKER_SUFFIX = '.merging.json';

/** A marker larger than this is not ours. */
const MAX_MARKER_BYTES = 16 << 10;

/** The content of a marker. */
export interface MergeMarker {
  version: 1;
  /** The parent's path in the diff's store: its state file is `<parent>.merge-state.json`. */
  parent: string;
  /** The diff's content id, as the state file records it. */
  diffId: string;
  /** Set just before the state file is removed: the merge is complete, only this marker is left to delete. */
  finished: boolean;
  /** `--keep-diff` as the first run was given it, durable before the state file exists. */
  keepDiff: boolean;
}

/** Where the marker of a merge of `diff` lives. */
export function mergeMarkerLocationFor(diff: Location): Location {
  return sibling(diff, diff.store.paths.basename(diff.path) + MERGE_MARKER_SUFFIX);
}

/** Parses and checks a marker's bytes; `subject` names the file in errors. */
export function parseMarker(bytes: Uint8Array, subject?: string): MergeMarker {
  const bad = (why: string) => new MetafileError(`not a valid merge marker: ${why}`, subject);
  const o = parseJsonObject(bytes, MAX_MARKER_BYTES, bad);
  if (o.version !== 1) throw bad(`unknown version ${String(o.version)}`);
  if (typeof o.parent !== 'string' || o.parent === '') throw bad('field parent missing');
  if (typeof o.diffId !== 'string') throw bad('field diffId missing');
  return { version: 1, parent: o.parent, diffId: o.diffId, finished: o.finished === true, keepDiff: o.keepDiff === true };
}

/** Reads the marker beside `diff`, or null when there is none. */
export async function readMergeMarker(diff: Location): Promise<MergeMarker | null> {
  const loc = mergeMarkerLocationFor(diff);
  const subject = displayLocation(loc);
  const bytes = await readSmallFile(loc, MAX_MARKER_BYTES, () => new MetafileError('not a valid merge marker: too large', subject));
  return bytes && parseMarker(bytes, subject);
}

/** Writes the marker beside `diff` atomically (temp name, flush, rename, folder flush). */
export async function writeMergeMarker(diff: Location, marker: MergeMarker): Promise<void> {
  await writeBytesAtomically(mergeMarkerLocationFor(diff), Buffer.from(JSON.stringify(marker, null, 2) + '\n', 'utf8'), { overwrite: true });
}

/**
 * Removes the marker beside `diff`, if any, durably unless `durable` is false: the last step of a merge's cleanup,
 * whose marker says `finished` by then, which every reader takes for "done" (a lost removal costs nothing).
 */
export async function removeMergeMarker(diff: Location, durable = true): Promise<void> {
  const loc = mergeMarkerLocationFor(diff);
  if (await loc.store.stat(loc.path)) await loc.store.unlink(loc.path);
  if (durable) await loc.store.syncDir(loc.store.paths.dirname(loc.path));
}
