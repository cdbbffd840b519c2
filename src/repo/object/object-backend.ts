/**
 * A repository on an object store (S3 and its kin): the second backend of the repository model, with its own
 * layout of immutable objects (docs/repository.md, "Repositories on object storage"; decision 0020). Points are
 * block maps over content-addressed block objects, so every point is standalone and shares unchanged blocks with
 * the others; manifests are a new object per generation; each disk has a lease object.
 */
import type { Disk } from '../../formats/disk.js';
import type { ObjectInfo, ObjectStore, PutConditions } from '../../io/object-store.js';
import { MemoryStore } from '../../io/memory-store.js';
import { nativeMetafileLength, readMetafile, type Metafile } from '../../meta/index.js';
import { AlreadyExistsError, BusyError, ConflictError, IoError, MetafileError, NotFoundError, RepositoryDamageError, UnsupportedError, UsageError } from '../../util/errors.js';
import type { DiskSession, RepoBackend } from '../backend.js';
import { ManifestProblem, MANIFEST_LIMIT, parseManifest, type DiskManifest, type RestorePoint } from '../manifest.js';
import { checkDiskName, isDiskName } from '../names.js';
import { DEFAULT_UPLOADS_IN_FLIGHT } from './block-upload.js';
import { isMarker, markerBytes, REPOSITORY_MARKER } from '../marker.js';
import { LEASES, manifestKey, manifestPrefix, MANIFESTS, diskPrefix, parseGeneration, pointListName } from './keys.js';
import { DiskLease, LEASE_TIMING, type LeaseTiming } from './lease.js';
import { ObjectDiskSession } from './object-session.js';
import { getAtMost } from './bounded-read.js';
import { mapLimitFor, parsePointMap, type PointMap } from './point-map.js';
import { DEFAULT_READ_AHEAD, PointDisk } from './point-disk.js';

/** A repository marker is a few hundred bytes; more is not a marker. */
const MARKER_LIMIT = 4096;
/** The fixed header of a native list (docs/metafile.md). */
const LIST_HEADER = 512;
/** A list's first read: its header and, for most disks, all of it (memory: this much at most before the header is checked). */
const LIST_FIRST_READ = 1 << 20;

/** A manifest read before the lease was held: the newest generation and ETag its listing showed, and what a GET read of it. */
interface EarlyManifest {
  listed: { generation: number; etag: string } | null;
  manifest: DiskManifest | null;
}

/** Tuning of an object repository (defaults in docs/repository.md). */
export interface ObjectRepositoryOptions {
  lease?: LeaseTiming;
  /** Block uploads in flight during a backup. */
  uploadsInFlight?: number;
  /** Blocks fetched ahead of a restore. */
  readAhead?: number;
}

/** A repository under a bucket and prefix. */
export class ObjectRepository implements RepoBackend {
  readonly lease: LeaseTiming;
  readonly uploadsInFlight: number;
  readonly readAhead: number;
  /** The store was seen to refuse conditional writes that had to fail (probeConditions). */
  private conditionsChecked = false;
  /** The repository marker's bytes as exists() last read them, for probeConditions to use rather than read again. */
  private marker: Buffer | null = null;

  constructor(
    readonly store: ObjectStore,
    opts: ObjectRepositoryOptions = {},
  ) {
    this.lease = opts.lease ?? LEASE_TIMING;
    this.uploadsInFlight = opts.uploadsInFlight ?? DEFAULT_UPLOADS_IN_FLIGHT;
    this.readAhead = opts.readAhead ?? DEFAULT_READ_AHEAD;
  }

  get display(): string {
    return this.store.display;
  }

  /** How a key of this repository is shown to the user. */
  name(key: string): string {
    return `${this.store.display.replace(/\/$/, '')}/${key}`;
  }

  /** The marker's bytes (null while there is none); damage throws. */
  private async readMarker(): Promise<Buffer | null> {
    const bytes = await getAtMost(this.store, REPOSITORY_MARKER, MARKER_LIMIT);
    if (!bytes) return null;
    if (bytes === 'too large' || !isMarker(bytes)) throw new RepositoryDamageError(`${REPOSITORY_MARKER} is not a vhdsync repository marker`, this.name(REPOSITORY_MARKER));
    return (this.marker = bytes);
  }

