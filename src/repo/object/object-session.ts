/**
 * A disk of an object repository held under its lease: new manifest generations, new points (their blocks, map
 * and list), and the sweep that deletes whatever the manifest no longer references.
 */
import { randomBytes } from 'node:crypto';
import type { DiskIdentity } from '../../formats/disk.js';
import { fencedStore } from '../../io/fenced-store.js';
import { MemoryStore } from '../../io/memory-store.js';
import type { ObjectInfo, ObjectStore } from '../../io/object-store.js';
import { readMetafile, writableFields, writeMetafile } from '../../meta/index.js';
import { AlreadyExistsError, ConflictError, describeError, ManifestWrittenError, RepositoryDamageError, UnprovenPointError, UnsupportedError, VhdsyncError } from '../../util/errors.js';
import type { DiskSession, PointFill, PointName, PointSpec, WrittenPoint } from '../backend.js';
import { highWater, serializeManifest, type DiskManifest } from '../manifest.js';
import { byId } from '../names.js';
import { notice } from '../../util/notice.js';
import { pastManifest, provePoints, type Proven } from './point-proof.js';
import { REBUILT_SOURCE } from '../repair.js';
import { BlockUploader } from './block-upload.js';
import { diskPrefix, manifestKey, manifestPrefix, parseBlockName, parseGeneration, parseMapName, pointListName, pointMapName } from './keys.js';
import type { DiskLease } from './lease.js';
import type { ObjectRepository } from './object-backend.js';
import { MAP_HEADER, MAP_LIMIT, mapEntriesBytes, PointMap } from './point-map.js';
import { PointDisk } from './point-disk.js';

/** The identity of a point written at `createdMs` (what its list records and its PointDisk reports). */
function pointIdentity(virtualSize: number, createdMs: number): DiskIdentity {
  return { format: 'raw', contentId: '', timestamp: 0, fileSize: virtualSize, mtimeMs: createdMs };
}

/** The `source` of a point a later run recorded (recordLater): the run that made it never did. */
export const RECORDED_LATER = 'unknown (recorded by a later run: its backup was killed before recording it, or the manifest generation that did was lost)';

/** Every object a listing yields. */
async function listAll(listing: AsyncIterable<ObjectInfo>, stop?: AbortSignal): Promise<ObjectInfo[]> {
  const out: ObjectInfo[] = [];
  for await (const o of listing) {
    // A listing nobody will take (its run ended first) asks for no further pages.
    stop?.throwIfAborted();
    out.push(o);
  }
  return out;
}

/** The session of one run on one disk. */
export class ObjectDiskSession implements DiskSession {
  private readonly prefix: string;
  /**
   * A backup keeps the blocks no point references until its own point is written: they are what a killed run
   * already sent, and the new point reuses them instead of sending them again. Every later sweep deletes them.
   */
  private keepStrayBlocks: boolean;
  /** The disk's block objects (hash, size) as the sweep of a backup listed them, for its point to reuse (once). */
  private listedBlocks: Map<string, number> | null = null;
  /**
   * The listing of the disk's objects recordLater made in a backup, for the sweep that follows to use instead of
   * listing again (once, and only for the manifest recordLater returned unchanged: no later point was found in it),
   * and the listing of the manifests the sweep also needs, made beside it.
   */
  private settleListing: { m: DiskManifest; objects: ObjectInfo[]; manifests: ObjectInfo[] } | null = null;
  /**
   * A backup's listings of its manifests and of the disk's objects, sent as soon as the lease is held (beside each
   * other, not one round trip after another): readManifest checks its early read against the first, and
   * recordLater takes both (once) when the manifest it is given is the newest they show.
   */
  private prelisted: { manifests: Promise<ObjectInfo[]>; objects: Promise<ObjectInfo[]> } | null = null;
  /** Ends the prelisted listings' paging when the session ends before they are taken (a failed backup). */
  private readonly prelistStop = new AbortController();

  constructor(
    private readonly repo: ObjectRepository,
    readonly disk: string,
    op: string,
    private readonly lease: DiskLease,
  ) {
    this.prefix = diskPrefix(disk);
    this.keepStrayBlocks = op === 'backup';
    if (op === 'backup') {
      const stop = this.prelistStop.signal;
      this.prelisted = { manifests: listAll(this.store.list(manifestPrefix(disk)), stop), objects: listAll(this.store.list(this.prefix), stop) };
      // A failed listing is listed again by whoever needs it (or never, when the run ends first).
      this.prelisted.manifests.catch(() => {});
      this.prelisted.objects.catch(() => {});
    }
  }

