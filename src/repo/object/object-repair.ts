/**
 * `verify --repair DISK` on an object repository: rebuilds a missing or damaged manifest from what the disk's
 * prefix proves on its own (docs/repository.md, "Repairing a manifest"). Older manifest generations are no help:
 * each write deletes the one it replaces. But every point is standalone, so a point is each `<id>.map` that parses
 * (its own checksum) and whose `<id>.list` vouches for it (the list records the map's identity); the order is the
 * ids', the kinds `full` then `clone`, changed bytes from consecutive lists. What it cannot prove is refused in one
 * line with nothing written; the damaged generation is kept under another name, never deleted. An intact manifest
 * that misses points later than every id it lists or listed (its newest generation lost) gets them added
 * (ObjectDiskSession.recordLater).
 */
import { NotFoundError, RepositoryDamageError, UnprovenPointError } from '../../util/errors.js';
import { MANIFEST_FORMAT, MANIFEST_LIMIT, MANIFEST_VERSION, parseManifest, serializeManifest, type DiskManifest } from '../manifest.js';
import { byId, checkDiskName } from '../names.js';
import { intactSummary, REBUILT_SOURCE, whyRebuild, type RepairSummary } from '../repair.js';
import { lockDiskWaiting, type LockWait } from '../wait.js';
import { getAtMost } from './bounded-read.js';
import { diskPrefix, manifestKey, manifestPrefix, parseMapName } from './keys.js';
import type { ObjectDiskSession } from './object-session.js';
import { provePoints } from './point-proof.js';
import type { ObjectRepository } from './object-backend.js';

/**
 * Rebuilds `disk`'s manifest under its lease when it is missing or damaged, and adds to an intact one the points
 * later than every id it lists or listed (pastManifest: its newest generation lost); an intact, complete one is left
 * alone.
 */
export async function repairObjectManifest(repo: ObjectRepository, disk: string, wait?: LockWait): Promise<RepairSummary> {
  checkDiskName(disk);
  const prefix = diskPrefix(disk);
  const session = await lockDiskWaiting(repo, disk, 'repair', wait);
  try {
    const looked = await whyRebuild(repo, disk);
    if (typeof looked !== 'string') {
      const now = await (session as ObjectDiskSession).recordLater(looked, true);
      if (now === looked) return intactSummary(disk, looked);
      const added = now.points.slice(looked.points.length).map((p) => p.id);
      const reason = `it did not list restore point${added.length > 1 ? 's' : ''} ${added.join(', ')}, later than every point it lists or listed: a lost newest generation, or a backup killed before recording it`;
      return { ...intactSummary(disk, now), rebuilt: true, reason };
    }
    const refuse = (key: string, why: string) => new UnprovenPointError(why, repo.name(key));
    const newest = await repo.newestManifest(disk);
    const damaged = newest === null ? null : await getAtMost(repo.store, manifestKey(disk, newest), MANIFEST_LIMIT);
    // Kept aside means copied through memory: an object this large is no manifest, and the user decides its fate.
    if (damaged === 'too large') throw refuse(manifestKey(disk, newest!), `it has more than ${MANIFEST_LIMIT} bytes, so it is no manifest and is not copied aside; move it out of manifests/${disk}/ if it is not needed`);
    if (damaged) refuseNewer(damaged, repo.name(manifestKey(disk, newest!)));
    const ids: string[] = [];
    for await (const o of repo.store.list(prefix)) {
      const id = parseMapName(o.key.slice(prefix.length));
      if (id !== null) ids.push(id);
    }
    if (!ids.length) {
      if (newest === null) throw new NotFoundError(`no disk '${disk}' in this repository`, repo.display);
      throw refuse(prefix, 'no restore point map under the disk');
    }
    ids.sort(byId);
    const proven = await provePoints(repo, disk, ids, null, REBUILT_SOURCE);
    const m: DiskManifest = { format: MANIFEST_FORMAT, version: MANIFEST_VERSION, disk, generation: (newest ?? 0) + 1, hash: proven.hash, blockSize: proven.blockSize, points: proven.points, pending: null };
    parseManifest(serializeManifest(m));
    // The damaged generation is kept under a name no reader or sweep takes for a generation.
    let movedAside: string | null = null;
    if (damaged) {
      movedAside = `${manifestPrefix(disk)}${String(newest).padStart(12, '0')}.json.damaged-${new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z')}`;
      session.check();
      await repo.store.put(movedAside, damaged, { ifNoneMatch: '*' });
    }
    await session.writeManifest(m);
    return { disk, rebuilt: true, reason: looked, points: m.points.map((p) => ({ id: p.id, kind: p.kind, parent: p.parent })), ignored: [], movedAside, finishedFold: null };
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
