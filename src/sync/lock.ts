/**
 * One copy or merge at a time per image: a lock file `<image>.vhdsync-lock` next to it, created exclusively,
 * holding a lease its holder renews while the run lasts (decision 0010 has the full argument).
 *
 * - A holder renews every `renewMs`, in place, bumping a generation. It may write only until `authorityMs` after
 *   the start of its last renewal that succeeded (within that same time); once that lapses it has lost the lock for
 *   good (every later mutation through `guard()` fails) and never renews again.
 * - A lock is broken when its holder is a process of this boot of this host that has ended (host name and boot id
 *   match, its pid is gone or names a process started at another time), or, for any other holder with a lease, when
 *   its recorded renewal looks older than its lease AND this run then watches it for one whole lease without seeing
 *   it change. Only durations measured here count, so hosts' clocks need not agree; the lease (120 s) exceeds
 *   twice the holder's authority (30 s) by a margin for writes still in flight when that authority ends.
 * - Breaking is atomic: the breaker first creates `<lock>.takeover-<id>` exclusively, where `<id>` names the exact
 *   lock state it judged stale (its bytes), so one run per stale state goes on; it re-reads the lock, moves it
 *   aside under a name of its own, checks that what it moved is the holding it judged, deletes it, and only then
 *   competes, like anyone, to create the lock exclusively. The takeover file is itself a lock, broken by the same
 *   rules if its run died.
 * Locks without a boot id and start time (written by older versions) count as another host's: with a lease they are
 * broken after the watch; without one (written before leases existed), never (the busy message says to delete it).
 */
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { createWithBytes } from '../io/atomic.js';
import { recordingStore } from '../io/recording-store.js';
import type { Location } from '../io/location.js';
import { displayLocation } from '../io/location.js';
import { AlreadyExistsError, BusyError, NotFoundError } from '../util/errors.js';
import { unhookedLocation } from './kill-hook.js';
import { notice } from '../util/notice.js';
import { holderGone } from '../util/process-identity.js';
import { newRecord, readSnapshot, sameHolding, serializeRecord, snapshotId, parseRecord, type LockRecord, type LockSnapshot } from './lock-record.js';

/** Suffix of lock files: `<image>.vhdsync-lock`. */
export const LOCK_SUFFIX = '.vhdsync-lock';
/** An unreadable lock younger than this may be one another run is still writing. */
const FRESH_MS = 10_000;
/** A recorded lease longer than this is not believed: such a lock is treated as having none. */
const MAX_LEASE_MS = 3_600_000;
/** Rounds of create / judge / break before giving up as busy (a lock that keeps changing hands). */
const MAX_ROUNDS = 6;
/** Takeovers of takeover files nest at most this deep. */
const MAX_DEPTH = 3;

/** Lease timing; the defaults are documented in docs/cli.md and decision 0010. */
export interface LockTiming {
  /** The lease the holder records: how long a stale-looking lock is watched before it is broken. */
  leaseMs: number;
  /** How often the holder renews. */
  renewMs: number;
  /**
   * How long after the start of its last counted renewal the holder may still write; a renewal counts when it
   * completed within this time. Twice this is under the lease: the rest is the margin for writes in flight.
   */
  authorityMs: number;
}

export const LOCK_TIMING: LockTiming = { leaseMs: 120_000, renewMs: 10_000, authorityMs: 30_000 };

/** A held lock. */
export interface ImageLock {
  /** Stops renewing and deletes the lock file, unless the lock was lost (then the file may be another run's). */
  release(): Promise<void>;
  /**
   * Starts reading the lock file back for release() (which deletes it only if it still holds this run's token), so
   * that read overlaps the caller's last step instead of following it: on a share, one round trip less. Renewal goes
   * on; release() checks again what it must (lost, lease) and reads again if the early read did not show this holding.
   */
  prepareRelease(): void;
  /** Throws BusyError once the lease has lapsed or another run took the lock over. */
  check(): void;
  /** `loc` with every mutation (write, flush, create, rename, delete) refused once the lock is lost. */
  guard(loc: Location): Location;
}

/** Where the lock of `image` lives. */
export function lockLocationFor(image: Location): Location {
  const { store } = unhookedLocation(image);
  return { store, path: image.path + LOCK_SUFFIX };
}

/**
 * Takes the lock of `image` for `op` (`copy`, `merge`), or throws BusyError naming who holds it. `signal` ends an
 * attempt still waiting (the watch of a stale-looking lock) with its abort reason; a lock already made is returned.
 */