  /** The listing of the manifests made once the lease was held (a backup's), for readManifest; null for other runs. */
  listedManifests(): Promise<ObjectInfo[]> | null {
    return this.prelisted?.manifests ?? null;
  }

  /** This run's token in every manifest it writes (DiskManifest.writer): no other run writes the same bytes. */
  private readonly writer = randomBytes(8).toString('hex');

  /** The repository's store with the lease as the fence of every put and delete (each attempt, retries too). */
  private get store() {
    return (this.fenced ??= fencedStore(this.repo.store, this.lease));
  }
  private fenced: ObjectStore | undefined;

  /** The ConflictError of a run whose manifest generation `mine` another run's generation `g` (at `key`) superseded. */
  private superseded(g: number, mine: number, key: string): ConflictError {
    return new ConflictError(`generation ${g} of the manifest of disk '${this.disk}' was written by another run that took the disk over; this run (at generation ${mine}) stopped and records nothing more (a restore point whose map it wrote may still be recorded by the next run): retry`, this.repo.name(key));
  }

  /**
   * Throws ConflictError when the disk has a manifest generation newer than `m`: another run took the disk over
   * and wrote it, so this run's view is stale (its lease lapsed unnoticed: a suspended VM, a frozen clock).
   */
  private async refuseIfSuperseded(m: DiskManifest): Promise<void> {
    for await (const o of this.store.list(manifestPrefix(this.disk))) {
      const g = parseGeneration(o.key.slice(manifestPrefix(this.disk).length));
      if (g !== null && g > m.generation) throw this.superseded(g, m.generation, o.key);
    }
  }

  check(): void {
    this.lease.check();
  }

  release(): Promise<void> {
    // The early manifest read is checked against this session's listing: no later readManifest may use it.
    const listing = this.listedManifests();
    if (listing) this.repo.forgetEarly(this.disk, listing);
    if (this.prelisted) this.prelistStop.abort();
    this.prelisted = null;
    return this.lease.release();
  }

  /**
   * Creates generation `m`. Once the create succeeded, the generation stands: a failure after it is never thrown as
   * if nothing were written (a backup would report a recorded point as not made), but as a ManifestWrittenError that
   * says so, or as a ConflictError when another run superseded it or may have.
   */
  async writeManifest(m: DiskManifest): Promise<void> {
    const key = manifestKey(this.disk, m.generation);
    this.check();
    try {
      // Every generation carries the high-water mark of its ids (pastManifest), an older manifest's derived from its points.
      const highest = highWater(m);
      await this.store.put(key, serializeManifest({ ...m, writer: this.writer, ...(highest === null ? {} : { highest }) }), { ifNoneMatch: '*' });
    } catch (err) {
      if (!(err instanceof AlreadyExistsError)) throw err;
      throw new ConflictError(`generation ${m.generation} of the manifest of disk '${this.disk}' was written by another run meanwhile; this run recorded nothing (a restore point whose map it wrote may still be recorded by the next run): retry`, this.repo.name(key));
    }
    // The generation this one replaces is of no use now (a reader that listed it lists again); older ones, left by
    // a kill before this delete, go in the next sweep. It goes beside the listing below, whatever that finds: a
    // generation older than ours is never the newest (generations only grow), so deleting it decides nothing, even
    // when the listing then shows that another run superseded ours (that run deletes the older ones too).
    const replaced = m.generation > 1 ? this.store.delete([manifestKey(this.disk, m.generation - 1)]).then(() => null, (err: unknown) => err) : Promise.resolve(null);
    // The key of a generation a newer writer already deleted can be created again by a late one: ours is then not
    // the newest, and this run must stop before it acts on it (its sweep would delete the newer points' objects).
    try {
      await this.refuseIfSuperseded(m);
    } catch (err) {
      if (err instanceof ConflictError) {
        await replaced;
        throw err;
      }
      await this.confirmNewest(m, key, describeError(err)).finally(() => replaced);
    }
    // Our generation is recorded: a failed delete (the store failing, the lease lost) fails nothing. The leftover
    // goes in the next sweep, as after a kill here; a lost lease stops the run at its next write, if it has one.
    const failed = await replaced;
    if (failed) notice(`disk '${this.disk}'`, `generation ${m.generation} of its manifest is written, but the one it replaces was not deleted (${describeError(failed)}); the next run deletes it`);
  }

