/**
 * What an interrupted merge leaves behind, found from either side: the state file beside the parent, the marker
 * beside the diff (they may be in different folders after `copy --diffdir`). Finishing the last step, telling the
 * user how to get out when a merge cannot be finished (its diff is gone), and `merge --discard`.
 */
import type { Location } from '../io/location.js';
import { displayLocation, withPath } from '../io/location.js';
import { metafileLocationFor } from '../meta/metafile.js';
import { openDisk } from '../formats/open.js';
import { BusyError, NotFoundError } from '../util/errors.js';
import { removePartials } from './leftovers.js';
import { lockImage, type ImageLock } from './lock.js';
import { MERGE_STATE_SUFFIX, mergeStateLocationFor, readMergeState, removeMergeState, type MergeState } from './merge-state.js';
import { mergeMarkerLocationFor, readMergeMarker, removeMergeMarker, writeMergeMarker, type MergeMarker } from './merge-marker.js';
import { removeDiffMetafile } from './rotate.js';
import { isChunkedDiff, scanChunkedDiff } from './chunked-diff.js';

/** A merge state found for a diff, with where its parent is. */
export interface PendingMerge {
  parent: Location;
  stateLoc: Location;
  /** Null when the marker points at a parent with no state for this diff (the merge finished, or never began). */
  state: MergeState | null;
  marker: MergeMarker | null;
}

/**
 * The content id of the image at `diff` (VHD UniqueId / VHDX DataWriteGuid), '' when a file is there but cannot
 * be opened with its parent (so it cannot be shown to be any merge's diff), null when there is no file.
 */
export async function diffIdAt(diff: Location): Promise<string | null> {
  if (!(await diff.store.stat(diff.path))) return null;
  if (isChunkedDiff(diff.path)) {
    // Frames have no header: the id comes from their headers (sync/chunked-diff.ts), as the merge took it.
    const file = await diff.store.open(diff.path, 'read').catch(() => null);
    if (!file) return '';
    try {
      return (await scanChunkedDiff(file, diff, Number.MAX_SAFE_INTEGER)).identity.contentId;
    } catch {
      return '';
    } finally {
      await file.close();
    }
  }
  const disk = await openDisk(diff, { ignoreParentMismatch: true }).catch(() => null);
  if (!disk) return '';
  try {
    return (await disk.identity()).contentId;
  } finally {
    await disk.close();
  }
}

/** Whether the diff of `state` is still there: a file under its name with its content id (not a later diff of that name). */
export async function diffOfStatePresent(state: MergeState, at: Location): Promise<boolean> {
  return (await diffIdAt(withPath(at, state.diff))) === state.diffId;
}

/** Whether `marker` is the one of the merge `state` describes. */
function markerOf(marker: MergeMarker | null, state: MergeState): boolean {
  return Boolean(marker && marker.diffId === state.diffId && marker.parent === state.parent);
}

/**
 * Last step of a merge: removes the diff and its metafile (unless kept, or unless the file under the diff's name
 * is not this merge's diff), marks the merge's marker finished, removes the state file, then the marker, then
 * temp files of state and metafile writes that killed runs left behind. Each removal is idempotent, so a rerun
 * after a kill anywhere in here completes it. `diffIsOurs`: the caller opened the diff and checked its id.
 */
export async function cleanupMerge(diff: Location, stateLoc: Location, state: MergeState, parent: Location, diffIsOurs = false): Promise<void> {
  if (!state.keepDiff && (diffIsOurs || (await diffIdAt(diff)) === state.diffId)) {
    await removeDiffMetafile(diff);
    if (await diff.store.stat(diff.path)) await diff.store.unlink(diff.path);
  }
  // A marker left after the state is gone then says "done", not "never started". Another merge's marker stays.
  const marker = await readMergeMarker(diff).catch(() => null);
  const ours = markerOf(marker, state);
  if (ours) await writeMergeMarker(diff, { ...marker!, finished: true });
  await removeMergeState(stateLoc);
  // Not flushed: should the removal be lost, the finished marker reads as "done" to merge (which removes it) and
  // is ignored by copy (docs/decisions/0003).
  if (ours) await removeMergeMarker(diff, false);
  await removePartials(stateLoc, mergeMarkerLocationFor(diff), metafileLocationFor(parent));
}