export async function lockImage(image: Location, op: string, timing: LockTiming = LOCK_TIMING, signal?: AbortSignal): Promise<ImageLock> {
  if (!(2 * timing.authorityMs < timing.leaseMs && timing.renewMs < timing.authorityMs)) throw new Error('lock timing: need renewal < authority < lease / 2');
  const loc = lockLocationFor(image);
  const record = newRecord(op, timing.leaseMs);
  const created = await acquire(loc, record, image, timing, 0, signal);
  return new HeldLock(loc, record, image, timing, created);
}

/**
 * Creates the lock file at `loc` holding `record`, breaking a stale one; throws BusyError when it is held.
 * Returns performance.now() from just before the file was created: the holder's authority counts from there.
 */
async function acquire(loc: Location, record: LockRecord, image: Location, timing: LockTiming, depth: number, signal?: AbortSignal): Promise<number> {
  for (let round = 0; ; round++) {
    signal?.throwIfAborted();
    const started = performance.now();
    try {
      await createWithBytes(loc, serializeRecord(record));
      return started;
    } catch (err) {
      if (!(err instanceof AlreadyExistsError)) throw err;
    }
    const seen = await readSnapshot(loc);
    if (!seen) continue;
    if (round >= MAX_ROUNDS || depth >= MAX_DEPTH) throw busy(image, seen.record);
    const verdict = await judge(loc, seen, signal);
    if (verdict === 'live') throw busy(image, seen.record);
    if (verdict === 'stale') await breakStale(loc, seen, image, timing, depth, signal);
  }
}

/** Whether a lock state is held, gone stale, or changed while being watched. */
async function judge(loc: Location, seen: LockSnapshot, signal?: AbortSignal): Promise<'live' | 'stale' | 'changed'> {
  const r = seen.record;
  if (!r) return Date.now() - seen.mtimeMs > FRESH_MS ? 'stale' : 'live';
  if (holderGone(r)) return 'stale';
  const lease = r.leaseMs;
  if (lease === undefined || lease > MAX_LEASE_MS || !r.renewed) return 'live';
  // Only a hint: by our clock the holder stopped renewing. Believe it only after watching it not change.
  if (!(Date.now() > Date.parse(r.renewed) + lease)) return 'live';
  notice(
    displayLocation(loc),
    `held by a ${r.op} (pid ${r.pid} on ${r.host}) that has not renewed its lease since ${r.renewed}; watching it for ${Math.round(lease / 1000)} s before taking it over`,
  );
  return (await unchangedFor(loc, seen, lease, signal)) ? 'stale' : 'changed';
}

/** Watches the lock for `ms` (measured here); false as soon as it changes or disappears. */
async function unchangedFor(loc: Location, seen: LockSnapshot, ms: number, signal?: AbortSignal): Promise<boolean> {
  const start = performance.now();
  const poll = Math.max(20, Math.min(1000, ms / 10));
  while (performance.now() - start < ms) {
    await sleep(poll, undefined, { signal });
    const now = await readSnapshot(loc);
    if (!now || !now.raw.equals(seen.raw)) return false;
  }
  return true;
}

/**
 * Removes the stale lock state `seen`, if this run is the one to do it: claimed by creating a takeover file
 * named for that state. Returns with the lock removed, or unchanged when someone else got there first (the
 * caller then looks again).
 */
async function breakStale(loc: Location, seen: LockSnapshot, image: Location, timing: LockTiming, depth: number, signal?: AbortSignal): Promise<void> {
  const { store } = loc;
  const claim: Location = { store, path: `${loc.path}.takeover-${snapshotId(seen)}` };
  const me = newRecord('takeover', timing.leaseMs);
  try {
    await acquire(claim, me, image, timing, depth + 1, signal);
  } catch (err) {
    if (!(err instanceof BusyError)) throw err;
    // Another run is breaking this very state; it takes milliseconds. Look again after it.
    await sleep(20);
    return;
  }
  try {
    const now = await readSnapshot(loc);
    if (!now || !now.raw.equals(seen.raw)) return;
    const aside = `${loc.path}.${me.token}.stale`;
    try {
      await store.rename(loc.path, aside);
    } catch (err) {
      if (err instanceof NotFoundError) return;
      throw err;
    }
    const moved = await readSnapshot({ store, path: aside });
    if (moved && !sameHolding(moved, seen)) {
      // Cannot happen while holders keep the rules above; put it back rather than break a live lock.
      await store.rename(aside, loc.path, { replace: false }).catch(() => {});
      throw busy(image, moved.record);
    }
    await store.unlink(aside).catch(() => {});
  } finally {
    await store.unlink(claim.path).catch(() => {});
  }
}

