/**
 * A disk's lease in an object repository (decision 0010's semantics on an object store; docs/repository.md):
 * `leases/<disk>/<generation>.json`, one object per holder generation. The newest generation is the lease.
 * - Taking it: when there is none, create generation 1; when the newest is released, held by a process of this
 *   boot of this host that has ended (same host name and boot id, pid gone or started at another time), or
 *   expired, create the next generation. Creates are `If-None-Match: *`, so of two hosts that judged
 *   the same generation free, exactly one wins; the other reports the disk busy.
 * - Expired means: its recorded renewal is older than the lease by our clock (a hint), and then watching it for one
 *   more lease saw no change of its ETag (the proof, measured on one machine's clock only).
 * - The holder renews every `renewMs` by replacing its object `If-Match` its last ETag, after checking that no next
 *   generation exists. It may change the repository only until `authorityMs` after the start of its last renewal
 *   that finished within `authorityMs`; past that, `check()` throws and the run stops writing. Because a breaker
 *   watches for a whole lease (> 2 x authority) after the last change it saw, the holder has stopped before.
 * - Releasing rewrites the object as released (never deleted: generations only grow, so a stale holder's view can
 *   never match a new one). A new holder deletes the generations below its own.
 */
import { randomBytes } from 'node:crypto';
import type { ObjectInfo, ObjectStore, PutConditions, WriteFence } from '../../io/object-store.js';
import { AlreadyExistsError, BusyError, ConflictError, NotFoundError } from '../../util/errors.js';
import { notice } from '../../util/notice.js';
import { holderGone, ownIdentity } from '../../util/process-identity.js';
import { getAtMost, type BoundedRead } from './bounded-read.js';
import { leaseKey, leasePrefix, parseGeneration } from './keys.js';

/** Lease timing (ms); tests shorten it. Renewal < authority < lease / 2 (decision 0010). */
export interface LeaseTiming {
  leaseMs: number;
  renewMs: number;
  authorityMs: number;
}

export const LEASE_TIMING: LeaseTiming = { leaseMs: 120_000, renewMs: 10_000, authorityMs: 30_000 };

/** The lease object's body. */
interface LeaseRecord {
  format: 'vhdsync-lease';
  host: string;
  pid: number;
  /** The holder machine's boot id and the holder process's start time (util/process-identity.ts); absent before. */
  boot?: string;
  start?: string;
  /** The holder's pid namespace (util/process-identity.ts); absent before. */
  pidns?: string;
  op: string;
  token: string;
  since: string;
  /** The holder's wall-clock time of its last renewal (a hint for others; durations decide). */
  renewed: string;
  renewals: number;
  leaseMs: number;
  released: boolean;
}

/** A lease record is a few hundred bytes; a larger object is read no further and counts as no record. */
const RECORD_LIMIT = 64 << 10;

function parseRecord(bytes: BoundedRead): LeaseRecord | null {
  if (!bytes || bytes === 'too large') return null;
  try {
    const r = JSON.parse(bytes.toString('utf8')) as LeaseRecord;
    return r && r.format === 'vhdsync-lease' && typeof r.token === 'string' ? r : null;
  } catch {
    return null;
  }
}

function serialize(r: LeaseRecord): Buffer {
  return Buffer.from(JSON.stringify(r) + '\n');
}

/**
 * The user metadata every lease object carries: its record again (base64 of its JSON), which a HEAD returns with
 * the ETag of the same version. A taker then decides on one HEAD, not a HEAD and a GET: a GET's small body costs
 * a round trip more (radosgw with Nagle on sends it one delayed ACK after the headers: ~40 ms on loopback).
 */
// Letters only: some gateways refuse other characters in metadata names (s3proxy on Azure Blob answers 500 to a
// hyphen, nginx drops headers with an underscore by default), and a lease PUT refused that way fails every run.
const RECORD_META = 'vhdsynclease';

/** The put conditions that store record `r` with its metadata copy. */
function withRecord(r: LeaseRecord, conditions: PutConditions): PutConditions {
  return { ...conditions, metadata: { [RECORD_META]: serialize(r).toString('base64') } };
}

/**
 * The record a HEAD's metadata carries; undefined when it carries none, or one whose fields a taker decides on are
 * not what we write (a lease written by an older version, a store that drops or mangles metadata): the body is then
 * read and decides, as before.
 */