  /**
   * After generation `m` was created and the listing that shows no newer one failed (`listing`): asks the store
   * whether another run took the lease over (the only way a newer generation can exist; a local clock check is what
   * a frozen clock defeats). None: the run goes on with one notice. Taken: ConflictError. The store failing again:
   * ManifestWrittenError, since the generation stands unless such a takeover happened.
   */
  private async confirmNewest(m: DiskManifest, key: string, listing: string): Promise<void> {
    const head = `generation ${m.generation} of the manifest of disk '${this.disk}' is written, but`;
    let taken: boolean;
    try {
      taken = await this.lease.takenOver();
    } catch (err) {
      const unfinished = `confirming that no other run wrote a newer generation failed (listing the manifests: ${listing}; reading the lease: ${describeError(err)}); it stands unless another run took the disk over meanwhile: check with 'vhdsync list --repo ${this.repo.display} ${this.disk}'`;
      throw new ManifestWrittenError(m.generation, unfinished, `${head} ${unfinished}`, this.repo.name(key));
    }
    if (taken) {
      throw new ConflictError(`${head} another run has taken the disk's lease over since and may have written a newer one (listing the manifests to check failed: ${listing}); this run stopped and records nothing more: check with 'vhdsync list --repo ${this.repo.display} ${this.disk}' whether what it wrote is there, and retry`, this.repo.name(key));
    }
    notice(`disk '${this.disk}'`, `generation ${m.generation} of its manifest is written, but listing the manifests to confirm that no other run wrote a newer one failed (${listing}); the store shows no other run took the lease, so none can have: going on`);
  }

  async writePoint<T>(id: string, spec: PointSpec, fill: PointFill<T>): Promise<WrittenPoint<T>> {
    this.check();
    if (MAP_HEADER + mapEntriesBytes(spec.blockSize, spec.virtualSize) + 32 > MAP_LIMIT) {
      throw new UnsupportedError(`${Math.ceil(spec.virtualSize / spec.blockSize)} blocks of ${spec.blockSize} bytes are more than a point map holds (8 Mi): back up this disk under a new --name with a larger --block-size`, this.repo.name(this.prefix));
    }
    // What the store holds already (earlier points' blocks, a killed run's uploads) is not sent again. The sweep
    // before it listed them, deleting none (keepStrayBlocks): only a fresh session lists them here.
    let known = this.listedBlocks;
    this.listedBlocks = null;
    if (!known) {
      known = new Map<string, number>();
      for await (const o of this.store.list(this.prefix + 'blocks/')) {
        const h = parseBlockName(o.key.slice(this.prefix.length));
        if (h) known.set(h, o.size);
      }
    }
    let map: PointMap;
    if (spec.base) {
      const base = await this.repo.readMap(this.disk, spec.base);
      if (base.blockSize !== spec.blockSize || base.logicalSectorSize !== spec.logicalSectorSize) {
        throw new RepositoryDamageError(`the map of restore point ${spec.base.id} has other block or sector sizes than the disk`, this.repo.pointName(this.disk, spec.base));
      }
      map = base.derive();
    } else {
      map = PointMap.empty(spec.blockSize, spec.virtualSize, spec.logicalSectorSize);
    }
    // Every point shares its unchanged blocks with its base: a `clone` in the model's words, whatever --reflink says.
    const kind = spec.base ? 'clone' : 'full';
    const uploader = new BlockUploader(this.store, this.prefix, known, this.repo.uploadsInFlight, () => this.check());
    const mapKey = this.prefix + pointMapName(id);
    const lists = new MemoryStore(this.repo.name(this.prefix));
    const image = new PointDisk(map, { store: this.store, diskPrefix: this.prefix, pointId: id, location: { store: lists, path: mapKey }, uploader });
    let result: T;
    try {
      result = await fill(image, { store: lists, path: 'incoming.list' }, kind);
      await image.flush();
    } finally {
      await image.close();
    }
    // The list is stamped with the point's identity: its size and the time its map is written.
    const createdMs = Date.now();
    const incoming = await readMetafile({ store: lists, path: 'incoming.list' }, { virtualSize: spec.virtualSize });
    try {
      const s = incoming.summary;
      await writeMetafile(
        { store: lists, path: 'point.list' },
        { ...writableFields(incoming), layout: 'native', logicalSectorSize: s.logicalSectorSize ?? spec.logicalSectorSize, identity: pointIdentity(spec.virtualSize, createdMs) },
        incoming.records(),
      );
    } finally {
      await incoming.close();
    }
    this.check();
    await this.store.put(this.prefix + pointListName(id), lists.contents('point.list')!, { ifNoneMatch: '*' });
    this.check();
    const mapBytes = map.serialize(createdMs);
    await this.store.put(mapKey, mapBytes, { ifNoneMatch: '*' });
    this.keepStrayBlocks = false;
    return { image: pointMapName(id), kind, parent: null, result, imageBytes: mapBytes.length };
  }