  async exists(create = false): Promise<boolean> {
    if (await this.readMarker()) return true;
    if (!(await this.store.bucketExists())) throw new NotFoundError('no such bucket (vhdsync creates repositories, not buckets: create it first)', this.display);
    if (!create) return false;
    for await (const o of this.store.list('')) {
      // A backup starting at the same moment may have made the repository (marker first, then its disk's objects)
      // between the first look and the listing: the marker decides, not the listing.
      const again = await getAtMost(this.store, REPOSITORY_MARKER, MARKER_LIMIT);
      if (again && again !== 'too large' && isMarker(again)) return true;
      throw new UsageError(`not a vhdsync repository (no ${REPOSITORY_MARKER}) and not empty (it holds ${o.key}, ...): name a new or empty prefix`, this.display);
    }
    const body = markerBytes();
    try {
      await this.store.put(REPOSITORY_MARKER, body, { ifNoneMatch: '*' });
    } catch (err) {
      // Another backup made the repository at the same moment.
      if (!(err instanceof AlreadyExistsError)) throw err;
    }
    return true;
  }

  async listDisks(): Promise<string[]> {
    const disks = new Set<string>();
    for await (const o of this.store.list(MANIFESTS)) {
      const [disk, name] = o.key.slice(MANIFESTS.length).split('/');
      if (disk && name !== undefined && parseGeneration(name) !== null) disks.add(disk);
    }
    return [...disks].sort();
  }

  /** The newest generation of a disk's manifest, or null when there is none. */
  async newestManifest(disk: string): Promise<number | null> {
    return (await this.newestManifestObject(disk))?.generation ?? null;
  }

  /** The newest generation of a disk's manifest and its ETag as one listing shows them, or null when it has none. */
  private async newestManifestObject(disk: string, listing: AsyncIterable<ObjectInfo> | ObjectInfo[] = this.store.list(manifestPrefix(disk))): Promise<{ generation: number; etag: string } | null> {
    let newest: { generation: number; etag: string } | null = null;
    for await (const o of listing) {
      const g = parseGeneration(o.key.slice(manifestPrefix(disk).length));
      if (g !== null && (newest === null || g > newest.generation)) newest = { generation: g, etag: o.etag };
    }
    return newest;
  }

  /**
   * Manifests a backup read beside its lease take (lockDisk), by disk, for its readManifest to check and use once
   * (`read`: the newest generation as a listing showed it, its ETag, and what a GET then read of it), and the
   * listing of the manifests its session made once the lease was held, to check it against.
   */
  private readonly early = new Map<string, { read: Promise<EarlyManifest | null>; listing: Promise<ObjectInfo[]>; headed: Promise<ObjectInfo | null> }>();
  /** Disks whose lease a take of this object found held: their next takes read no manifest early. */
  private readonly busyTakes = new Set<string>();

  /** Forgets the early read of disk `disk` that `listing` was made for (its session ends): it is only for that session. */
  forgetEarly(disk: string, listing: Promise<ObjectInfo[]>): void {
    if (this.early.get(disk)?.listing === listing) this.early.delete(disk);
  }

  /** Reads disk `disk`'s manifest now, for readManifest to use once it has checked it is still the newest; never throws. */
  private readEarly(disk: string): Promise<EarlyManifest | null> {
    return (async () => {
      const listed = await this.newestManifestObject(disk);
      return { listed, manifest: listed ? await this.readGeneration(disk, listed.generation) : null };
    })().catch(() => null);
  }

