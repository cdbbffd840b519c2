/**
 * `verify --repair DISK`: rebuilds a damaged or missing manifest from what the disk's folder proves on its own. Every
 * `<id>.vhdx` there is a restore point when its metafile belongs to it (identity), its kind and parent come from the
 * image itself (a differencing image's parent locator and linkage name the point it reads through), and its
 * changed bytes from the lists. Anything it cannot prove stops the repair with one line, so a rebuilt manifest never
 * drops a point (the next run would delete its files) nor lists one that restores wrong data.
 */
import type { Disk } from '../formats/disk.js';
import { openDisk } from '../formats/open.js';
import { displayLocation, type Location } from '../io/location.js';
import { checkFresh, METAFILE_SUFFIX, metafileLocationFor, NATIVE_ALGORITHMS, readMetafile, zeroDigest, type Metafile } from '../meta/index.js';
import { MERGE_MARKER_SUFFIX } from '../sync/merge-marker.js';
import { MERGE_STATE_SUFFIX } from '../sync/merge-state.js';
import { DigestCursor } from '../sync/plan.js';
import { NotFoundError, RepositoryDamageError, VhdsyncError } from '../util/errors.js';
import { readSmallFile } from '../io/atomic.js';
import { FileRepository, INCOMING_SUFFIX, MANIFEST_NAME } from './file-backend.js';
import { MANIFEST_FORMAT, MANIFEST_LIMIT, MANIFEST_VERSION, parseManifest, serializeManifest, type DiskManifest, type RestorePoint } from './manifest.js';
import type { RepoBackend } from './backend.js';
import { byId, isPointId } from './names.js';
import { FOLD_MARKER_NAME, readFoldMarker } from './fold-marker.js';
import { lockDiskWaiting, type LockWait } from './wait.js';

/** What a repair did. */
export interface RepairSummary {
  disk: string;
  /** False when the manifest was intact (nothing written). */
  rebuilt: boolean;
  /** Why the manifest had to be rebuilt. */
  reason: string | null;
  points: Array<Pick<RestorePoint, 'id' | 'kind' | 'parent'>>;
  /** Images of interrupted backups (no metafile, an incoming list beside them): not points; the next backup deletes them. */
  ignored: string[];
  /** Where the damaged manifest was moved before the new one was written (null when there was none). */
  movedAside: string | null;
  /** The interrupted fold (a prune's) that was finished before the rebuild, as `DROP into INTO`, or null. */
  finishedFold: string | null;
}

/** What the source of a rebuilt point is recorded as: the manifest that knew it is gone. */
export const REBUILT_SOURCE = 'unknown (manifest rebuilt by vhdsync verify --repair)';

/** A point found in the folder (its image and list closed again once checked). */
interface Found {
  id: string;
  parent: string | null;
  virtualSize: number;
  logicalSectorSize: number;
  contentId: string;
}

/**
 * The backup order of the points, from what proves it: a diff comes right after the point it reads through (a backup
 * diffs against the newest point, and prune folds a dropped parent into its child), so each standalone point starts
 * a run of diffs whose order the images prove. Only the order of the runs rests on ids (clock times); it is accepted
 * when the ids agree with every run (ascending along it, and runs not interleaved), else refused: a clock that
 * stepped back, or two hosts with skewed clocks, would otherwise reorder backups silently.
 */
function backupOrder(found: Found[], refuse: (why: string) => Error): Found[] {
  const byParent = new Map<string, Found>();
  for (const f of found) {
    if (!f.parent) continue;
    const twin = byParent.get(f.parent);
    if (twin) throw refuse(`points ${twin.id} and ${f.id} both read through ${f.parent}, so which came later is not provable`);
    byParent.set(f.parent, f);
  }
  const runs: Found[][] = [];
  for (const root of found.filter((f) => !f.parent).sort((a, b) => byId(a.id, b.id))) {
    const run = [root];
    for (let next = byParent.get(root.id); next; next = byParent.get(next.id)) {
      const prev = run[run.length - 1];
      if (byId(prev.id, next.id) >= 0) throw refuse(`point ${next.id} reads through ${prev.id} but its id is not later (the clocks that named them disagree), so ids cannot order the points`);
      run.push(next);
    }
    runs.push(run);
  }
  for (let i = 1; i < runs.length; i++) {
    const last = runs[i - 1][runs[i - 1].length - 1].id;
    const root = runs[i][0].id;
    if (byId(last, root) >= 0) {
      throw refuse(`the order of standalone points ${runs[i - 1][0].id} and ${root} is not provable (${root}'s id falls among those of ${runs[i - 1][0].id}'s diffs, up to ${last}: the clocks that named them disagree)`);
    }
  }
  const ordered = runs.flat();
  // A diff whose chain of parents loops never joins a run.
  const lost = found.find((f) => !ordered.includes(f));
  if (lost) throw refuse(`point ${lost.id}'s chain of parents does not reach a standalone point`);
  return ordered;
}

