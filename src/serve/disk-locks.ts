/**
 * Who is using which disk inside this server, on top of the file lock every vhdsync run takes
 * (`<image>.vhdsync-lock`, src/sync/lock.ts): exports of a disk share one file lock and may run together; an
 * import needs the disk to itself. A conflict is answered at once (409), never waited for.
 */
import type { Location } from '../io/location.js';
import { displayLocation } from '../io/location.js';
import { lockImage, lockLocationFor, type ImageLock } from '../sync/lock.js';
import { BusyError, RequestError } from '../util/errors.js';

interface Holding {
  mode: 'read' | 'write';
  count: number;
  /** Set while the last user gives the file lock back: newcomers wait for it instead of finding the file. */
  releasing: Promise<void> | null;
  /** The file lock, or a promise of it while it is being taken. */
  lock: Promise<ImageLock | null>;
}

/** A taken use of a disk; release it exactly once. */
export interface DiskUse {
  /** The file lock (null in read-only service, which writes nothing, lock files included). */
  lock: ImageLock | null;
  release(): Promise<void>;
}

/** The disks in use by this server. */
export class DiskLocks {
  private readonly held = new Map<string, Holding>();
  /** Disks left in a state only a restart repairs, with why. */
  private readonly quarantined = new Map<string, string>();

  /** `readOnly`: take no file locks (the folder may not be writable); only refuse disks another run has locked. */
  constructor(private readonly readOnly: boolean) {}

  /** Takes `image` for reading (shared with other exports) or writing (alone). Throws RequestError 409 when busy. */
  async acquire(image: Location, mode: 'read' | 'write'): Promise<DiskUse> {
    const key = image.path;
    const why = this.quarantined.get(key);
    if (why) throw new RequestError(503, why, displayLocation(image));
    let h = this.held.get(key);
    while (h?.releasing) {
      await h.releasing;
      h = this.held.get(key);
    }
    if (h) {
      if (mode === 'write' || h.mode === 'write') {
        throw new RequestError(409, `${displayLocation(image)} is being ${h.mode === 'write' ? 'imported into' : 'exported'}; try again when that is done`);
      }
      h.count++;
      try {
        return this.use(key, h, await h.lock);
      } catch (err) {
        h.count--;
        if (err instanceof BusyError) throw new RequestError(409, err.message, err.subject);
        throw err;
      }
    }
    const holding: Holding = { mode, count: 1, releasing: null, lock: this.fileLock(image, mode) };
    this.held.set(key, holding);
    let lock: ImageLock | null;
    try {
      lock = await holding.lock;
    } catch (err) {
      this.held.delete(key);
      if (err instanceof BusyError) throw new RequestError(409, err.message, err.subject);
      throw err;
    }
    return this.use(key, holding, lock);
  }

  /** Refuses `image` (503) until the server restarts and its recovery repairs it. */
  quarantine(image: Location, why: string): void {
    this.quarantined.set(image.path, why);
  }

  private async fileLock(image: Location, mode: 'read' | 'write'): Promise<ImageLock | null> {
    if (this.readOnly) {
      const loc = lockLocationFor(image);
      if (await loc.store.stat(loc.path)) throw new BusyError(`in use by another vhdsync run (${displayLocation(loc)} exists)`, displayLocation(image));
      return null;
    }
    return lockImage(image, mode === 'write' ? 'import' : 'export');
  }

  private use(key: string, h: Holding, lock: ImageLock | null): DiskUse {
    let released = false;
    return {
      lock,
      release: async () => {
        if (released) return;
        released = true;
        if (--h.count > 0) return;
        h.releasing = (async () => {
          try {
            await lock?.release();
          } finally {
            if (this.held.get(key) === h) this.held.delete(key);
          }
        })();
        await h.releasing;
      },
    };
  }
}
