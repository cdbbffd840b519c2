/**
 * A repository in a folder of any ByteStore (a local path, an SMB share): one folder per disk holding its manifest,
 * its lock and its restore points as ordinary VHDX images next to their metafiles. Layout: docs/repository.md.
 */
import type { Disk, DiskIdentity } from '../formats/disk.js';
import { createDisk, openDisk } from '../formats/open.js';
import { writeAtomically, writeBytesAtomically } from '../io/atomic.js';
import { displayLocation, type Location } from '../io/location.js';
import { metafileLocationFor, readMetafile, writableFields, writeMetafile, METAFILE_SUFFIX, type Metafile } from '../meta/index.js';
import { lockImage, LOCK_SUFFIX, type ImageLock } from '../sync/lock.js';
import { hookLocation } from '../sync/kill-hook.js';
import { mergeDiff } from '../sync/merge.js';
import { MERGE_STATE_SUFFIX, mergeStateLocationFor } from '../sync/merge-state.js';
import { MERGE_MARKER_SUFFIX, mergeMarkerLocationFor } from '../sync/merge-marker.js';
import { AlreadyExistsError, NotFoundError, RepositoryDamageError, UnsupportedError, UsageError } from '../util/errors.js';
import type { DiskSession, PointFill, PointName, PointSpec, RepoBackend, WrittenPoint } from './backend.js';
import { ManifestProblem, MANIFEST_LIMIT, parseManifest, serializeManifest, type DiskManifest, type PointKind, type RestorePoint } from './manifest.js';
import { isMarker, markerBytes, REPOSITORY_MARKER } from './marker.js';
import { checkDiskName, isPointId } from './names.js';
import { FOLD_MARKER_NAME, readFoldMarker, removeFoldMarker, writeFoldMarker } from './fold-marker.js';

export { REPOSITORY_MARKER };
export const MANIFEST_NAME = 'manifest.json';
/** Where a new point's list is hashed to before the point's image has its final identity. */
export const INCOMING_SUFFIX = '.incoming' + METAFILE_SUFFIX;

/** VHDX blocks of point images: the metafile block size within what VHDX allows (1 to 256 MiB). */
function vhdxBlockSize(blockSize: number): number {
  return Math.min(256 << 20, Math.max(1 << 20, blockSize));
}

/** Reads a whole small file, refusing one larger than `limit`. */
async function readSmall(loc: Location, limit: number): Promise<Buffer | null> {
  const st = await loc.store.stat(loc.path);
  if (!st || st.isDirectory) return null;
  if (st.size > limit) return Buffer.alloc(limit + 1);
  const f = await loc.store.open(loc.path, 'read');
  try {
    return await f.read(0, st.size);
  } finally {
    await f.close();
  }
}

/** A repository in a folder. */
export class FileRepository implements RepoBackend {
  private readonly root: Location;
  constructor(root: Location) {
    // Every change goes through the crash tests' kill hook when it is armed (a no-op otherwise).
    this.root = hookLocation(root);
  }

  get display(): string {
    return displayLocation(this.root);
  }

  private at(...parts: string[]): Location {
    return { store: this.root.store, path: this.root.store.paths.join(this.root.path, ...parts) };
  }

  async exists(create = false): Promise<boolean> {
    const marker = this.at(REPOSITORY_MARKER);
    if (await this.hasMarker(marker)) return true;
    const st = await this.root.store.stat(this.root.path);
    if (st && !st.isDirectory) throw new UsageError('not a folder', this.display);
    if (!create) return false;
    if (st) {
      const names = (await this.root.store.list(this.root.path)).filter((n) => !n.startsWith('.'));
      // A backup starting at the same moment may have made the repository (marker, then its disk's folder) between
      // the first look and the listing: the marker decides, not the listing.
      if (names.length && (await this.hasMarker(marker))) return true;
      if (names.length) throw new UsageError(`not a vhdsync repository (no ${REPOSITORY_MARKER}) and not empty: name a new or empty folder`, this.display);
    }
    await this.root.store.mkdirp(this.root.path);
    const body = markerBytes();
    try {
      await writeBytesAtomically(marker, body);
    } catch (err) {
      // Another backup made the repository at the same moment.
      if (!(err instanceof AlreadyExistsError)) throw err;
    }
    return true;
  }