  async fold(drop: PointName): Promise<void> {
    // Object points never read through another point; a manifest saying otherwise was not written by vhdsync.
    throw new RepositoryDamageError(`restore point ${drop.id} is listed as a differencing point, which object repositories never have`, this.repo.name(manifestPrefix(this.disk)));
  }

  async unrecordedPoints(): Promise<string[]> {
    // A point's map is written last, so a map is a point (what verify --repair rebuilds from); a list alone is a
    // killed run's leftover.
    const out: string[] = [];
    for await (const o of this.store.list(this.prefix)) {
      const name = o.key.slice(this.prefix.length);
      if (parseMapName(name) !== null) out.push(name);
    }
    return out;
  }

  /**
   * Records the points whose maps are later than every id `m` lists or ever listed (pastManifest: a lost newest generation, or a
   * backup killed between its map and its manifest) in a new generation, once proven as verify --repair proves them;
   * returns that generation, or `m` itself when there are none. A point that cannot be proven stops the run in one
   * line (the sweep would delete it): the user decides, with verify --repair or by deleting it. `repairing`: called
   * by verify --repair, whose own refusal (and source) it gives.
   */
  async recordLater(m: DiskManifest, repairing = false): Promise<DiskManifest> {
    const ids: string[] = [];
    // The blocks a later point references must exist (a holder that slept past its lease may write its map after a
    // prune swept them): the same listing goes on into `blocks/` only when there is a later point to check.
    const blocks = new Set<string>();
    // A backup's sweep lists the same objects right after this: it takes this listing instead (one listing of the
    // blocks, not two). Otherwise the listing stops at the blocks when there is no later point to check.
    const objects: ObjectInfo[] | null = this.keepStrayBlocks && !repairing ? [] : null;
    // The listings sent once the lease was held serve when `m` is the newest manifest they show (it was read and
    // checked against them): they were made under the lease before this session wrote anything, so they are what
    // listing now would show but for a late writer's requests since, which are left for the next sweep as those
    // after a listing made here would be (the manifest writes and each batch of deletes look for a takeover).
    const pre = objects ? await this.takePrelisted(m) : null;
    // So does the sweep's listing of the manifests, which goes beside this one (one round trip, not two).
    const manifests = objects ? (pre ? Promise.resolve(pre.manifests) : listAll(this.store.list(manifestPrefix(this.disk)))) : null;
    manifests?.catch(() => {});
    for await (const o of pre?.objects ?? this.store.list(this.prefix)) {
      objects?.push(o);
      const name = o.key.slice(this.prefix.length);
      // Listings are in key order and point ids start with a digit: every map comes before `blocks/`.
      const block = parseBlockName(name);
      if (block !== null) {
        if (!ids.length && !objects) break;
        blocks.add(block);
        continue;
      }
      const id = parseMapName(name);
      if (id !== null && pastManifest(m, id)) ids.push(id);
    }
    if (!ids.length) {
      if (objects && manifests) this.settleListing = { m, objects, manifests: await manifests };
      return m;
    }
    ids.sort(byId);
    let proven: Proven;
    try {
      proven = await provePoints(this.repo, this.disk, ids, m, repairing ? REBUILT_SOURCE : RECORDED_LATER, blocks);
    } catch (err) {
      if (repairing || !(err instanceof UnprovenPointError)) throw err;
      throw new RepositoryDamageError(
        `disk '${this.disk}' holds restore point${ids.length > 1 ? 's' : ''} ${ids.join(', ')} later than every point its manifest lists or listed, and ${ids.length > 1 ? 'they' : 'it'} cannot be recorded: ${err.why}; nothing was changed: see 'vhdsync verify --repo ${this.repo.display} ${this.disk} --repair'`,
        err.subject,
      );
    }
    const next: DiskManifest = { ...m, generation: m.generation + 1, hash: proven.hash, blockSize: proven.blockSize, points: [...m.points, ...proven.points] };
    await this.writeManifest(next);
    if (!repairing) notice(`disk '${this.disk}'`, `recorded restore point${ids.length > 1 ? 's' : ''} ${ids.join(', ')}, which the manifest did not list (a backup killed before recording it, or the newest manifest generation lost)`);
    return next;
  }