function recordOfHead(info: ObjectInfo): LeaseRecord | undefined {
  const meta = info.metadata?.[RECORD_META];
  // Our record is a few hundred bytes; a larger value is no record of ours.
  if (meta === undefined || meta.length > 4096) return undefined;
  const r = parseRecord(Buffer.from(meta, 'base64'));
  const complete = r && typeof r.host === 'string' && typeof r.pid === 'number' && typeof r.released === 'boolean' && typeof r.leaseMs === 'number' && Number.isFinite(r.leaseMs) && typeof r.renewed === 'string' && !Number.isNaN(Date.parse(r.renewed));
  return complete ? r : undefined;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Looks at the lease before giving up as busy: the newest generation vanishing between its listing and its HEAD
 * (a new holder deleting the ones below its own), or changing while it was watched, each costs one look.
 */
const MAX_LOOKS = 5;

/** A lease this run holds. */
export class DiskLease implements WriteFence {
  private timer: NodeJS.Timeout;
  private deadline: number;
  private lost: string | null = null;
  private renewing: Promise<void> | null = null;
  /**
   * The record of a renewal whose PUT failed without saying it did not commit (every attempt lost or a 5xx): the
   * service may hold it, under an ETag we never saw. Read back before the next PUT of ours, or that PUT's If-Match
   * would fail and give up a live lease.
   */
  private unsure: LeaseRecord | null = null;
  /** The deletion of the generations below ours, started by take(); release() waits for it. */
  private cleanup: Promise<void> = Promise.resolve();

  private constructor(
    private readonly store: ObjectStore,
    private readonly disk: string,
    private readonly generation: number,
    private record: LeaseRecord,
    private etag: string,
    private readonly timing: LeaseTiming,
    started: number,
  ) {
    this.deadline = started + timing.authorityMs;
    this.timer = setInterval(() => void this.renew(), timing.renewMs);
    this.timer.unref();
  }

  /**
   * Takes disk `disk`'s lease for `op`, or throws BusyError naming the holder. `writable`: what must succeed before
   * the lease is written (the store's conditional writes checked); the reads before it go meanwhile.
   */
  static async take(store: ObjectStore, disk: string, op: string, timing: LeaseTiming = LEASE_TIMING, writable: Promise<void> = Promise.resolve()): Promise<DiskLease> {
    if (!(2 * timing.authorityMs < timing.leaseMs && timing.renewMs < timing.authorityMs)) throw new Error('lease timing: need renewal < authority < lease / 2');
    for (let attempt = 0; ; attempt++) {
      if (attempt >= MAX_LOOKS) throw new BusyError(`the lease of disk '${disk}' kept changing while it was read (${MAX_LOOKS} looks): retry`, `${store.display}/${leasePrefix(disk)}`);
      // Not at once: a listing that still names a deleted generation (a lagging index) may catch up meanwhile.
      if (attempt > 0) await sleep(25 * attempt);
      const newest = await newestGeneration(store, disk);
      let next = 1;
      if (newest !== null) {
        const key = leaseKey(disk, newest);
        const info = await store.head(key);
        if (!info) continue; // deleted by a new holder meanwhile: look again
        // The record as the HEAD's metadata has it (the same version as its ETag); a lease without it is read.
        let held = recordOfHead(info);
        if (held === undefined) {
          const bytes = await getAtMost(store, key, RECORD_LIMIT);
          // Gone since the HEAD: a holder deleted it (a prune discarding an orphan's lease, a taker's cleanup).
          // Taking `newest + 1` now could stand beside a new holder of a lower generation: look again.
          if (bytes === null) continue;
          held = parseRecord(bytes) ?? undefined;
        }
        if (held && !held.released && !holderGone(held)) {
          const renewedAgo = Date.now() - Date.parse(held.renewed);
          if (!(renewedAgo > held.leaseMs)) throw busy(store, disk, held);
          // Looks expired by our clock: watch it for one more lease; any renewal proves the holder alive.
          // A store that ignores conditional writes is reported now, not after watching a lease we could never take.
          await writable;
          notice(`disk '${disk}'`, `the lease of ${holderName(held)} was last renewed ${Math.round(renewedAgo / 1000)} s ago by our clock: watching it ${Math.round(held.leaseMs / 1000)} s more before taking it over (a renewal meanwhile means it is alive)`);
          await sleep(held.leaseMs);
          const later = await store.head(key);
          if (!later || later.etag !== info.etag) {
            if (attempt < 2) continue;
            throw busy(store, disk, held);
          }
        }
        next = newest + 1;
      }
      const started = performance.now();
      const now = new Date().toISOString();
      const record: LeaseRecord = { format: 'vhdsync-lease', ...ownIdentity(), op, token: randomBytes(8).toString('hex'), since: now, renewed: now, renewals: 0, leaseMs: timing.leaseMs, released: false };
      await writable;
      let etag: string;
      try {
        etag = (await store.put(leaseKey(disk, next), serialize(record), withRecord(record, { ifNoneMatch: '*' }))).etag;
      } catch (err) {
        if (!(err instanceof AlreadyExistsError)) throw err;
        // Another run took generation `next` first.
        const winner = parseRecord(await getAtMost(store, leaseKey(disk, next), RECORD_LIMIT));
        throw busy(store, disk, winner);
      }
      const lease = new DiskLease(store, disk, next, record, etag, timing, started);
      // Older generations are history now; a failure here only leaves them for the next holder. Nothing waits for
      // it but release(): removing them decides nothing (the newest generation is the lease), and the holder's
      // first requests need not queue behind a listing and a delete (two answers with a body each). Our authority
      // fences each delete: a run frozen here past it must not delete a later holder's generation 1 once
      // generations restarted (a prune removing an orphan lease).
      lease.cleanup = generationsUpTo(store, disk, next - 1)
        .then((old) => deleteOldestFirst(store, old, lease))
        .catch(() => {});
      return lease;
    }
  }

  /** Throws once this run may no longer change the disk (lease lost or not renewed in time). */
  check(): void {
    if (!this.lost && performance.now() >= this.deadline) this.lose(`its lease could not be renewed for ${this.timing.authorityMs / 1000} s`);
    if (this.lost) throw new BusyError(`lost the lease of disk '${this.disk}' (${this.lost}); stopped writing so that another run can take over`, `${this.store.display}/${leaseKey(this.disk, this.generation)}`);
  }

  /** The fence of this run's writes: throws as check() does, else the ms of authority left. */
  remainingMs(): number {
    this.check();
    return this.deadline - performance.now();
  }

  /**
   * Asks the store, not our clock, whether another run has taken this lease over by now: a taker creates the next
   * generation before it writes anything, and a later one deletes every generation below its own (ours with them).
   * Read-only (a frozen clock cannot make it lie); a store error is thrown as it came.
   */
  async takenOver(): Promise<boolean> {
    if (await this.store.head(leaseKey(this.disk, this.generation + 1))) return true;
    const key = leaseKey(this.disk, this.generation);
    const info = await this.store.head(key);
    if (!info) return true;
    if (info.etag === this.etag) return false;
    // Another ETag: our renewal that committed unseen, or a new holder of the same generation number (one created
    // after a prune discarded every generation). Only our token says which.
    const bytes = await getAtMost(this.store, key, RECORD_LIMIT);
    const held = bytes && bytes !== 'too large' ? parseRecord(bytes) : null;
    return held?.token !== this.record.token;
  }

  private lose(why: string): void {
    this.lost ??= why;
    clearInterval(this.timer);
  }

  /** One renewal: no newer generation exists, then our object replaced If-Match our last ETag. */
  renew(): Promise<void> {
    if (this.renewing || this.lost) return this.renewing ?? Promise.resolve();
    const started = performance.now();
    if (started >= this.deadline) {
      this.lose(`its lease could not be renewed for ${this.timing.authorityMs / 1000} s`);
      return Promise.resolve();
    }
    this.renewing = (async () => {
      let next: LeaseRecord | null = null;
      try {
        if (await this.store.head(leaseKey(this.disk, this.generation + 1))) return this.lose('another run took it over');
        await this.readBack();
        next = { ...this.record, renewed: new Date().toISOString(), renewals: this.record.renewals + 1 };
        const { etag } = await this.store.put(leaseKey(this.disk, this.generation), serialize(next), withRecord(next, { ifMatch: this.etag }));
        this.record = next;
        this.etag = etag;
        if (performance.now() - started <= this.timing.authorityMs) this.deadline = Math.max(this.deadline, started + this.timing.authorityMs);
      } catch (err) {
        if (err instanceof ConflictError || err instanceof NotFoundError) this.lose('another run took it over');
        // Anything else (the store unreachable): the lease runs out unless a later renewal gets through, and this
        // one may have committed all the same.
        else if (next) this.unsure = next;
      } finally {
        this.renewing = null;
      }
    })();
    return this.renewing;
  }

  /**
   * After a renewal that may have committed unseen: when our object holds exactly that renewal's record (its token
   * and count make it ours alone), its ETag becomes ours. Anything else is left to the If-Match that follows.
   */
  private async readBack(): Promise<void> {
    if (!this.unsure) return;
    const key = leaseKey(this.disk, this.generation);
    const info = await this.store.head(key);
    if (info && info.etag !== this.etag) {
      const bytes = await getAtMost(this.store, key, RECORD_LIMIT);
      if (bytes && bytes !== 'too large' && bytes.equals(serialize(this.unsure))) {
        this.record = this.unsure;
        this.etag = info.etag;
      }
    }
    this.unsure = null;
  }

  /**
   * Deletes this lease's object instead of releasing it, for a disk that has nothing else (no manifest, no object):
   * the lease of a first backup killed before its first manifest, which no other command visits. Within our
   * authority and only while no run took it over; a generation after ours is never touched.
   */
  async discard(): Promise<string[]> {
    // take()'s cleanup must end first: a late attempt of it (within our authority) must not land after our
    // deletes, on the generation 1 of the next holder. Renewals go on while it runs (a slow delete must not cost
    // our authority).
    await this.cleanup;
    clearInterval(this.timer);
    await this.renewing;
    this.check();
    if (await this.takenOver()) {
      this.lose('another run took it over');
      this.check();
    }
    // Ours and any older one a failed delete at take() left: the disk then has no lease object at all.
    const keys = await generationsUpTo(this.store, this.disk, this.generation);
    await deleteOldestFirst(this.store, keys, this);
    this.lost = 'released';
    return keys;
  }

  /** Marks the lease released (the next run takes it at once); a lapsed lease is left to expire. */
  async release(): Promise<void> {
    // Renewals go on while the cleanup of older generations ends: a slow delete must not run our authority out and
    // leave the lease unreleased (the next run would wait for it to expire).
    await this.cleanup;
    clearInterval(this.timer);
    await this.renewing;
    if (this.lost || performance.now() >= this.deadline) return;
    this.lost = 'released';
    try {
      await this.readBack();
      const done: LeaseRecord = { ...this.record, renewed: new Date().toISOString(), released: true };
      await this.store.put(leaseKey(this.disk, this.generation), serialize(done), withRecord(done, { ifMatch: this.etag }));
    } catch {
      // Not released: the lease expires as a crashed run's would.
    }
  }
}

/** The keys of disk `disk`'s lease generations up to `upTo`, oldest first. */
async function generationsUpTo(store: ObjectStore, disk: string, upTo: number): Promise<string[]> {
  const found: Array<[number, string]> = [];
  for await (const o of store.list(leasePrefix(disk))) {
    const g = parseGeneration(o.key.slice(leasePrefix(disk).length));
    if (g !== null && g <= upTo) found.push([g, o.key]);
  }
  return found.sort((a, b) => a[0] - b[0]).map(([, key]) => key);
}

/**
 * Deletes lease generations one at a time, oldest first: a stale holder of generation g proves "no takeover" by
 * g+1 being absent while g is there (takenOver), which a batch deleting g+1 but failing on g would falsify.
 */
async function deleteOldestFirst(store: ObjectStore, keys: string[], fence?: WriteFence): Promise<void> {
  for (const key of keys) await store.delete([key], fence);
}

/** The newest lease generation of a disk, or null when it has none. */
async function newestGeneration(store: ObjectStore, disk: string): Promise<number | null> {
  let newest: number | null = null;
  for await (const o of store.list(leasePrefix(disk))) {
    const g = parseGeneration(o.key.slice(leasePrefix(disk).length));
    if (g !== null && (newest === null || g > newest)) newest = g;
  }
  return newest;
}

/** The holder as messages name it. */
function holderName(h: LeaseRecord): string {
  return `a ${h.op} (pid ${h.pid} on ${h.host}, since ${h.since})`;
}

function busy(store: ObjectStore, disk: string, h: LeaseRecord | null): BusyError {
  const who = h ? holderName(h) : 'another vhdsync run';
  const lapse = h ? `; a later run takes it over once it has gone ${Math.round(h.leaseMs / 1000)} s without renewal` : '';
  return new BusyError(`disk '${disk}' is in use by ${who}${lapse}`, `${store.display}/${leasePrefix(disk)}`);
}