  /** True when the marker is there and valid; RepositoryDamageError when it is there but not a marker. */
  private async hasMarker(marker: Location): Promise<boolean> {
    const bytes = await readSmall(marker, 4096);
    if (!bytes) return false;
    if (!isMarker(bytes)) throw new RepositoryDamageError(`${REPOSITORY_MARKER} is not a vhdsync repository marker`, displayLocation(marker));
    return true;
  }

  async listDisks(): Promise<string[]> {
    const out: string[] = [];
    for (const name of await this.root.store.list(this.root.path)) {
      if (name.startsWith('.') || name === REPOSITORY_MARKER) continue;
      if ((await this.root.store.stat(this.at(name).path))?.isDirectory && (await this.root.store.stat(this.at(name, MANIFEST_NAME).path))) out.push(name);
    }
    return out.sort();
  }

  async readManifest(disk: string): Promise<DiskManifest | null> {
    checkDiskName(disk);
    const loc = this.at(disk, MANIFEST_NAME);
    const bytes = await readSmall(loc, MANIFEST_LIMIT);
    if (!bytes) return null;
    try {
      const m = parseManifest(bytes);
      if (m.disk !== disk) throw new ManifestProblem(`it names disk '${m.disk}'`);
      return m;
    } catch (err) {
      if (!(err instanceof ManifestProblem)) throw err;
      const dir = displayLocation(this.at(disk));
      throw new RepositoryDamageError(
        `manifest damaged: ${err.message}; the restore points are plain VHDX images in ${dir} (each <id>.vhdx opens with qemu-img or Hyper-V); put back a copy of the manifest, or move the folder aside and back up again`,
        displayLocation(loc),
      );
    }
  }

  async openPoint(disk: string, point: RestorePoint): Promise<Disk> {
    return openDisk(this.at(disk, point.image), { format: 'vhdx' });
  }

  async openList(disk: string, point: RestorePoint, geometry: { virtualSize: number; logicalSectorSize: number }): Promise<Metafile> {
    const loc = metafileLocationFor(this.at(disk, point.image));
    if (!(await loc.store.stat(loc.path))) throw new RepositoryDamageError(`metafile of restore point ${point.id} is missing`, displayLocation(loc));
    return readMetafile(loc, geometry);
  }

  /** A disk's folder (for `verify --repair`, which reads the images themselves). */
  diskFolder(disk: string): Location {
    return this.at(checkDiskName(disk));
  }

  pointName(disk: string, point: RestorePoint): string {
    return displayLocation(this.at(disk, point.image));
  }

  async pointSize(disk: string, point: RestorePoint): Promise<number | null> {
    return (await this.root.store.stat(this.at(disk, point.image).path))?.size ?? null;
  }

  async lockDisk(disk: string, op: string): Promise<DiskSession> {
    checkDiskName(disk);
    const dir = this.at(disk);
    await dir.store.mkdirp(dir.path);
    const lock = await lockImage(this.at(disk, MANIFEST_NAME), op);
    return new FileDiskSession(disk, dir, lock);
  }
}

/** A disk folder held under its lock. */
class FileDiskSession implements DiskSession {
  /** The disk's folder through the lock's guard: no change once the lease is lost. */
  private readonly dir: Location;
  constructor(
    readonly disk: string,
    private readonly plainDir: Location,
    private readonly lock: ImageLock,
  ) {
    this.dir = lock.guard(plainDir);
  }

  private at(name: string, guarded = true): Location {
    const base = guarded ? this.dir : this.plainDir;
    return { store: base.store, path: base.store.paths.join(base.path, name) };
  }

  check(): void {
    this.lock.check();
  }

  release(): Promise<void> {
    return this.lock.release();
  }

  async writeManifest(m: DiskManifest): Promise<void> {
    const bytes = serializeManifest(m);
    await writeBytesAtomically(this.at(MANIFEST_NAME), bytes, { overwrite: true });
    // The fold marker stands in for a pending step until a manifest without one is in place (src/repo/fold-marker.ts).
    if (!m.pending) await removeFoldMarker(this.at(FOLD_MARKER_NAME));
  }