  async readManifest(disk: string): Promise<DiskManifest | null> {
    checkDiskName(disk);
    const early = this.early.get(disk);
    this.early.delete(disk);
    // A writer may delete the generation we listed once its successor exists: list again then.
    for (let attempt = 0; attempt < 5; attempt++) {
      // The first look: the listing the session made once the lease was held (a failed one: list again).
      const listed = attempt === 0 && early ? await early.listing.catch(() => undefined) : undefined;
      const newest = await this.newestManifestObject(disk, listed);
      if (newest === null) return null;
      // Read before this listing (beside the lease take): it is what a GET would read now when this listing shows
      // the very object that read listed. The same generation under the same ETag is the same version: a
      // generation's key is only ever created (If-None-Match: *), never replaced, and were it created again (a
      // late writer of an already deleted generation), the writer's random token in every manifest gives that
      // version another ETag; the GET went between the two listings, which saw that one version at both ends.
      // A listing can lag a delete (some gateways): one made under the lease may still show a generation a holder
      // before us deleted after writing the next one. The HEAD made under the lease asks the object itself, as a
      // GET would (a gone one is listed again below).
      const e = attempt === 0 && early ? await early.read : null;
      const sameVersion = e?.manifest && e.listed && e.listed.etag !== '' && e.listed.generation === newest.generation && e.listed.etag === newest.etag;
      if (sameVersion && (await early!.headed)?.etag === e.listed!.etag) return e.manifest!;
      const m = await this.readGeneration(disk, newest.generation);
      if (m) return m;
    }
    throw new IoError(`the manifest of disk '${disk}' kept changing while it was read; retry`, this.name(manifestPrefix(disk)));
  }

  /** Generation `generation` of disk `disk`'s manifest, checked, or null when it is gone; damage throws. */
  private async readGeneration(disk: string, generation: number): Promise<DiskManifest | null> {
    const key = manifestKey(disk, generation);
    const bytes = await getAtMost(this.store, key, MANIFEST_LIMIT);
    if (!bytes) return null;
    if (bytes === 'too large') throw this.manifestDamage(disk, key, `more than ${MANIFEST_LIMIT} bytes, more than a manifest may have`);
    try {
      const m = parseManifest(bytes);
      if (m.disk !== disk) throw new ManifestProblem(`it names disk '${m.disk}'`);
      if (m.generation !== generation) throw new ManifestProblem(`it says generation ${m.generation}, its name ${generation}`);
      if (m.points.some((p) => p.kind === 'diff')) throw new ManifestProblem('it lists a differencing point, which object repositories never have');
      return m;
    } catch (err) {
      if (!(err instanceof ManifestProblem)) throw err;
      throw this.manifestDamage(disk, key, err.message);
    }
  }

  private manifestDamage(disk: string, key: string, why: string): RepositoryDamageError {
    return new RepositoryDamageError(
      `manifest damaged: ${why}; the points' maps and blocks are under ${this.name(diskPrefix(disk))}: put back a copy of this object, or back up again under another --name`,
      this.name(key),
    );
  }

  /**
   * The map openPoint read last, for the next readMap of the same point to take instead of reading it again (once):
   * a backup opens its base point (checkFresh), then derives the new point's map from it. Maps are never rewritten.
   */
  private opened: { key: string; map: PointMap } | null = null;

  /** A point's map, checked; a damage error naming the point when missing or unreadable. */
  async readMap(disk: string, point: RestorePoint): Promise<PointMap> {
    const key = diskPrefix(disk) + point.image;
    const opened = this.opened;
    this.opened = null;
    if (opened?.key === key && opened.map.virtualSize === point.virtualSize) return opened.map;
    // At most a map of this disk size at the smallest block size: the read is sized by the manifest, not the store.
    const limit = mapLimitFor(point.virtualSize);
    const bytes = await getAtMost(this.store, key, limit);
    if (!bytes) throw new RepositoryDamageError(`the map of restore point ${point.id} is missing`, this.name(key));
    if (bytes === 'too large') throw new RepositoryDamageError(`the map of restore point ${point.id} has more than ${limit} bytes, more than a map of ${point.virtualSize} bytes may have`, this.name(key));
    const map = parsePointMap(bytes);
    if (typeof map === 'string') throw new RepositoryDamageError(`the map of restore point ${point.id} is damaged: ${map}`, this.name(key));
    if (map.virtualSize !== point.virtualSize) throw new RepositoryDamageError(`the map of restore point ${point.id} describes ${map.virtualSize} bytes, the manifest ${point.virtualSize}`, this.name(key));
    return map;
  }

