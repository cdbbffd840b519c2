/**
 * TEST HOOK for the crash tests (test/crash/sync*): with `VHDSYNC_TEST_KILL_AFTER_WRITES=N` in the environment,
 * the process kills itself with SIGKILL just before the (N+1)-th mutating store operation (file write,
 * truncate, flush, rename, unlink) of a copy or merge, so a test can stop it at an exact point inside a
 * driver's write ordering (data, allocation table, log, header), the state file or the metafile rotation.
 * Without the variable, `hookLocation` returns its argument unchanged and costs nothing. The budget lives in
 * io/kill-budget.ts, shared with the object-store hook (`hookObjectStore`, re-exported here), so a run that writes
 * to both kinds of store is killed at its N-th mutation overall.
 */
import type { ByteStore } from '../io/store.js';
import { recordingStore } from '../io/recording-store.js';
import type { Location } from '../io/location.js';
import { countMutation, killBudget } from '../io/kill-budget.js';

export { hookObjectStore } from '../io/object-kill-hook.js';

/** Every mutating store operation counts; opens and folder creation do not (they change no file's content). */
function countingStore(inner: ByteStore): ByteStore {
  return recordingStore(inner, (e) => {
    if (e.op !== 'open' && e.op !== 'mkdir') countMutation();
  });
}

const wrapped = new WeakMap<ByteStore, ByteStore>();
const counting = new WeakSet<ByteStore>();
const innerOf = new WeakMap<ByteStore, ByteStore>();

/** The location through a counting store when the test hook is armed; otherwise `loc` itself. */
export function hookLocation(loc: Location): Location {
  if (killBudget() === null || counting.has(loc.store)) return loc;
  let store = wrapped.get(loc.store);
  if (!store) {
    store = countingStore(loc.store);
    wrapped.set(loc.store, store);
    counting.add(store);
    innerOf.set(store, loc.store);
  }
  return { store, path: loc.path };
}

/**
 * The location without the counting store: for the run's lock file, whose taking and release are bookkeeping
 * around the work, not points inside it (a kill there is covered by the lock's own stale-lock tests).
 */
export function unhookedLocation(loc: Location): Location {
  const inner = innerOf.get(loc.store);
  return inner ? { store: inner, path: loc.path } : loc;
}
