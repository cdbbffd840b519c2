/**
 * TEST HOOK for the crash tests (test/crash/sync*): with `VHDSYNC_TEST_KILL_AFTER_WRITES=N` in the environment,
 * the process kills itself with SIGKILL just before the (N+1)-th mutating store operation (file write,
 * truncate, flush, rename, unlink) of a copy or merge, so a test can stop it at an exact point inside a
 * driver's write ordering (data, allocation table, log, header), the state file or the metafile rotation.
 * Without the variable, `hookLocation` returns its argument unchanged and costs nothing.
 */
import type { ByteStore } from '../io/store.js';
import { recordingStore } from '../io/recording-store.js';
import type { Location } from '../io/location.js';

const ENV = 'VHDSYNC_TEST_KILL_AFTER_WRITES';

let remaining: number | null = null;
let parsed = false;

function budget(): number | null {
  if (!parsed) {
    parsed = true;
    const v = process.env[ENV];
    const n = v === undefined || v === '' ? NaN : Number(v);
    remaining = Number.isSafeInteger(n) && n >= 0 ? n : null;
    if (remaining !== null) {
      const armed = remaining;
      // Lets a test learn how many kill points a run has: run once with a huge budget and read this line.
      process.on('exit', () => process.stderr.write(`vhdsync-test-hook: ${armed - (remaining ?? 0)} mutations\n`));
    }
  }
  return remaining;
}

/** Counts one mutation; dies when the budget is spent. */
function tick(): void {
  if (remaining === null) return;
  if (remaining === 0) process.kill(process.pid, 'SIGKILL');
  remaining--;
}

/** Every mutating store operation counts; opens and folder creation do not (they change no file's content). */
function countingStore(inner: ByteStore): ByteStore {
  return recordingStore(inner, (e) => {
    if (e.op !== 'open' && e.op !== 'mkdir') tick();
  });
}

const wrapped = new WeakMap<ByteStore, ByteStore>();
const counting = new WeakSet<ByteStore>();
const innerOf = new WeakMap<ByteStore, ByteStore>();

/** The location through a counting store when the test hook is armed; otherwise `loc` itself. */
export function hookLocation(loc: Location): Location {
  if (budget() === null || counting.has(loc.store)) return loc;
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
