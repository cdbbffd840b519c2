/**
 * `verify --repair DISK` on an object repository: rebuilds a missing or damaged manifest from what the disk's
 * prefix proves on its own (docs/repository.md, "Repairing a manifest"). Older manifest generations are no help:
 * each write deletes the one it replaces. But every point is standalone, so a point is each `<id>.map` that parses
 * (its own checksum) and whose `<id>.list` vouches for it (the list records the map's identity); the order is the
 * ids', the kinds `full` then `clone`, changed bytes from consecutive lists. What it cannot prove is refused in one
 * line with nothing written; the damaged generation is kept under another name, never deleted.
 */
import { checkFresh, NATIVE_ALGORITHMS, type Metafile } from '../../meta/index.js';
import { NotFoundError, RepositoryDamageError, VhdsyncError } from '../../util/errors.js';
import { MANIFEST_FORMAT, MANIFEST_LIMIT, MANIFEST_VERSION, parseManifest, serializeManifest, type DiskManifest, type RestorePoint } from '../manifest.js';
import { checkDiskName, isPointId } from '../names.js';
import { byId, changedBytes, REBUILT_SOURCE, timeOfId, whyRebuild, type RepairSummary } from '../repair.js';
import { lockDiskWaiting, type LockWait } from '../wait.js';
import { getAtMost } from './bounded-read.js';
import { diskPrefix, manifestKey, manifestPrefix, pointMapName } from './keys.js';
import type { ObjectRepository } from './object-backend.js';

/** Rebuilds `disk`'s manifest under its lease when it is missing or damaged; an intact one is left alone. */
export async function repairObjectManifest(repo: ObjectRepository, disk: string, wait?: LockWait): Promise<RepairSummary> {
  checkDiskName(disk);
  const prefix = diskPrefix(disk);
  const session = await lockDiskWaiting(repo, disk, 'repair', wait);
  try {
    const reason = await whyRebuild(repo, disk);
    if (typeof reason !== 'string') return reason;
    const refuse = (key: string, why: string) => new RepositoryDamageError(`cannot rebuild the manifest: ${why} (nothing was written)`, repo.name(key));
    const newest = await repo.newestManifest(disk);
    const damaged = newest === null ? null : await getAtMost(repo.store, manifestKey(disk, newest), MANIFEST_LIMIT);
    // Kept aside means copied through memory: an object this large is no manifest, and the user decides its fate.
    if (damaged === 'too large') throw refuse(manifestKey(disk, newest!), `it has more than ${MANIFEST_LIMIT} bytes, so it is no manifest and is not copied aside; move it out of manifests/${disk}/ if it is not needed`);
    if (damaged) refuseNewer(damaged, repo.name(manifestKey(disk, newest!)));
    const ids: string[] = [];
    for await (const o of repo.store.list(prefix)) {
      const name = o.key.slice(prefix.length);
      if (name.endsWith('.map') && isPointId(name.slice(0, -4))) ids.push(name.slice(0, -4));
    }
    if (!ids.length) {
      if (newest === null) throw new NotFoundError(`no disk '${disk}' in this repository`, repo.display);
      throw refuse(prefix, 'no restore point map under the disk');
    }
    ids.sort(byId);
    const points: RestorePoint[] = [];
    let prev: Metafile | null = null;
    let first: Metafile['summary'] | null = null;
    try {
      for (const id of ids) {
        const key = prefix + pointMapName(id);
        // The map is checked by its own checksum; the list must be the one written with it (its identity).
        const probe: RestorePoint = { id, time: timeOfId(id), image: pointMapName(id), kind: 'clone', parent: null, virtualSize: 0, changedBytes: 0, source: REBUILT_SOURCE };
        let list: Metafile;
        try {
          // Its virtual size (header offset 24) is all the repair needs of it before openPoint reads it, bounded by that.
          const bytes = await repo.store.get(key, { start: 0, length: 32 });
          if (!bytes) throw refuse(key, `the map of ${id} vanished while the repair read the disk`);
          const virtualSize = bytes.length >= 32 ? Number(bytes.readBigUInt64LE(24)) : 0;
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
          if (!(err instanceof VhdsyncError) || err.message.startsWith('cannot rebuild')) throw err;
          throw refuse(key, `restore point ${id} cannot be proven (${err.describe()}); delete its map and list if it is not needed`);
        }
        const s = list.summary;
        if (!NATIVE_ALGORITHMS.includes(s.algorithm as never) || (first && (s.algorithm !== first.algorithm || s.blockSize !== first.blockSize))) {
          await list.close();
          throw refuse(key, `the list of ${id} (${s.algorithm}, ${s.blockSize}-byte blocks) does not match the other points'`);
        }
        first ??= s;
        points.push({ ...probe, kind: points.length ? 'clone' : 'full', changedBytes: await changedBytes(list, prev) });
        await prev?.close();
        prev = list;
      }
    } finally {
      await prev?.close();
    }
    const m: DiskManifest = { format: MANIFEST_FORMAT, version: MANIFEST_VERSION, disk, generation: (newest ?? 0) + 1, hash: first!.algorithm as DiskManifest['hash'], blockSize: first!.blockSize, points, pending: null };
    parseManifest(serializeManifest(m));
    // The damaged generation is kept under a name no reader or sweep takes for a generation.
    let movedAside: string | null = null;
    if (damaged) {
      movedAside = `${manifestPrefix(disk)}${String(newest).padStart(12, '0')}.json.damaged-${new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z')}`;
      session.check();
      await repo.store.put(movedAside, damaged, { ifNoneMatch: '*' });
    }
    await session.writeManifest(m);
    return { disk, rebuilt: true, reason, points: points.map((p) => ({ id: p.id, kind: p.kind, parent: p.parent })), ignored: [], movedAside, finishedFold: null };
  } finally {
    await session.release();
  }
}

/** Refuses to replace a manifest that a newer vhdsync wrote (its version is past ours): that one is not damaged. */
function refuseNewer(bytes: Buffer, subject: string): void {
  if (bytes.length > MANIFEST_LIMIT) return;
  let version: unknown;
  try {
    version = (JSON.parse(bytes.toString('utf8')) as { version?: unknown }).version;
  } catch {
    return;
  }
  if (typeof version === 'number' && version > MANIFEST_VERSION) {
    throw new RepositoryDamageError(`cannot rebuild the manifest: it is version ${version}, written by a newer vhdsync (this one reads version ${MANIFEST_VERSION}); use that vhdsync (nothing was written)`, subject);
  }
}