/**
 * Finds the merge of `diff` (which may be gone): through the marker beside it, else (state files written before
 * markers existed) a state file in the diff's own folder that names it. Null when there is neither.
 */
export async function findMergeOf(diff: Location): Promise<PendingMerge | null> {
  const marker = await readMergeMarker(diff);
  if (marker) {
    const parent = withPath(diff, marker.parent);
    const stateLoc = mergeStateLocationFor(parent);
    const state = await readMergeState(stateLoc);
    // Matched by the diff's id, not its path's spelling (a symlinked folder, another case on a share).
    return { parent, stateLoc, state: state && state.diffId === marker.diffId ? state : null, marker };
  }
  const { store, path } = diff;
  const dir = store.paths.dirname(path);
  for (const name of await store.list(dir).catch(() => [] as string[])) {
    if (!name.endsWith(MERGE_STATE_SUFFIX)) continue;
    const stateLoc = { store, path: store.paths.join(dir, name) };
    const state = await readMergeState(stateLoc).catch(() => null);
    if (state && state.diff === path) return { parent: withPath(diff, state.parent), stateLoc, state, marker: null };
  }
  return null;
}

/** How far a merge had got, in words. */
function progressOf(state: MergeState): string {
  if (state.step !== 'merging') return 'after all of its data was merged';
  const pct = state.virtualSize > 0 ? Math.floor((state.doneOffset / state.virtualSize) * 100) : 0;
  return `while merging (at least ${pct}% done)`;
}

/** One line for a merge that cannot be finished because its diff is gone, naming the ways out. */
export function diffGoneMessage(state: MergeState, parent: Location): string {
  const p = displayLocation(parent);
  const d = parent.store.display(state.diff);
  const holds = state.step === 'merging' ? `${p} holds part of the diff's content: restore it from a backup, or keep it as it is with` : `${p} holds the merged content; finish with`;
  return `the merge of ${d} into ${p} was interrupted ${progressOf(state)} and the diff is gone (if you moved it, run vhdsync merge at its new place), so it cannot be finished here; ${holds} vhdsync merge --discard ${p}, then vhdsync createmeta ${p}`;
}

/** The line for a parent with a merge pending, from whoever wants to write it. */
export function pendingMergeMessage(state: MergeState, parent: Location, diffExists: boolean): string {
  const d = parent.store.display(state.diff);
  return diffExists ? `a merge of ${d} into this image is pending; run vhdsync merge ${d} first` : diffGoneMessage(state, parent);
}

/**
 * Called by a run holding `image`'s lock before it writes `image`: a pending merge whose diff is present must be
 * finished first (throws, naming the command); one that only lacked its cleanup is finished here; one whose diff
 * is gone mid-merge throws, naming `merge --discard`. True when it finished one (the image's files changed).
 * `beforeLock` runs once a merge state is found, before the diff's lock is taken (copy lets go of its early one there).
 */
export async function settlePendingMerge(image: Location, opts: { beforeLock?: () => Promise<void>; signal?: AbortSignal } = {}): Promise<boolean> {
  const stateLoc = mergeStateLocationFor(image);
  const state = await readMergeState(stateLoc);
  if (!state) return false;
  await opts.beforeLock?.();
  const diff = withPath(image, state.diff);
  // `signal` ends the wait for the lock (a stale-looking one is watched for its lease); a cleanup once begun finishes.
  const diffLock = await lockImage(diff, 'merge', undefined, opts.signal);
  try {
    // Looked at under the diff name's lock: a later diff of the same name (another target's) is not this one.
    const exists = await diffOfStatePresent(state, image);
    if (exists || state.step !== 'cleanup') throw new BusyError(pendingMergeMessage(state, image, exists), displayLocation(image));
    await cleanupMerge(diffLock.guard(diff), stateLoc, state, image);
    return true;
  } finally {
    await diffLock.release();
  }
}