  async writePoint<T>(id: string, spec: PointSpec, fill: PointFill<T>): Promise<WrittenPoint<T>> {
    const image = `${id}.vhdx`;
    const final = this.at(image);
    const listAt = this.at(image + INCOMING_SUFFIX);
    const base = spec.base;
    const baseLoc = base ? this.at(base.image) : null;
    // --reflink always fails early, in one line, where the store cannot share blocks at all.
    if (spec.reflink === 'always' && (!base || base.kind === 'diff')) await this.probeReflink(id);
    let kind: PointKind = base ? 'diff' : 'full';
    let parentIdentity: DiskIdentity | undefined;
    const result = await writeAtomically(final, async (temp) => {
      // A clone of a differencing image would be a second child of its parent: clones are made of full images only.
      if (base && baseLoc && spec.reflink !== 'never' && base.kind !== 'diff') {
        try {
          if (!temp.store.clone) throw new UnsupportedError(`a ${temp.store.kind} store cannot share blocks between files (reflink)`, displayLocation(this.plainDir));
          await temp.store.clone(baseLoc.path, temp.path);
          kind = 'clone';
        } catch (err) {
          if (!(err instanceof UnsupportedError) || spec.reflink === 'always') throw err;
        }
      } else if (base && spec.reflink === 'always') {
        throw new UnsupportedError(`--reflink always: the newest point ${base.id} is a differencing image, which is never cloned; back up once with --full to start a chain of clones`, displayLocation(this.plainDir));
      }
      let disk: Disk;
      if (kind === 'clone') {
        disk = await openDisk(temp, { writable: true, format: 'vhdx' });
      } else if (kind === 'diff') {
        const parent = await openDisk(baseLoc!, { format: 'vhdx' });
        parentIdentity = await parent.identity();
        disk = await createDisk(temp, { format: 'vhdx', type: 'differencing', parent, finalLocation: final, blockSize: vhdxBlockSize(spec.blockSize) });
      } else {
        disk = await createDisk(temp, {
          format: 'vhdx',
          type: 'dynamic',
          virtualSize: spec.virtualSize,
          logicalSectorSize: spec.logicalSectorSize,
          blockSize: vhdxBlockSize(spec.blockSize),
          finalLocation: final,
        });
      }
      try {
        const r = await fill(disk, listAt, kind);
        await disk.flush();
        return r;
      } finally {
        await disk.close();
      }
    });
    // The list is stamped with the image's identity as it is on disk now (read after close, as the merge's rotation does).
    const opened = await openDisk(final, { format: 'vhdx' });
    let identity: DiskIdentity;
    try {
      identity = await opened.identity();
    } finally {
      await opened.close();
    }
    const list = await readMetafile(listAt, { virtualSize: spec.virtualSize });
    try {
      const s = list.summary;
      await writeMetafile(
        metafileLocationFor(final),
        { ...writableFields(list), layout: 'native', logicalSectorSize: s.logicalSectorSize ?? spec.logicalSectorSize, identity, parentIdentity },
        list.records(),
      );
    } finally {
      await list.close();
    }
    await listAt.store.unlink(listAt.path);
    return { image, kind, parent: kind === 'diff' ? base!.id : null, result };
  }

  /** `--reflink always` before a first point: fails now, with one line, where the store cannot clone. */
  private async probeReflink(id: string): Promise<void> {
    const probe = this.at(`.${id}.reflink-probe`);
    const copy = this.at(`.${id}.reflink-probe-clone`);
    if (!probe.store.clone) throw new UnsupportedError(`--reflink always: a ${probe.store.kind} store cannot share blocks between files`, displayLocation(this.plainDir));
    const f = await probe.store.createExclusive(probe.path);
    try {
      await f.write(0, Buffer.alloc(4096, 1));
      await f.flush();
    } finally {
      await f.close();
    }
    try {
      await probe.store.clone(probe.path, copy.path);
    } finally {
      await probe.store.unlink(copy.path).catch(() => {});
      await probe.store.unlink(probe.path).catch(() => {});
    }
  }

