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
import { MERGE_STATE_SUFFIX } from '../sync/merge-state.js';
import { DigestCursor } from '../sync/plan.js';
import { NotFoundError, RepositoryDamageError, VhdsyncError } from '../util/errors.js';
import { FileRepository, INCOMING_SUFFIX } from './file-backend.js';
import { MANIFEST_FORMAT, MANIFEST_VERSION, parseManifest, serializeManifest, type DiskManifest, type RestorePoint } from './manifest.js';
import { isPointId } from './names.js';
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
}

/** What the source of a rebuilt point is recorded as: the manifest that knew it is gone. */
export const REBUILT_SOURCE = 'unknown (manifest rebuilt by vhdsync verify --repair)';

/** A point found in the folder, with its image and list open. */
interface Found {
  id: string;
  image: Disk;
  list: Metafile;
  parent: string | null;
}

/** Orders ids by time, then by their `-N` suffix as a number. */
function byId(a: string, b: string): number {
  const [ta, na = '1'] = a.split('-');
  const [tb, nb = '1'] = b.split('-');
  return ta < tb ? -1 : ta > tb ? 1 : Number(na) - Number(nb);
}

/** The time a point id stands for (its backup's start, to the second). */
function timeOfId(id: string): string {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z/.exec(id)!;
  return `${m[1]}-${m[2]}-${m[3]}T${m[4]}:${m[5]}:${m[6]}.000Z`;
}

/** Bytes of blocks whose digest in `list` differs from `prev` (or, without `prev`, from zeros). */
async function changedBytes(list: Metafile, prev: Metafile | null): Promise<number> {
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

/** Rebuilds `disk`'s manifest under its lock when it is missing or damaged; an intact one is left alone. */
export async function repairManifest(repo: FileRepository, disk: string, wait?: LockWait): Promise<RepairSummary> {
  const folder = repo.diskFolder(disk);
  const { store } = folder;
  const at = (name: string): Location => ({ store, path: store.paths.join(folder.path, name) });
  if (!(await store.stat(folder.path))?.isDirectory) throw new NotFoundError(`no folder of disk '${disk}' in this repository`, repo.display);
  const session = await lockDiskWaiting(repo, disk, 'repair', wait);
  const found: Found[] = [];
  try {
    let reason: string;
    try {
      const m = await repo.readManifest(disk);
      if (m) return { disk, rebuilt: false, reason: null, points: m.points.map((p) => ({ id: p.id, kind: p.kind, parent: p.parent })), ignored: [] };
      reason = 'manifest missing';
    } catch (err) {
      if (!(err instanceof RepositoryDamageError)) throw err;
      reason = err.message.replace(/;.*$/, '');
    }
    const refuse = (name: string, why: string) =>
      new RepositoryDamageError(`cannot rebuild the manifest: ${why}; move that file out of the folder if it is not needed (nothing was written)`, displayLocation(at(name)));
    const names = await store.list(folder.path);
    const merging = names.find((n) => n.endsWith(MERGE_STATE_SUFFIX));
    if (merging) throw refuse(merging, 'a prune was folding one point into the next when the manifest was lost, so which content those images hold is not provable');
    const ids = names.filter((n) => n.endsWith('.vhdx') && isPointId(n.slice(0, -5))).map((n) => n.slice(0, -5)).sort(byId);
    const ignored: string[] = [];
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
          if (!inFolder || !found.some((f) => f.id === pid)) throw refuse(name, `its parent ${parentName} is not an earlier restore point in this folder (a chain with a missing link)`);
          parent = pid;
        }
        list = await readMetafile(metafileLocationFor(at(name)), { virtualSize: image.virtualSize, logicalSectorSize: image.logicalSectorSize });
        await checkFresh(list, image);
        const s = list.summary;
        const first = found[0]?.list.summary;
        if (!NATIVE_ALGORITHMS.includes(s.algorithm as never) || (first && (s.algorithm !== first.algorithm || s.blockSize !== first.blockSize))) {
          throw refuse(name, `its metafile (${s.algorithm}, ${s.blockSize}-byte blocks) does not match the other points'`);
        }
        found.push({ id, image, list, parent });
      } catch (err) {
        await list?.close();
        await image.close();
        if (err instanceof RepositoryDamageError || !(err instanceof VhdsyncError)) throw err;
        throw refuse(name + METAFILE_SUFFIX, `it cannot vouch for ${name} (${err.describe()})`);
      }
    }
    if (!found.length) throw new RepositoryDamageError(`cannot rebuild the manifest: no restore point with its metafile in the folder`, displayLocation(folder));
    const points: RestorePoint[] = [];
    for (const [i, f] of found.entries()) {
      points.push({
        id: f.id,
        time: timeOfId(f.id),
        image: `${f.id}.vhdx`,
        // A reflinked clone is a standalone image like a full one: nothing in the file tells them apart.
        kind: f.parent ? 'diff' : 'full',
        parent: f.parent,
        virtualSize: f.image.virtualSize,
        changedBytes: await changedBytes(f.list, i > 0 ? found[i - 1].list : null),
        source: REBUILT_SOURCE,
      });
    }
    const s = found[0].list.summary;
    const m: DiskManifest = { format: MANIFEST_FORMAT, version: MANIFEST_VERSION, disk, generation: 1, hash: s.algorithm as DiskManifest['hash'], blockSize: s.blockSize, points, pending: null };
    // The same checks every reader applies, before anything is written.
    parseManifest(serializeManifest(m));
    session.check();
    await session.writeManifest(m);
    return { disk, rebuilt: true, reason, points: points.map((p) => ({ id: p.id, kind: p.kind, parent: p.parent })), ignored };
  } finally {
    for (const f of found) {
      await f.list.close();
      await f.image.close();
    }
    await session.release();
  }
}