  /** The listings sent once the lease was held (once), when `m` is the newest manifest they show; else null. */
  private async takePrelisted(m: DiskManifest): Promise<{ manifests: ObjectInfo[]; objects: ObjectInfo[] } | null> {
    const pre = this.prelisted;
    this.prelisted = null;
    if (!pre) return null;
    const got = await Promise.all([pre.manifests, pre.objects]).catch(() => null);
    if (!got) return null;
    let newest: number | null = null;
    for (const o of got[0]) {
      const g = parseGeneration(o.key.slice(manifestPrefix(this.disk).length));
      if (g !== null && (newest === null || g > newest)) newest = g;
    }
    return newest === m.generation ? { manifests: got[0], objects: got[1] } : null;
  }

  async sweep(m: DiskManifest): Promise<string[]> {
    const removed: string[] = [];
    const doomed: string[] = [];
    // recordLater's listings, when it found no later point: what appeared since then is left for the next sweep (a
    // later map or manifest among it is a takeover, which the manifest writes and each batch of deletes below look
    // for; an older generation left by a late writer goes in the next sweep).
    const settled = this.settleListing?.m === m ? this.settleListing : null;
    this.settleListing = null;
    // Older manifest generations: the one just written (m) replaces them.
    for await (const o of settled?.manifests ?? this.store.list(manifestPrefix(this.disk))) {
      const g = parseGeneration(o.key.slice(manifestPrefix(this.disk).length));
      if (g !== null && g < m.generation) doomed.push(o.key);
      if (g !== null && g > m.generation) throw this.superseded(g, m.generation, o.key);
    }
    const keep = new Set<string>();
    for (const p of m.points) keep.add(p.image).add(pointListName(p.id));
    // The blocks the kept points reference; when a map cannot be read, no block is deleted (verify names the point).
    // A backup keeps every block anyway (keepStrayBlocks): it reads no map here, and keeps the listing of the blocks.
    const keepBlocks = this.keepStrayBlocks;
    const blocks = keepBlocks ? new Map<string, number>() : null;
    let referenced: Set<string> | null = new Set<string>();
    for (const p of keepBlocks ? [] : m.points) {
      try {
        (await this.repo.readMap(this.disk, p)).hashes(referenced);
      } catch (err) {
        if (!(err instanceof VhdsyncError)) throw err;
        referenced = null;
        break;
      }
    }
    for await (const o of settled?.objects ?? this.store.list(this.prefix)) {
      const name = o.key.slice(this.prefix.length);
      const block = parseBlockName(name);
      if (block !== null) blocks?.set(block, o.size);
      if (block !== null ? !referenced || keepBlocks || referenced.has(block) : keep.has(name)) continue;
      const id = parseMapName(name);
      // recordLater ran first (settle): a later point still unlisted here is a new holder's, or the listing lags.
      if (id !== null && pastManifest(m, id)) {
        throw new ConflictError(`restore point ${id} appeared under disk '${this.disk}' while this run held it, later than every point its manifest ever listed; nothing was deleted: retry`, this.repo.name(o.key));
      }
      doomed.push(o.key);
    }
    for (let i = 0; i < doomed.length; i += 1000) {
      const batch = doomed.slice(i, i + 1000);
      this.check();
      // What is unreferenced by `m` may be a newer manifest's: never delete past a takeover.
      await this.refuseIfSuperseded(m);
      await this.store.delete(batch);
      removed.push(...batch);
    }
    this.listedBlocks = blocks;
    return removed;
  }
}