  async openPoint(disk: string, point: RestorePoint): Promise<Disk> {
    const map = await this.readMap(disk, point);
    const key = diskPrefix(disk) + point.image;
    this.opened = { key, map };
    return new PointDisk(map, { store: this.store, diskPrefix: diskPrefix(disk), pointId: point.id, location: { store: new MemoryStore(this.name('')), path: key }, readAhead: this.readAhead });
  }

  async openList(disk: string, point: RestorePoint, geometry: { virtualSize: number; logicalSectorSize: number }): Promise<Metafile> {
    const key = diskPrefix(disk) + pointListName(point.id);
    // The first read takes the lists of most disks whole (under ~3 GiB at 2 MiB blocks): one round trip.
    const head = await this.store.get(key, { start: 0, length: LIST_FIRST_READ });
    if (!head) throw new RepositoryDamageError(`metafile of restore point ${point.id} is missing`, this.name(key));
    // The header says how long the list is (a damaged one is a MetafileError, as from the reader); a list of another
    // disk size is refused before its entries are read.
    const h = nativeMetafileLength(head.subarray(0, LIST_HEADER), this.name(key));
    if (h.virtualSize !== geometry.virtualSize) throw new MetafileError(`describes ${h.virtualSize} bytes, the point has ${geometry.virtualSize}`, this.name(key));
    // Shorter than the range: that is the whole object. Else read exactly what the header says (and a byte more).
    const bytes = head.length < LIST_FIRST_READ ? (head.length > h.length ? 'too large' : head) : await getAtMost(this.store, key, h.length);
    if (!bytes) throw new RepositoryDamageError(`metafile of restore point ${point.id} is missing`, this.name(key));
    if (bytes === 'too large') throw new MetafileError(`longer than the ${h.length} bytes its header says`, this.name(key));
    // The metafile reader works on a Location: a store in memory holding just this object.
    const mem = new MemoryStore(this.name(''));
    const f = await mem.createExclusive(key);
    await f.write(0, bytes);
    return readMetafile({ store: mem, path: key }, geometry);
  }

  pointName(disk: string, point: RestorePoint): string {
    return this.name(diskPrefix(disk) + point.image);
  }

  async pointSize(disk: string, point: RestorePoint): Promise<number | null> {
    return (await this.store.head(diskPrefix(disk) + point.image))?.size ?? null;
  }

  /**
   * Leases and manifests are only exclusive if the store decides `If-None-Match: *` and `If-Match` itself; some
   * (older MinIO, some gateways) ignore them and accept every write, which would let two runs hold one disk. So,
   * once per repository object before its first lease: a create of the existing marker and a replace of it under an
   * ETag it does not have must both fail. Where either is accepted, the run stops in one line before any lease is
   * taken (the marker was rewritten with its own content, give or take a trailing newline).
   */
  private async probeConditions(): Promise<void> {
    if (this.conditionsChecked) return;
    // A missing or damaged marker is exists()'s to report; backup has made it by now.
    const marker = this.marker ?? (await this.readMarker().catch(() => null));
    this.marker = null;
    if (!marker) return;
    // Not byte-identical to the object: a retried probe's 412 must not pass for our own earlier write.
    const body = marker.at(-2) === 0x0a ? marker.subarray(0, -1) : Buffer.concat([marker, Buffer.from('\n')]);
    const accepted = async (conditions: PutConditions, refusal: typeof AlreadyExistsError): Promise<boolean> => {
      try {
        await this.store.put(REPOSITORY_MARKER, body, conditions);
        return true;
      } catch (err) {
        if (err instanceof refusal) return false;
        throw err;
      }
    };
    const unsafe = (header: string) =>
      new UnsupportedError(
        `the store ignores ${header} (a conditional write of ${REPOSITORY_MARKER} that had to fail was accepted), so leases and manifests would not be exclusive; nothing else was written: use a store or gateway that honours conditional writes (docs/repository.md)`,
        this.display,
      );
    // Both at once: each is one round trip whose answer (a 412 with a body) is all that is waited for.
    const [create, replace] = await Promise.all([accepted({ ifNoneMatch: '*' }, AlreadyExistsError), accepted({ ifMatch: '0'.repeat(32) }, ConflictError)]);
    if (create) throw unsafe('If-None-Match');
    if (replace) throw unsafe('If-Match');
    this.conditionsChecked = true;
  }