/**
 * Refuses to write a new diff under `diff`'s name while the diff there is being merged into another image (its
 * marker names a parent whose state names this diff, and the file is that diff): replacing it would leave that
 * merge unable to finish.
 */
export async function refuseDiffInMerge(diff: Location, target: Location): Promise<void> {
  const marker = await readMergeMarker(diff).catch(() => null);
  if (!marker || marker.finished || marker.parent === target.path) return;
  const parent = withPath(diff, marker.parent);
  const state = await readMergeState(mergeStateLocationFor(parent)).catch(() => null);
  // Only the diff itself matters: once it is gone, its merge needs nothing under this name but the marker.
  if (!state || state.diffId !== marker.diffId || (await diffIdAt(diff)) !== state.diffId) return;
  const d = displayLocation(diff);
  throw new BusyError(`${d} is being merged into ${displayLocation(parent)} (interrupted); run vhdsync merge ${d} first`, displayLocation(target));
}

/** What `merge --discard` did. */
export interface DiscardSummary {
  parent: string;
  diff: string;
  /** The step the interrupted merge had reached. */
  step: MergeState['step'];
  /** True when only the cleanup was left, so the merge was finished rather than discarded. */
  finished: boolean;
  /** Bytes of the disk at or below which the merge had certainly finished (the whole disk past `merging`). */
  doneOffset: number;
  virtualSize: number;
}

/**
 * `merge --discard PATH`: gives up an interrupted merge whose diff is gone (PATH is the parent, or the diff's
 * name): removes its state file and marker, so the parent can be written again. A merge whose diff is still
 * there is refused (it can be finished; it cannot be undone).
 */
export async function discardMerge(where: Location): Promise<DiscardSummary> {
  const subject = displayLocation(where);
  let parent = where;
  if (!(await where.store.stat(mergeStateLocationFor(where).path))) {
    const found = await findMergeOf(where);
    if (!found?.state) {
      if (found?.marker) await withLock(where, (d) => removeMergeMarker(d));
      throw new NotFoundError('no interrupted merge into or of this image', subject);
    }
    parent = found.parent;
  }
  return withLock(parent, async (p) => {
    const stateLoc = mergeStateLocationFor(p);
    const state = await readMergeState(stateLoc);
    if (!state) throw new NotFoundError('no interrupted merge into or of this image', subject);
    const diff = withPath(p, state.diff);
    const d = displayLocation(diff);
    const result = { parent: displayLocation(p), diff: d, step: state.step, doneOffset: state.step === 'merging' ? state.doneOffset : state.virtualSize, virtualSize: state.virtualSize };
    return withLock(diff, async (g) => {
      if (state.step === 'cleanup') {
        await cleanupMerge(g, stateLoc, state, p);
        return { ...result, finished: true };
      }
      if (await diffOfStatePresent(state, p)) {
        throw new BusyError(`the diff ${d} is still there: run vhdsync merge ${d} to finish the merge (an interrupted merge can be finished, not undone)`, subject);
      }
      const marker = await readMergeMarker(g).catch(() => null);
      await removeMergeState(stateLoc);
      if (markerOf(marker, state)) await removeMergeMarker(g);
      await removePartials(stateLoc);
      await removePartials(mergeMarkerLocationFor(g));
      return { ...result, finished: false };
    });
  });
}

async function withLock<T>(image: Location, fn: (guarded: Location) => Promise<T>): Promise<T> {
  const lock: ImageLock = await lockImage(image, 'merge');
  try {
    return await fn(lock.guard(image));
  } finally {
    await lock.release();
  }
}
