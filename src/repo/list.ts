/** `list`: a repository's disks and their restore points, oldest first, from the manifests (no lock, nothing read but them). */
import { VhdsyncError } from '../util/errors.js';
import type { RepoBackend } from './backend.js';
import { pointsAffected, type PendingFold, type PointKind } from './manifest.js';

/** A point as `list` shows it. */
export interface ListedPoint {
  id: string;
  time: string;
  kind: PointKind;
  parent: string | null;
  image: string;
  virtualSize: number;
  changedBytes: number;
  /** Size of its image file, or null when the file is missing. */
  fileSize: number | null;
  /** `ok`; `pruning` while an interrupted prune holds it; `missing` when its image is gone. */
  state: 'ok' | 'pruning' | 'missing';
}

/** A disk as `list` shows it. */
export interface ListedDisk {
  name: string;
  points: ListedPoint[];
  pending: PendingFold | null;
  /** Why the manifest could not be read. */
  error: string | null;
}

/** Lists every disk (or one) of a repository. */
export async function listRepository(repo: RepoBackend, only?: string): Promise<{ repository: string; disks: ListedDisk[] }> {
  const names = only ? [only] : await repo.listDisks();
  const disks: ListedDisk[] = [];
  for (const name of names) {
    try {
      const m = await repo.readManifest(name);
      if (!m) {
        disks.push({ name, points: [], pending: null, error: 'no such disk' });
        continue;
      }
      const affected = pointsAffected(m);
      const points: ListedPoint[] = [];
      for (const p of m.points) {
        const fileSize = await repo.pointSize(name, p);
        const state = affected.has(p.id) ? 'pruning' : fileSize === null ? 'missing' : 'ok';
        points.push({ id: p.id, time: p.time, kind: p.kind, parent: p.parent, image: p.image, virtualSize: p.virtualSize, changedBytes: p.changedBytes, fileSize, state });
      }
      disks.push({ name, points, pending: m.pending, error: null });
    } catch (err) {
      if (!(err instanceof VhdsyncError)) throw err;
      disks.push({ name, points: [], pending: null, error: err.describe() });
    }
  }
  return { repository: repo.display, disks };
}
