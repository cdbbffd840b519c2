/**
 * What a killed server left behind, settled at the next start before any request is served: an import whose
 * merge had begun is finished (the merge resumes from its state file), an import still uploading is deleted
 * (the disk was never touched). Either way the disk then reads as a whole: the old content or the new.
 */
import { withPath } from '../io/location.js';
import { lockImage } from '../sync/lock.js';
import { mergeDiff } from '../sync/merge.js';
import { MERGE_STATE_SUFFIX, readMergeState } from '../sync/merge-state.js';
import { BusyError } from '../util/errors.js';
import type { Catalog } from './catalog.js';
import { IMPORT_DIFF_RE } from './import.js';

/** One settled leftover, for the log. */
export interface Recovered {
  disk: string;
  /** `merged`: an interrupted merge was finished; `removed`: an unfinished upload was deleted; `busy`: another run holds the disk. */
  action: 'merged' | 'removed' | 'busy';
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
  for (const n of names) {
    const m = IMPORT_DIFF_RE.exec(n);
    if (!m || finishing.has(n)) continue;
    // The disk's lock tells a dead server's upload from a live one's (another serve on the same folder).
    let lock;
    try {
      lock = await lockImage(catalog.at(m[1]), 'import');
    } catch (err) {
      if (!(err instanceof BusyError)) throw err;
      out.push({ disk: m[1], action: 'busy', file: n });
      continue;
    }
    try {
      await store.unlink(catalog.at(n).path).catch(() => {});
      out.push({ disk: m[1], action: 'removed', file: n });
    } finally {
      await lock.release();
    }
  }
  return out;
}