/** The time a point id stands for (its backup's start, to the second). */
export function timeOfId(id: string): string {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z/.exec(id)!;
  return `${m[1]}-${m[2]}-${m[3]}T${m[4]}:${m[5]}:${m[6]}.000Z`;
}

/** Bytes of blocks whose digest in `list` differs from `prev` (or, without `prev`, from zeros). */
export async function changedBytes(list: Metafile, prev: Metafile | null): Promise<number> {
  const { algorithm, blockSize, blockCount, virtualSize } = list.summary;
  const a = new DigestCursor(list);
  const b = prev && prev.summary.virtualSize === virtualSize ? new DigestCursor(prev) : null;
  let bytes = 0;
  for (let i = 0; i < blockCount; i++) {
    const length = Math.min(blockSize, virtualSize - i * blockSize);
    const other = b ? await b.digest(i) : zeroDigest(algorithm, length);
    if (!(await a.digest(i)).equals(other)) bytes += length;
  }
  return bytes;
}

/** The summary of a repair that found manifest `m` intact. */
export function intactSummary(disk: string, m: DiskManifest): RepairSummary {
  return { disk, rebuilt: false, reason: null, points: m.points.map((p) => ({ id: p.id, kind: p.kind, parent: p.parent })), ignored: [], movedAside: null, finishedFold: null };
}

/** A repair's first look, under the lock: why the manifest must be rebuilt, or the intact manifest (parsed once). */
export async function whyRebuild(repo: RepoBackend, disk: string): Promise<string | DiskManifest> {
  try {
    return (await repo.readManifest(disk)) ?? 'manifest missing';
  } catch (err) {
    if (!(err instanceof RepositoryDamageError)) throw err;
    return err.message.replace(/;.*$/, '');
  }
}

/** Rebuilds `disk`'s manifest under its lock when it is missing or damaged; an intact one is left alone. */
export async function repairManifest(repo: FileRepository, disk: string, wait?: LockWait): Promise<RepairSummary> {
  const folder = repo.diskFolder(disk);
  const { store } = folder;
  const at = (name: string): Location => ({ store, path: store.paths.join(folder.path, name) });
  if (!(await store.stat(folder.path))?.isDirectory) throw new NotFoundError(`no folder of disk '${disk}' in this repository`, repo.display);
  const session = await lockDiskWaiting(repo, disk, 'repair', wait);
  try {
    const reason = await whyRebuild(repo, disk);
    if (typeof reason !== 'string') return intactSummary(disk, reason);
    await refuseNewer(at(MANIFEST_NAME));
    // A fold the lost manifest had pending is finished first, as the next run would have: its marker names it.
    const fold = await readFoldMarker(at(FOLD_MARKER_NAME));
    if (fold) await session.fold({ id: fold.drop, image: `${fold.drop}.vhdx` }, { id: fold.into, image: `${fold.into}.vhdx` });
    const finishedFold = fold && `${fold.drop} into ${fold.into}`;
    const written = finishedFold ? `only the interrupted fold of ${finishedFold} was finished` : 'nothing was written';
    const refuse = (name: string, why: string) =>
      new RepositoryDamageError(`cannot rebuild the manifest: ${why}; move that file out of the folder if it is not needed (${written})`, displayLocation(at(name)));
    const names = await store.list(folder.path);
    const merging = names.find((n) => n.endsWith(MERGE_STATE_SUFFIX) || n.endsWith(MERGE_MARKER_SUFFIX));
    if (merging) throw refuse(merging, 'a merge was in progress when the manifest was lost and no fold marker names it (a prune of an older vhdsync, or a merge run by hand in this folder), so which content those images hold is not provable');
    const ids = names.filter((n) => n.endsWith('.vhdx') && isPointId(n.slice(0, -5))).map((n) => n.slice(0, -5)).sort(byId);
    const ignored: string[] = [];
    const found: Found[] = [];
    let first: Metafile['summary'] | null = null;
    // One point (with its chain) open at a time: a folder of n points would otherwise hold n(n+1)/2 handles.
    for (const id of ids) {
      const name = `${id}.vhdx`;
      if (!names.includes(name + METAFILE_SUFFIX)) {
        if (names.includes(name + INCOMING_SUFFIX)) {
          ignored.push(name);
          continue;
        }
        throw refuse(name, `${name} has no metafile, so its content cannot be checked (restore it with vhdsync convert if needed)`);
      }
      let image: Disk;
      try {
        image = await openDisk(at(name), { format: 'vhdx' });
      } catch (err) {
        if (!(err instanceof VhdsyncError)) throw err;
        throw refuse(name, `${name} does not open (${err.describe()})`);
      }
      let list: Metafile | null = null;
      try {
        let parent: string | null = null;
        if (image.parent) {
          const parentName = store.paths.basename(image.parent.location.path);
          const pid = parentName.replace(/\.vhdx$/, '');
          const inFolder = store.paths.dirname(image.parent.location.path) === folder.path;
          if (!inFolder || !ids.includes(pid) || !names.includes(parentName + METAFILE_SUFFIX)) throw refuse(name, `its parent ${parentName} is not a restore point in this folder (a chain with a missing link)`);
          parent = pid;
        }
        list = await readMetafile(metafileLocationFor(at(name)), { virtualSize: image.virtualSize, logicalSectorSize: image.logicalSectorSize });
        await checkFresh(list, image);
        const s = list.summary;
        if (!NATIVE_ALGORITHMS.includes(s.algorithm as never) || (first && (s.algorithm !== first.algorithm || s.blockSize !== first.blockSize))) {
          throw refuse(name, `its metafile (${s.algorithm}, ${s.blockSize}-byte blocks) does not match the other points'`);
        }
        first ??= s;
        const contentId = (await image.identity()).contentId;
        // A merge gives the image it writes a new DataWriteGuid; two points with one content id are one image twice.
        const twin = found.find((f) => f.contentId === contentId);
        if (twin) throw refuse(name, `it holds the same content (DataWriteGuid ${contentId}) as ${twin.id}.vhdx`);
        found.push({ id, parent, virtualSize: image.virtualSize, logicalSectorSize: image.logicalSectorSize, contentId });
      } catch (err) {
        if (err instanceof RepositoryDamageError || !(err instanceof VhdsyncError)) throw err;
        throw refuse(name + METAFILE_SUFFIX, `it cannot vouch for ${name} (${err.describe()})`);
      } finally {
        await list?.close();
        await image.close();
      }
    }
    if (!found.length || !first) throw new RepositoryDamageError(`cannot rebuild the manifest: no restore point with its metafile in the folder (${written})`, displayLocation(folder));
    const ordered = backupOrder(found, (why) => new RepositoryDamageError(`cannot rebuild the manifest: ${why}; put back a copy of the manifest (${written})`, displayLocation(folder)));
    const points: RestorePoint[] = [];
    for (const [i, f] of ordered.entries()) {
      points.push({
        id: f.id,
        time: timeOfId(f.id),
        image: `${f.id}.vhdx`,
        // A reflinked clone is a standalone image like a full one: nothing in the file tells them apart.
        kind: f.parent ? 'diff' : 'full',
        parent: f.parent,
        virtualSize: f.virtualSize,
        changedBytes: await changedBytesOf(at, f, i > 0 ? ordered[i - 1] : null),
        source: REBUILT_SOURCE,
      });
    }
    const m: DiskManifest = { format: MANIFEST_FORMAT, version: MANIFEST_VERSION, disk, generation: 1, hash: first.algorithm as DiskManifest['hash'], blockSize: first.blockSize, points, pending: null };
    // The same checks every reader applies, before anything is written.
    parseManifest(serializeManifest(m));
    session.check();
    const movedAside = await moveAside(at(MANIFEST_NAME));
    // Also removes the fold marker: a manifest without a pending step is in place.
    await session.writeManifest(m);
    return { disk, rebuilt: true, reason, points: points.map((p) => ({ id: p.id, kind: p.kind, parent: p.parent })), ignored, movedAside, finishedFold };
  } finally {
    await session.release();
  }
}

