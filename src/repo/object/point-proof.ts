/**
 * What makes a point of an object repository provable without its manifest (docs/repository.md, "Repairing a
 * manifest"): its `<id>.map` parses (its own checksum) and its `<id>.list` vouches for it (the list records the map's
 * identity), and, for a point recorded later, every block its map references is under the disk (a holder that
 * slept past its lease can write its map after a prune swept its blocks). `verify --repair` rebuilds a manifest from such points, and every run that settles a disk records
 * those a lost newest manifest generation or a killed backup left unlisted (pastManifest).
 */
import { checkFresh, NATIVE_ALGORITHMS, type Metafile } from '../../meta/index.js';
import { CorruptImageError, MetafileError, RepositoryDamageError, UnprovenPointError, VhdsyncError } from '../../util/errors.js';
import { highWater, type DiskManifest, type RestorePoint } from '../manifest.js';
import { byId } from '../names.js';
import { changedBytes, timeOfId } from '../repair.js';
import { blockName, diskPrefix, pointMapName } from './keys.js';
import type { ObjectRepository } from './object-backend.js';

/**
 * True when point `id` (whose map is under the disk) is not in `m` and later than every id `m` lists or ever listed
 * (its high-water mark, highWater: never the last point in backup order, since ids come from host clocks that can
 * step back). Such a map is a point the manifest should list: its newest generation was lost (a kill between
 * creating it and deleting the one before, then the object lost), or a backup was killed between its map and its
 * manifest. A sweep would delete it as a leftover; it is recorded instead. A point a prune dropped is at or below the
 * mark, so it is swept, never recorded again; so is a killed backup's point whose clock was behind (a rollback).
 */
export function pastManifest(m: DiskManifest, id: string): boolean {
  const top = highWater(m);
  return !m.points.some((p) => p.id === id) && (top === null || byId(id, top) > 0);
}

/** Points proven from their maps and lists, and the digest and block size they share. */
export interface Proven {
  points: RestorePoint[];
  hash: DiskManifest['hash'];
  blockSize: number;
}

/**
 * Proves the points `ids` (in backup order) and returns them as manifest entries after `base`'s points: `source` as
 * given, `time` the id's second, `changedBytes` against the point before. Their lists must share `base`'s digest and
 * block size when it has points, else one another's. Throws an UnprovenPointError (`cannot rebuild ...`) when a
 * point cannot be proven (its map or list is damaged or missing, or, given `blocks` (the hashes of the disk's block
 * objects, one listing), a block its map references is not among them); a failing store's error (IoError,
 * CredentialsError, ...) is thrown unchanged.
 */
export async function provePoints(repo: ObjectRepository, disk: string, ids: string[], base: DiskManifest | null, source: string, blocks?: ReadonlySet<string>): Promise<Proven> {
  const prefix = diskPrefix(disk);
  const refuse = (key: string, why: string) => new UnprovenPointError(why, repo.name(key));
  const before = base?.points ?? [];
  const points: RestorePoint[] = [];
  let settings: { algorithm: string; blockSize: number } | null = before.length ? { algorithm: base!.hash, blockSize: base!.blockSize } : null;
  let prev: Metafile | null = before.length ? await openListOf(repo, disk, before[before.length - 1]) : null;
  try {
    for (const id of ids) {
      const key = prefix + pointMapName(id);
      const probe: RestorePoint = { id, time: timeOfId(id), image: pointMapName(id), kind: 'clone', parent: null, virtualSize: 0, changedBytes: 0, source };
      let list: Metafile;
      try {
        // Its virtual size (header offset 24) is all that is needed of it before openPoint reads it, bounded by that.
        const bytes = await repo.store.get(key, { start: 0, length: 32 });
        if (!bytes) throw refuse(key, `the map of ${id} vanished while it was read`);
        const virtualSize = bytes.length >= 32 ? Number(bytes.readBigUInt64LE(24)) : 0;
        if (blocks) await missingBlock(repo, disk, { ...probe, virtualSize }, blocks);
        const image = await repo.openPoint(disk, { ...probe, virtualSize });
        try {
          list = await repo.openList(disk, probe, { virtualSize: image.virtualSize, logicalSectorSize: image.logicalSectorSize });
          try {
            await checkFresh(list, image);
          } catch (err) {
            await list.close();
            throw err;
          }
        } finally {
          await image.close();
        }
        probe.virtualSize = virtualSize;
      } catch (err) {
        // Only damage makes a point unprovable: a store that cannot be reached, keeps failing (5xx) or refuses the
        // credentials says nothing of the point, and advice to delete it would cost a good point. Those fail as they came.
        if (!isDamage(err) || err instanceof UnprovenPointError) throw err;
        throw refuse(key, `restore point ${id} cannot be proven (${err.describe()}); delete its map and list if it is not needed`);
      }
      const s = list.summary;
      if (!NATIVE_ALGORITHMS.includes(s.algorithm as never) || (settings && (s.algorithm !== settings.algorithm || s.blockSize !== settings.blockSize))) {
        await list.close();
        throw refuse(key, `the list of ${id} (${s.algorithm}, ${s.blockSize}-byte blocks) does not match the other points'`);
      }
      settings ??= { algorithm: s.algorithm, blockSize: s.blockSize };
      points.push({ ...probe, kind: before.length + points.length ? 'clone' : 'full', changedBytes: await changedBytes(list, prev) });
      await prev?.close();
      prev = list;
    }
  } finally {
    await prev?.close();
  }
  if (!settings) throw refuse(prefix, 'no restore point map under the disk');
  return { points, hash: settings.algorithm as DiskManifest['hash'], blockSize: settings.blockSize };
}

/**
 * Throws a RepositoryDamageError naming the first block `point`'s map references (its non-zero entries, the block
 * objects a restore reads) that is not in `blocks`: the point would restore nothing but an error.
 */
async function missingBlock(repo: ObjectRepository, disk: string, point: RestorePoint, blocks: ReadonlySet<string>): Promise<void> {
  for (const hex of (await repo.readMap(disk, point)).hashes()) {
    if (!blocks.has(hex)) throw new RepositoryDamageError(`block object ${blockName(hex)} its map references is missing`, repo.name(diskPrefix(disk) + blockName(hex)));
  }
}

/**
 * True for what says a map or list is damaged or missing (it does not parse, does not match, is not there: a missing
 * object is a RepositoryDamageError here; the store's NotFoundError means no bucket, which says nothing of a point).
 */
function isDamage(err: unknown): err is VhdsyncError {
  return err instanceof RepositoryDamageError || err instanceof MetafileError || err instanceof CorruptImageError;
}

/** The list of a point the manifest lists (the previous one's, for changed bytes), or null when it does not open. */
async function openListOf(repo: ObjectRepository, disk: string, point: RestorePoint): Promise<Metafile | null> {
  try {
    const image = await repo.openPoint(disk, point);
    try {
      return await repo.openList(disk, point, { virtualSize: image.virtualSize, logicalSectorSize: image.logicalSectorSize });
    } finally {
      await image.close();
    }
  } catch (err) {
    if (!(err instanceof VhdsyncError)) throw err;
    return null;
  }
}