  async fold(drop: PointName, into: PointName): Promise<void> {
    // Durable before the first change: the merge's own files are gone before the renames below, and a manifest lost
    // then would leave nothing saying that the dropped point's image holds its child's content.
    const markerAt = this.at(FOLD_MARKER_NAME);
    const marker = await readFoldMarker(markerAt).catch(() => null);
    if (marker?.drop !== drop.id || marker.into !== into.id) await writeFoldMarker(markerAt, { drop: drop.id, into: into.id });
    // The merge guards its own writes with the parent's lock; it gets the store without this session's guard.
    const x = this.at(drop.image, false);
    const s = this.at(into.image, false);
    const { store } = x;
    const state = mergeStateLocationFor(x);
    let xThere = Boolean(await store.stat(x.path));
    const sThere = Boolean(await store.stat(s.path));
    this.check();
    if (sThere && xThere) {
      // The merge has not finished (it deletes the child last): start it, or resume it from its state file.
      let contentId: string | undefined;
      if (!(await store.stat(state.path))) {
        const child = await openDisk(s, { format: 'vhdx' });
        try {
          contentId = (await child.identity()).contentId;
        } finally {
          await child.close();
        }
      }
      await mergeDiff(s, { parentContentId: contentId });
    } else if (xThere && ((await store.stat(state.path)) || (await store.stat(mergeMarkerLocationFor(s).path)))) {
      // Killed in the merge's cleanup, after the child was deleted: the merge finishes it from the state file, or
      // only removes its marker (the fold's marker, not the merge's, is what outlives the merge until the manifest).
      await mergeDiff(s);
    } else if (!xThere && !sThere) {
      throw new RepositoryDamageError(`both ${drop.image} and ${into.image} are missing while folding one into the other`, displayLocation(this.plainDir));
    }
    this.check();
    xThere = Boolean(await store.stat(x.path));
    // The merged image already carries the child's content id, so the child's own children find their parent again.
    if (xThere) await this.dir.store.rename(this.at(drop.image).path, this.at(into.image).path, { replace: false });
    const xm = metafileLocationFor(this.at(drop.image));
    if (await xm.store.stat(xm.path)) await xm.store.rename(xm.path, metafileLocationFor(this.at(into.image)).path, { replace: true });
    await this.dir.store.syncDir(this.dir.path);
  }

  async unrecordedPoints(): Promise<string[]> {
    const names = await this.plainDir.store.list(this.plainDir.path);
    // Point images, as verify --repair finds them: `<id>.vhdx`, except a killed write's (its list still incoming).
    return names.filter((n) => n.endsWith('.vhdx') && isPointId(n.slice(0, -'.vhdx'.length)) && !names.includes(n + INCOMING_SUFFIX)).sort();
  }

  async sweep(m: DiskManifest): Promise<string[]> {
    const keep = new Set<string>([MANIFEST_NAME]);
    for (const p of m.points) keep.add(p.image).add(p.image + METAFILE_SUFFIX);
    if (m.pending) {
      const drop = m.points.find((p) => p.id === m.pending!.drop)!;
      const into = m.points.find((p) => p.id === m.pending!.into);
      keep.add(drop.image + MERGE_STATE_SUFFIX).add(FOLD_MARKER_NAME);
      // The merge's marker beside the child being folded names the state's side (docs/decisions/0003).
      if (into) keep.add(into.image + MERGE_MARKER_SUFFIX);
    }
    const lockName = MANIFEST_NAME + LOCK_SUFFIX;
    const removed: string[] = [];
    const { store, path } = this.dir;
    for (const name of await store.list(path)) {
      // The disk lock (and its takeover files) belong to the lock protocol, which cleans up after itself.
      if (keep.has(name) || name.startsWith(lockName)) continue;
      const p = store.paths.join(path, name);
      const st = await store.stat(p);
      if (!st || st.isDirectory) continue;
      try {
        await store.unlink(p);
        removed.push(name);
      } catch (err) {
        if (!(err instanceof NotFoundError)) throw err;
      }
    }
    return removed;
  }
}