/** Refuses to replace a manifest that a newer vhdsync wrote (its version is past ours): that one is not damaged. */
async function refuseNewer(loc: Location): Promise<void> {
  const bytes = await readSmallFile(loc, MANIFEST_LIMIT, () => new Error('too large'))
    .catch(() => null);
  let version: unknown;
  try {
    version = bytes ? (JSON.parse(Buffer.from(bytes).toString('utf8')) as { version?: unknown }).version : undefined;
  } catch {
    return;
  }
  if (typeof version === 'number' && version > MANIFEST_VERSION) {
    throw new RepositoryDamageError(`cannot rebuild the manifest: it is version ${version}, written by a newer vhdsync (this one reads version ${MANIFEST_VERSION}); use that vhdsync (nothing was written)`, displayLocation(loc));
  }
}

/** Renames a damaged manifest to `manifest.json.damaged-<UTC time>` so the rebuild never loses it; the new name, or null. */
async function moveAside(loc: Location): Promise<string | null> {
  if (!(await loc.store.stat(loc.path))) return null;
  const to = `${loc.path}.damaged-${new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z')}`;
  await loc.store.rename(loc.path, to);
  await loc.store.syncDir(loc.store.paths.dirname(loc.path));
  return loc.store.paths.basename(to);
}

/** `changedBytes` of `f` against the point before it, opening only their two lists. */
async function changedBytesOf(at: (name: string) => Location, f: Found, prev: Found | null): Promise<number> {
  const open = (p: Found) => readMetafile(metafileLocationFor(at(`${p.id}.vhdx`)), { virtualSize: p.virtualSize, logicalSectorSize: p.logicalSectorSize });
  const list = await open(f);
  try {
    if (!prev) return await changedBytes(list, null);
    const before = await open(prev);
    try {
      return await changedBytes(list, before);
    } finally {
      await before.close();
    }
  } finally {
    await list.close();
  }
}