  /**
   * Removes the lease objects of disks that have no manifest and no other object: a first backup killed between
   * taking its lease and creating generation 1 leaves one, and nothing else visits a disk without a manifest. Each
   * is taken as any lease is (a live holder's is left alone; an expired one watched first), checked empty under it,
   * then deleted; a disk that turns out to have objects is left with a released lease. Returns the keys removed.
   */
  async dropOrphanLocks(): Promise<string[]> {
    const disks = new Set(await this.listDisks());
    const orphans = new Set<string>();
    for await (const o of this.store.list(LEASES)) {
      const disk = o.key.slice(LEASES.length).split('/')[0];
      if (!disks.has(disk) && isDiskName(disk)) orphans.add(disk);
    }
    if (!orphans.size) return [];
    await this.probeConditions();
    // At once: each may watch an expired lease for a whole lease before it takes it over. All end (each releases
    // what it took) before a failure of one is thrown.
    const settled = await Promise.allSettled(
      [...orphans].map(async (disk) => {
        const lease = await DiskLease.take(this.store, disk, 'prune', this.lease).catch((err: unknown) => {
          if (err instanceof BusyError) return null; // a live run holds it: not an orphan
          throw err;
        });
        if (!lease) return null;
        try {
          // Under the lease, the disk's state is settled: a manifest or any object makes it a disk, not an orphan.
          if ((await this.holdsAny(manifestPrefix(disk))) || (await this.holdsAny(diskPrefix(disk)))) return null;
          return await lease.discard();
        } finally {
          await lease.release();
        }
      }),
    );
    const failed = settled.find((r) => r.status === 'rejected');
    if (failed) throw failed.reason;
    return settled.flatMap((r) => (r.status === 'fulfilled' && r.value ? r.value : []));
  }

  /** True when some object's key starts with `prefix` (the listing's first page only). */
  private async holdsAny(prefix: string): Promise<boolean> {
    for await (const o of this.store.list(prefix)) return o !== undefined;
    return false;
  }

  /** Ends the store's pooled connections. */
  close(): Promise<void> {
    return this.store.close();
  }

  async lockDisk(disk: string, op: string): Promise<DiskSession> {
    checkDiskName(disk);
    // The probe's refused writes and the lease's reads go at once (one round trip less): take() writes nothing
    // before the probe has passed, and a store that failed it is reported rather than what take() ran into.
    const probed = this.probeConditions();
    probed.catch(() => {});
    // A backup reads the manifest next: its listing and GET go beside the lease's reads too, and readManifest uses
    // what they read only once a listing made under the lease shows the same version (so it is a read made then).
    // Not after a take this object saw fail busy: a run that waits for the lease (--wait) polls it every second, and
    // would read the manifest again each time for nothing.
    const early = op === 'backup' && !this.busyTakes.has(disk) ? this.readEarly(disk) : null;
    let lease: DiskLease;
    try {
      lease = await DiskLease.take(this.store, disk, op, this.lease, probed);
    } catch (err) {
      if (err instanceof BusyError) this.busyTakes.add(disk);
      await probed;
      throw err;
    }
    this.busyTakes.delete(disk);
    const session = new ObjectDiskSession(this, disk, op, lease);
    const listing = session.listedManifests();
    if (early && listing) {
      // Sent now that the lease is held, beside the session's listings (no round trip of its own, the early read
      // being done by now as a rule): readManifest's proof that the generation read early still exists as read.
      const headed = early.then((e) => (e?.listed ? this.store.head(manifestKey(disk, e.listed.generation)) : null)).catch(() => null);
      this.early.set(disk, { read: early, listing, headed });
    }
    return session;
  }
}
