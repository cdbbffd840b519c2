/**
 * One copy or merge at a time per image: a small lock file next to it, created exclusively and removed when the
 * run ends. Two merges into one parent (or a merge under a running copy) would each allocate blocks at the same
 * end of file and corrupt it. A run killed with -9 leaves its lock behind; the next run on the same host sees that
 * its process is gone and takes the lock over. A lock from another host is never broken automatically.
 */
import { hostname } from 'node:os';
import type { Location } from '../io/location.js';
import { displayLocation } from '../io/location.js';
import { AlreadyExistsError, BusyError } from '../util/errors.js';
import { unhookedLocation } from './kill-hook.js';

/** Suffix of lock files: `<image>.vhdsync-lock`. */
export const LOCK_SUFFIX = '.vhdsync-lock';
/** An unreadable lock younger than this may be one another run is still writing. */
const FRESH_MS = 10_000;

/** A held lock. */
export interface ImageLock {
  release(): Promise<void>;
}

interface Holder {
  pid: number;
  host: string;
  op: string;
  since: string;
}

/** Where the lock of `image` lives. */
export function lockLocationFor(image: Location): Location {
  const { store } = unhookedLocation(image);
  return { store, path: image.path + LOCK_SUFFIX };
}

/** Takes the lock of `image` for `op` (`copy`, `merge`), or throws BusyError naming who holds it. */
export async function lockImage(image: Location, op: string): Promise<ImageLock> {
  const loc = lockLocationFor(image);
  const me: Holder = { pid: process.pid, host: hostname(), op, since: new Date().toISOString() };
  for (let attempt = 0; ; attempt++) {
    try {
      const f = await loc.store.createExclusive(loc.path);
      try {
        await f.write(0, Buffer.from(JSON.stringify(me)));
      } finally {
        await f.close();
      }
      return { release: () => loc.store.unlink(loc.path).catch(() => {}) };
    } catch (err) {
      if (!(err instanceof AlreadyExistsError) || attempt > 0) throw err instanceof AlreadyExistsError ? busy(image, loc, null) : err;
      const holder = await readHolder(loc);
      if (!(await isStale(loc, holder))) throw busy(image, loc, holder);
      await loc.store.unlink(loc.path).catch(() => {});
    }
  }
}

async function readHolder(loc: Location): Promise<Holder | null> {
  try {
    const f = await loc.store.open(loc.path, 'read');
    try {
      const v = JSON.parse((await f.read(0, 4096)).toString('utf8')) as Holder;
      return Number.isSafeInteger(v.pid) && typeof v.host === 'string' ? v : null;
    } finally {
      await f.close();
    }
  } catch {
    return null;
  }
}

async function isStale(loc: Location, holder: Holder | null): Promise<boolean> {
  if (!holder) {
    const st = await loc.store.stat(loc.path).catch(() => null);
    return !st || Date.now() - st.mtimeMs > FRESH_MS;
  }
  if (holder.host !== hostname()) return false;
  try {
    process.kill(holder.pid, 0);
    return false;
  } catch (err) {
    // EPERM: the process exists but belongs to someone else; only ESRCH means it is gone.
    return (err as NodeJS.ErrnoException).code === 'ESRCH';
  }
}

function busy(image: Location, loc: Location, h: Holder | null): BusyError {
  const who = h ? `a ${h.op} (pid ${h.pid} on ${h.host}, since ${h.since})` : 'another vhdsync run';
  return new BusyError(`in use by ${who}; if that run is gone, delete ${displayLocation(loc)}`, displayLocation(image));
}
