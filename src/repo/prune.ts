/**
 * Dropping restore points. A point no other point reads through is removed from the manifest, then its files.
 * A point with a child (the next point is a differencing image of it) is folded: the manifest records the step,
 * the child is merged into it with the crash-safe merge and the result takes the child's name, then the manifest
 * forgets the dropped point. Every step is idempotent, so any run holding the disk's lock finishes an interrupted one.
 */
import type { DiskSession, RepoBackend } from './backend.js';
import { highWater, type DiskManifest } from './manifest.js';
import { selectKept, type RetentionPolicy } from './retention.js';
import { NotFoundError } from '../util/errors.js';
import { lockDiskWaiting, type LockWait } from './wait.js';

/** What a prune of one disk did. */
export interface PruneSummary {
  disk: string;
  dropped: string[];
  kept: string[];
  /** Drops that merged a child into the dropped point (the others only deleted files). */
  folded: number;
  /** An interrupted fold of an earlier run was finished first. */
  finishedInterrupted: boolean;
  /** Leftover files of killed runs and dropped points that were removed. */
  removed: string[];
}

/** `m` changed, as its next generation: the high-water mark of its ids survives the points a change drops. */
function next(m: DiskManifest, change: Partial<DiskManifest>): DiskManifest {
  const highest = highWater(m);
  return { ...m, ...change, generation: m.generation + 1, ...(highest === null ? {} : { highest }) };
}

/** Finishes the fold the manifest records as pending, then records it done. */
async function completeFold(session: DiskSession, m: DiskManifest): Promise<DiskManifest> {
  const { drop, into } = m.pending!;
  const x = m.points.find((p) => p.id === drop)!;
  const s = m.points.find((p) => p.id === into)!;
  await session.fold(x, s);
  // The child's content now lives in the dropped point's image, renamed to the child's: it has the dropped one's parent.
  const points = m.points.filter((p) => p.id !== drop).map((p) => (p.id === into ? { ...p, kind: x.kind, parent: x.parent } : p));
  const done = next(m, { points, pending: null });
  await session.writeManifest(done);
  return done;
}

/**
 * Brings a disk to a settled state under its lock: an interrupted fold finished, points a killed run made but did not
 * record recorded, leftovers of killed runs removed. Every run that changes a disk calls this first.
 */
export async function settle(session: DiskSession, m: DiskManifest): Promise<{ manifest: DiskManifest; finished: boolean; removed: string[] }> {
  let finished = false;
  if (m.pending) {
    m = await completeFold(session, m);
    finished = true;
  }
  if (session.recordLater) m = await session.recordLater(m);
  return { manifest: m, finished, removed: await session.sweep(m) };
}

/** Drops one point: folds it into its child if it has one, else forgets it (its files go in the next sweep). */
export async function dropPoint(session: DiskSession, m: DiskManifest, id: string): Promise<{ manifest: DiskManifest; folded: boolean }> {
  const child = m.points.find((p) => p.parent === id);
  if (child) {
    const marked = next(m, { pending: { op: 'fold', drop: id, into: child.id } });
    await session.writeManifest(marked);
    return { manifest: await completeFold(session, marked), folded: true };
  }
  const forgotten = next(m, { points: m.points.filter((p) => p.id !== id) });
  await session.writeManifest(forgotten);
  return { manifest: forgotten, folded: false };
}

/** Applies a policy to a settled manifest under the disk's lock, oldest point first. */
export async function applyPolicy(session: DiskSession, m: DiskManifest, policy: RetentionPolicy): Promise<{ manifest: DiskManifest; dropped: string[]; folded: number; removed: string[] }> {
  const kept = selectKept(m.points, policy);
  const dropped: string[] = [];
  let folded = 0;
  for (const p of m.points) {
    if (kept.has(p.id)) continue;
    const r = await dropPoint(session, m, p.id);
    m = r.manifest;
    folded += Number(r.folded);
    dropped.push(p.id);
  }
  const removed = dropped.length ? await session.sweep(m) : [];
  return { manifest: m, dropped, folded, removed };
}

/** `prune` of one disk: finishes interrupted work, then drops what the policy does not keep. */
export async function pruneDisk(repo: RepoBackend, disk: string, policy: RetentionPolicy, wait?: LockWait): Promise<PruneSummary> {
  if (!(await repo.readManifest(disk))) throw new NotFoundError(`no disk '${disk}' in this repository`, repo.display);
  const session = await lockDiskWaiting(repo, disk, 'prune', wait);
  try {
    const m0 = await repo.readManifest(disk);
    if (!m0) throw new NotFoundError(`no disk '${disk}' in this repository`, repo.display);
    const s = await settle(session, m0);
    const r = await applyPolicy(session, s.manifest, policy);
    return { disk, dropped: r.dropped, kept: r.manifest.points.map((p) => p.id), folded: r.folded, finishedInterrupted: s.finished, removed: [...s.removed, ...r.removed] };
  } finally {
    await session.release();
  }
}
