/**
 * What a killed server left behind, settled at the next start before any request is served: an import whose
 * merge had begun is finished (the merge resumes from its state file), an import still uploading is deleted
 * (the disk was never touched). Either way the disk then reads as a whole: the old content or the new.
 */
import { withPath } from '../io/location.js';
import { removePartials } from '../sync/leftovers.js';
import { LOCK_SUFFIX, lockImage } from '../sync/lock.js';
import { mergeDiff } from '../sync/merge.js';
import { MERGE_STATE_SUFFIX, readMergeState } from '../sync/merge-state.js';
import { BusyError } from '../util/errors.js';
import type { Catalog } from './catalog.js';
import { IMPORT_DIFF_RE } from './import.js';
import { NEW_DISK_RE } from './import-new.js';
import { mergeMarkerLocationFor } from '../sync/merge-marker.js';

/** Any file of an import: its diff, and names derived from it (marker, lock, temp files, which may add a dot in front). */
const IMPORT_FILE_RE = /^\.?\.(.+?)\.import-([0-9a-f]{16})\.(vhd|vhdx|qcow2)(?:\.|$)/;

/** One settled leftover, for the log. */
export interface Recovered {
  disk: string;
  /**
   * `merged`: an interrupted merge was finished; `removed`: an unfinished upload was deleted; `unlocked`: the lock
   * or temp files of a dead run were removed; `busy`: another run holds the disk.
   */
  action: 'merged' | 'removed' | 'unlocked' | 'busy';
  file: string;
}

/** Settles every leftover import in the folder. */
export async function recoverImports(catalog: Catalog): Promise<Recovered[]> {
  const { store, path: dir } = catalog.root;
  const out: Recovered[] = [];
  const names = await store.list(dir);
  const finishing = new Set<string>();
  // Merges first: their state file names the diff (which may already be gone if the kill came during cleanup).
  for (const n of names.filter((x) => x.endsWith(MERGE_STATE_SUFFIX))) {
    const state = await readMergeState(catalog.at(n)).catch(() => null);
    const diffName = state ? store.paths.basename(state.diff) : '';
    const m = IMPORT_DIFF_RE.exec(diffName);
    if (!state || !m || store.paths.dirname(state.diff) !== dir) continue;
    finishing.add(diffName);
    try {
      await mergeDiff(withPath(catalog.root, state.diff));
      out.push({ disk: m[1], action: 'merged', file: diffName });
    } catch (err) {
      if (!(err instanceof BusyError)) throw err;
      out.push({ disk: m[1], action: 'busy', file: diffName });
    }
  }
  // Everything else of an import (its diff, the merge's marker and the lock on the diff's name, their temp files)
  // belongs to an upload that never reached its merge: it goes.
  const unfinished = new Map<string, string>();
  for (const n of names) {
    const m = IMPORT_FILE_RE.exec(n);
    const diffName = m ? `.${m[1]}.import-${m[2]}.${m[3]}` : '';
    if (m && !finishing.has(diffName)) unfinished.set(diffName, m[1]);
  }
  for (const [diffName, disk] of unfinished) {
    // The disk's lock tells a dead server's upload from a live one's (another serve on the same folder).
    const locks = [];
    try {
      locks.push(await lockImage(catalog.at(disk), 'import'));
      locks.push(await lockImage(catalog.at(diffName), 'import'));
    } catch (err) {
      for (const l of locks) await l.release();
      if (!(err instanceof BusyError)) throw err;
      out.push({ disk, action: 'busy', file: diffName });
      continue;
    }
    try {
      const diff = catalog.at(diffName);
      for (const loc of [diff, mergeMarkerLocationFor(diff)]) await store.unlink(loc.path).catch(() => {});
      await removePartials(diff);
      // A kill while the merge's first state file was being written leaves its temp file beside the disk.
      await removePartials(catalog.at(disk));
      out.push({ disk, action: 'removed', file: diffName });
    } finally {
      for (const l of locks.reverse()) await l.release();
    }
  }
  // A run killed before its upload made a file leaves only its lock (and perhaps temp files): taking the lock
  // breaks it if its holder is dead, and the temp files go while it is held. An import into a new disk
  // (import-new.ts) killed before its rename leaves a lock and a temp file but no disk.
  const now = await store.list(dir);
  const newDisks = new Set(now.map((x) => /^\.(.+?)\.[0-9a-f]{8}\.partial$/.exec(x)?.[1] ?? '').filter((x) => NEW_DISK_RE.test(x)));
  for (const n of now.filter((x) => x.endsWith(LOCK_SUFFIX))) {
    const disk = n.slice(0, -LOCK_SUFFIX.length);
    if (NEW_DISK_RE.test(disk) && !now.includes(disk)) newDisks.add(disk);
  }
  for (const disk of newDisks) {
    if (now.includes(disk)) continue;
    let lock;
    try {
      lock = await lockImage(catalog.at(disk), 'import');
    } catch (err) {
      if (!(err instanceof BusyError)) throw err;
      out.push({ disk, action: 'busy', file: disk });
      continue;
    }
    try {
      await removePartials(catalog.at(disk));
      out.push({ disk, action: 'removed', file: disk });
    } finally {
      await lock.release();
    }
  }
  for (const n of now.filter((x) => x.endsWith(LOCK_SUFFIX))) {
    const disk = n.slice(0, -LOCK_SUFFIX.length);
    if (!disk || !now.includes(disk)) continue;
    let lock;
    try {
      lock = await lockImage(catalog.at(disk), 'import');
    } catch (err) {
      if (!(err instanceof BusyError)) throw err;
      continue;
    }
    try {
      await removePartials(catalog.at(disk));
      out.push({ disk, action: 'unlocked', file: n });
    } finally {
      await lock.release();
    }
  }
  return out;
}
