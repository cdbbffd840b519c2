/**
 * Reading a restore point against its list: every block's digest compared with the metafile the backup wrote, so
 * restore never writes, and verify never passes, content that is not what the point claims.
 */
import type { Disk } from '../formats/disk.js';
import { checkFresh, hashDisk, type HashedBlock, type Metafile } from '../meta/index.js';
import { DigestCursor } from '../sync/plan.js';
import { NotFoundError, RepositoryDamageError, VhdsyncError } from '../util/errors.js';
import type { RepoBackend } from './backend.js';
import { pointsAffected, type DiskManifest, type RestorePoint } from './manifest.js';

/** The one line naming a damaged point and what to do about it. */
export function damaged(repo: RepoBackend, disk: string, point: RestorePoint, why: string): RepositoryDamageError {
  return new RepositoryDamageError(
    `restore point ${point.id} of disk '${disk}' is damaged (${why}); the points that do not read through it stay restorable: run vhdsync verify --repo ${repo.display} ${disk} to see which, restore one of them, and back up again with --full`,
    repo.pointName(disk, point),
  );
}

/** A disk's manifest, refusing a missing disk and points an interrupted prune has made unreadable. */
export async function manifestFor(repo: RepoBackend, disk: string): Promise<DiskManifest> {
  const m = await repo.readManifest(disk);
  if (!m) throw new NotFoundError(`no disk '${disk}' in this repository (see vhdsync list --repo ${repo.display})`, repo.display);
  return m;
}

/** Refuses a point an interrupted prune left unreadable, naming the command that finishes the prune. */
export function assertSettled(repo: RepoBackend, m: DiskManifest, point: RestorePoint): void {
  if (pointsAffected(m).has(point.id)) {
    throw new RepositoryDamageError(`restore point ${point.id} is being pruned (an interrupted prune left it half-folded); run vhdsync prune --repo ${repo.display} ${m.disk} to finish it, then retry`, repo.pointName(m.disk, point));
  }
}

/** An opened point with its list (null without verification), checked to belong together. */
export interface OpenedPoint {
  image: Disk;
  list: Metafile | null;
  close(): Promise<void>;
}

/** Opens a point and (with `verify`) its list; a problem becomes a damage error naming the point. */
export async function openChecked(repo: RepoBackend, disk: string, point: RestorePoint, verify: boolean): Promise<OpenedPoint> {
  let image: Disk;
  try {
    image = await repo.openPoint(disk, point);
  } catch (err) {
    if (err instanceof VhdsyncError) throw damaged(repo, disk, point, `its image does not open: ${err.describe()}`);
    throw err;
  }
  let list: Metafile | null = null;
  try {
    if (verify) {
      list = await repo.openList(disk, point, { virtualSize: image.virtualSize, logicalSectorSize: image.logicalSectorSize });
      await checkFresh(list, image);
    }
  } catch (err) {
    await list?.close();
    await image.close();
    if (!(err instanceof VhdsyncError)) throw err;
    const missing = err instanceof RepositoryDamageError;
    throw damaged(repo, disk, point, `${missing ? 'its metafile is missing' : `its metafile: ${err.describe()}`}; restore --no-verify writes the image's content unchecked`);
  }
  return {
    image,
    list,
    close: async () => {
      await list?.close();
      await image.close();
    },
  };
}

/**
 * Yields every block of the point (data blocks with their bytes when `withData`), throwing a damage error at the
 * first block whose digest is not the list's. Without a list, blocks are hashed at 2 MiB and not compared.
 */
export async function* checkedBlocks(repo: RepoBackend, disk: string, point: RestorePoint, opened: OpenedPoint, withData: boolean): AsyncGenerator<HashedBlock> {
  const s = opened.list?.summary;
  const cursor = opened.list ? new DigestCursor(opened.list) : null;
  for await (const b of hashDisk(opened.image, { algorithm: s?.algorithm ?? 'xxh128', blockSize: s?.blockSize ?? 2 << 20, withData })) {
    if (cursor && !b.digest.equals(await cursor.digest(b.index))) {
      throw damaged(repo, disk, point, `block ${b.index} at offset ${b.offset} differs from its metafile`);
    }
    yield b;
  }
}
