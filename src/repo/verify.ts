/** `verify`: re-hashes every restore point against its metafile, as `validate` does for one image. */
import { VhdsyncError } from '../util/errors.js';
import type { RepoBackend } from './backend.js';
import { pointsAffected } from './manifest.js';
import { checkedBlocks, openChecked } from './point-check.js';
import { lockDiskWaiting, type LockWait } from './wait.js';

/** One point's result. */
export interface PointReport {
  id: string;
  time: string;
  ok: boolean;
  /** The damage and the fix, one line, when not ok. */
  problem: string | null;
}

/** One disk's result. */
export interface DiskReport {
  disk: string;
  ok: boolean;
  /** A problem of the disk as a whole (its manifest, an interrupted prune). */
  problem: string | null;
  points: PointReport[];
}

/** Verifies one disk under its lock (so no prune or backup changes it meanwhile). */
export async function verifyDisk(repo: RepoBackend, disk: string, onProgress?: (bytes: number) => void, wait?: LockWait): Promise<DiskReport> {
  const report: DiskReport = { disk, ok: true, problem: null, points: [] };
  let m;
  try {
    m = await repo.readManifest(disk);
  } catch (err) {
    if (!(err instanceof VhdsyncError)) throw err;
    return { ...report, ok: false, problem: err.describe() };
  }
  if (!m) return { ...report, ok: false, problem: `no disk '${disk}' in this repository` };
  const session = await lockDiskWaiting(repo, disk, 'verify', wait);
  try {
    // Re-read under the lock: a prune may have finished while we waited.
    m = (await repo.readManifest(disk))!;
    const affected = pointsAffected(m);
    if (m.pending) {
      report.ok = false;
      report.problem = `an interrupted prune is pending (folding ${m.pending.drop} into ${m.pending.into}): run vhdsync prune --repo ${repo.display} ${disk} to finish it`;
    }
    for (const point of m.points) {
      if (affected.has(point.id)) {
        report.points.push({ id: point.id, time: point.time, ok: false, problem: 'not checked: an interrupted prune is folding it' });
        continue;
      }
      try {
        const opened = await openChecked(repo, disk, point, true);
        try {
          for await (const b of checkedBlocks(repo, disk, point, opened, false)) onProgress?.(b.length);
        } finally {
          await opened.close();
        }
        report.points.push({ id: point.id, time: point.time, ok: true, problem: null });
      } catch (err) {
        if (!(err instanceof VhdsyncError)) throw err;
        report.ok = false;
        report.points.push({ id: point.id, time: point.time, ok: false, problem: err.describe() });
      }
    }
  } finally {
    await session.release();
  }
  return report;
}