/** A lock this run holds: renews its lease and refuses writes once it lapsed. */
class HeldLock implements ImageLock {
  /** performance.now() after which this run may no longer write. */
  private deadline: number;
  private lost: string | null = null;
  private readonly timer: NodeJS.Timeout;
  private renewing: Promise<void> | null = null;
  /** The read-back release() uses, started early by prepareRelease(). */
  private readAhead: Promise<LockSnapshot | null> | null = null;
  private readonly guarded = new WeakMap<object, Location['store']>();

  constructor(
    private readonly loc: Location,
    private record: LockRecord,
    private readonly image: Location,
    private readonly timing: LockTiming,
    started: number,
  ) {
    this.deadline = started + timing.authorityMs;
    this.timer = setInterval(() => void this.renew(), timing.renewMs);
    // The lock must not keep a finished process alive; a run in progress has its own pending I/O.
    this.timer.unref();
  }

  check(): void {
    if (!this.lost && performance.now() >= this.deadline) this.lose(`its lease could not be renewed for ${this.timing.authorityMs / 1000} s`);
    if (this.lost) {
      throw new BusyError(`lost the lock (${this.lost}); stopped writing so that another run can take over`, displayLocation(this.image));
    }
  }

  guard(loc: Location): Location {
    let store = this.guarded.get(loc.store);
    if (!store) {
      // A store that sends a change later than the call, or again after a reconnect, checks again right before.
      const inner = loc.store.guarded?.(() => this.check()) ?? loc.store;
      store = recordingStore(inner, (e) => e.op !== 'open' && this.check());
      this.guarded.set(loc.store, store);
    }
    return { store, path: loc.path };
  }

  private lose(why: string): void {
    this.lost ??= why;
    clearInterval(this.timer);
  }

  /** One renewal: rewrite the record in place with the next generation, then read it back by name. */
  private renew(): Promise<void> {
    if (this.renewing || this.lost) return this.renewing ?? Promise.resolve();
    const started = performance.now();
    // A lapsed lease is never revived: another run may already have broken it.
    if (started >= this.deadline) {
      this.lose(`its lease could not be renewed for ${this.timing.authorityMs / 1000} s`);
      return Promise.resolve();
    }
    const next: LockRecord = { ...this.record, generation: (this.record.generation ?? 0) + 1, renewed: new Date().toISOString() };
    this.renewing = (async () => {
      const { store, path } = this.loc;
      try {
        const f = await store.open(path, 'readwrite');
        try {
          if (parseRecord(Buffer.from(await f.read(0, 4096)))?.token !== next.token) return this.lose('another run took it over');
          await f.write(0, serializeRecord(next));
          await f.flush();
        } finally {
          await f.close().catch(() => {});
        }
        // The handle may have followed a file moved aside by a breaker: what counts is the file under the name.
        const back = (await readSnapshot(this.loc))?.record;
        if (!back || back.token !== next.token || back.generation !== next.generation) return this.lose('another run took it over');
        this.record = next;
        if (performance.now() - started <= this.timing.authorityMs) this.deadline = Math.max(this.deadline, started + this.timing.authorityMs);
      } catch (err) {
        if (err instanceof NotFoundError) this.lose('the lock file was deleted');
        // Anything else (a share that went away): the lease runs out unless a later renewal gets through.
      } finally {
        this.renewing = null;
      }
    })();
    return this.renewing;
  }

  prepareRelease(): void {
    this.readAhead ??= readSnapshot(this.loc).catch(() => null);
  }

  async release(): Promise<void> {
    clearInterval(this.timer);
    await this.renewing;
    const early = this.readAhead;
    if (this.lost || performance.now() >= this.deadline) return;
    let now = early ? await early : null;
    // Read again unless the early read saw this holding (it may have met a renewal's write half done): a renewal
    // keeps the token, and whatever happened since is in `lost` and the deadline, checked above.
    if (now?.record?.token !== this.record.token) now = await readSnapshot(this.loc).catch(() => null);
    if (now?.record?.token === this.record.token) await this.loc.store.unlink(this.loc.path).catch(() => {});
    this.lost = 'released';
  }
}

function busy(image: Location, h: LockRecord | null): BusyError {
  const who = h ? `a ${h.op} (pid ${h.pid} on ${h.host}, since ${h.since})` : 'another vhdsync run';
  const loc = lockLocationFor(image);
  const lapse = h?.leaseMs ? ` (a later run takes it over once it has gone ${Math.round(h.leaseMs / 1000)} s without renewal)` : '';
  return new BusyError(`in use by ${who}; if that run is gone, delete ${displayLocation(loc)}${lapse}`, displayLocation(image));
}
