/**
 * `backup`: adds a restore point per source. One pass over the source hashes every block (as `copy --createmeta`
 * does) and compares it with the newest point's list; the blocks that differ go into the new point, which is a
 * differencing image of the newest point, a reflinked clone of it, or (first point) a full sparse image.
 */
import type { OpenOptions } from '../formats/disk.js';
import { checkFresh, DEFAULT_BLOCK_SIZE, type Metafile } from '../meta/index.js';
import { DigestCursor } from '../sync/plan.js';
import { describeError, ManifestWrittenError, RecordedError, RepositoryDamageError, UnsupportedError, UsageError, VhdsyncError } from '../util/errors.js';
import type { DiskSession, ReflinkMode, RepoBackend } from './backend.js';
import { emptyManifest, type DiskManifest, type PointKind, type RestorePoint } from './manifest.js';
import { newPointId } from './names.js';
import { applyPolicy, settle } from './prune.js';
import { checkPolicy, type RetentionPolicy } from './retention.js';
import { lockDiskWaiting, type LockWait } from './wait.js';
import { isStream, openSource, sourceName, type BackupSource, type OpenedSource } from './source.js';

/**
 * The largest disk whose incremental starts hashing before the sweep (repo/early-pass.ts): its list then waits in
 * memory. The list's size follows the disk's size (its sub-block digests), not the block count: 8-16 MiB at most.
 */
const EARLY_MAX_SIZE = 32 * 2 ** 30;

/** Options for backupDisk. */
export interface BackupOptions {
  reflink?: ReflinkMode;
  /** Store a full point even when the newest point could be built on. */
  full?: boolean;
  /** After the backup, drop points beyond this policy. */
  retention?: RetentionPolicy;
  /** For a disk's first point only (later points keep the disk's settings): metafile digest and block size. */
  hash?: 'xxh128' | 'sha256';
  blockSize?: number;
  open?: OpenOptions;
  /** Wait for the disk's lock when another run holds it (default: fail at once). */
  wait?: LockWait;
  /** The point's time (tests); default now. */
  now?: () => Date;
  /** The caller (backupMany) has made sure the repository exists: not asked again. */
  repositoryChecked?: boolean;
  onTotal?: (bytes: number) => void;
  onProgress?: (bytes: number) => void;
}

/** What one backup did. */
export interface BackupSummary {
  disk: string;
  source: string;
  point: string;
  time: string;
  kind: PointKind;
  parent: string | null;
  virtualSize: number;
  /** Virtual bytes that differ from the previous point (first point: the bytes that are not zero). */
  changedBytes: number;
  /** Of those, written as data and as zeros. */
  dataBytes: number;
  zeroBytes: number;
  /** Bytes read from the source (zero and unallocated extents are not read). */
  bytesRead: number;
  /** Size of the point's image file. */
  imageBytes: number;
  /** Why the point is full although an earlier point exists, when it is. */
  note: string | null;
  /** Points dropped by --keep. */
  dropped: string[];
  /** An interrupted prune step of an earlier run was finished first. */
  finishedInterrupted: boolean;
  /** Leftovers of killed runs that were removed. */
  removed: string[];
  seconds: number;
}

/** Checks what a VHDX point can hold: VHDX has 512- and 4096-byte logical sectors and at most 64 TiB. */
function checkPointable(src: OpenedSource): void {
  if (src.logicalSectorSize !== 512 && src.logicalSectorSize !== 4096) {
    throw new UnsupportedError(`logical sector size ${src.logicalSectorSize}: restore points are VHDX images, which have 512 or 4096`, src.display);
  }
  if (src.virtualSize > 64 * 2 ** 40) throw new UnsupportedError('larger than 64 TiB, the most a VHDX restore point holds', src.display);
}

/** The newest point's list, opened and checked fresh for its image (checkFresh); a VhdsyncError says why not. */
async function freshList(repo: RepoBackend, disk: string, newest: RestorePoint, src: OpenedSource): Promise<Metafile> {
  // Both at once (one round trip on an object store); the list's failure is the one reported, as when it came first.
  const [list, image] = await Promise.allSettled([repo.openList(disk, newest, { virtualSize: src.virtualSize, logicalSectorSize: src.logicalSectorSize }), repo.openPoint(disk, newest)]);
  try {
    if (list.status === 'rejected') throw list.reason;
    if (image.status === 'rejected') throw image.reason;
    await checkFresh(list.value, image.value);
    return list.value;
  } catch (err) {
    if (list.status === 'fulfilled') await list.value.close();
    throw err;
  } finally {
    if (image.status === 'fulfilled') await image.value.close();
  }
}

/** A freshList started before the settling, for the manifest it was read from. */
interface EarlyList {
  m: DiskManifest;
  list: Promise<Metafile>;
}

/** Closes an early list nobody takes. */
async function dropEarly(early: EarlyList | null): Promise<void> {
  await early?.list.then((l) => l.close()).catch(() => {});
}

/**
 * The newest point's list, when the new point can build on it: same virtual size, the list present, readable and
 * fresh for its image. Otherwise null and the reason, and the new point is full. `early`: the same, opened before
 * the settling, taken when the settling left the manifest as it was (else dropped).
 */
async function baseOf(repo: RepoBackend, disk: string, m: DiskManifest, src: OpenedSource, full: boolean, early: EarlyList | null): Promise<{ base: RestorePoint | null; list: Metafile | null; note: string | null }> {
  const newest = m.points[m.points.length - 1];
  const whyFull = !newest ? null : full ? 'full point asked for (--full)' : newest.virtualSize !== src.virtualSize ? `virtual size changed (${newest.virtualSize} -> ${src.virtualSize} bytes)` : undefined;
  // The early list serves only a point that builds on the newest one of the very manifest it was read from.
  const ready = whyFull === undefined && early?.m === m ? early.list : null;
  if (!ready) await dropEarly(early);
  if (whyFull !== undefined) return { base: null, list: null, note: whyFull };
  let list: Metafile | null = null;
  try {
    list = await (ready ?? freshList(repo, disk, newest, src));
    if (list.summary.blockSize !== m.blockSize || list.summary.algorithm !== m.hash) throw new UsageError('its list has other settings than the disk');
    return { base: newest, list, note: null };
  } catch (err) {
    await list?.close();
    if (!(err instanceof VhdsyncError)) throw err;
    return { base: null, list: null, note: `newest point ${newest.id} cannot be built on (${err.describe()})` };
  }
}

/**
 * A disk's first manifest (generation 1, no points), written before anything else of the disk, so that from then on
 * the disk exists (prune sweeps a killed first backup's leftovers) and point files without a manifest are always
 * a lost manifest's points: those are refused, never swept.
 */
async function firstManifest(repo: RepoBackend, session: DiskSession, disk: string, opts: BackupOptions): Promise<DiskManifest> {
  const found = await session.unrecordedPoints();
  if (found.length) {
    throw new RepositoryDamageError(
      `disk '${disk}' has no manifest but holds restore points (${found[0]}${found.length > 1 ? `, ${found.length - 1} more` : ''}); nothing was changed: rebuild it with 'vhdsync verify --repo ${repo.display} ${disk} --repair', or back up under another --name`,
      repo.display,
    );
  }
  const { hash, blockSize } = runSettings(opts);
  const m = { ...emptyManifest(disk, hash, blockSize), generation: 1 };
  await session.writeManifest(m);
  return m;
}

/** The digest and block size this run's points get when the disk has no points to keep them from. */
function runSettings(opts: BackupOptions): { hash: DiskManifest['hash']; blockSize: number } {
  return { hash: opts.hash ?? 'xxh128', blockSize: opts.blockSize ?? DEFAULT_BLOCK_SIZE };
}

/** How a failure after a backup's manifest create begins: the point is there (RecordedError, exit 3). */
function recorded(repo: RepoBackend, disk: string, id: string, generation: number): string {
  return `restore point ${id} of disk '${disk}' is recorded (manifest generation ${generation} in ${repo.display})`;
}

/** Backs up `source` as disk `disk` of `repo`: one new restore point, then the retention policy if given. */
export async function backupDisk(repo: RepoBackend, source: BackupSource, disk: string, opts: BackupOptions = {}): Promise<BackupSummary> {
  const started = Date.now();
  if (opts.retention) checkPolicy(opts.retention);
  if (!opts.repositoryChecked) await repo.exists(true);
  const session = await lockDiskWaiting(repo, disk, 'backup', opts.wait);
  /** Set once the point is recorded: the step under way then, which a failure names beside the recorded point. */
  let after: { id: string; generation: number; step: string; advice: string } | null = null;
  try {
    const existing = (await repo.readManifest(disk)) ?? (await firstManifest(repo, session, disk, opts));
    // An image is opened now, and an incremental's hashing starts, beside the settling's and baseOf's requests; the
    // pass takes it over when the point does build on the newest one with these settings. Its list waits in memory:
    // not for huge disks. A stream is opened only when it is read at once (an idle export may time out).
    const newest = existing.points.at(-1);
    // Only an incremental opens early: a full backup's source that fails to open must not stop the settling first.
    let opened = isStream(source) || !newest || opts.full ? null : await openSource(source, opts.open);
    // The newest point's list and image are read beside the settling's requests too (they are never rewritten): the
    // new point takes them when the settling leaves the manifest as it is (no fold finished, no point recorded).
    let early: EarlyList | null = null;
    try {
      if (opened && newest && newest.virtualSize === opened.virtualSize && opened.virtualSize <= EARLY_MAX_SIZE) {
        await opened.hashEarly?.(existing.hash, existing.blockSize);
      }
      if (opened && newest && newest.virtualSize === opened.virtualSize && !existing.pending) {
        early = { m: existing, list: freshList(repo, disk, newest, opened) };
        early.list.catch(() => {});
      }
      const settled = await settle(session, existing);
      // A disk without points (its first backup failed, e.g. on a mistyped source, after the first manifest was
      // written) has no settings to keep yet: this run's are the ones its first point will have.
      let m = settled.manifest.points.length ? settled.manifest : { ...settled.manifest, ...runSettings(opts) };
      const src = (opened ??= await openSource(source, opts.open));
      const taken = early;
      early = null;
      const { base, list, note } = await baseOf(repo, disk, m, src, Boolean(opts.full), taken);
      try {
        checkPointable(src);
        const time = opts.now?.() ?? new Date();
        const id = newPointId(time, m.points.map((p) => p.id));
        const stats = { changedBytes: 0, dataBytes: 0, zeroBytes: 0, bytesRead: 0 };
        const spec = { base, reflink: opts.reflink ?? 'auto', virtualSize: src.virtualSize, logicalSectorSize: src.logicalSectorSize, blockSize: m.blockSize } as const;
        const hash = m.hash;
        const blockSize = m.blockSize;
        const written = await session.writePoint(id, spec, async (image, listAt) => {
          const cursor = list ? new DigestCursor(list) : null;
          opts.onTotal?.(src.virtualSize);
          await src.pass({
            algorithm: hash,
            blockSize,
            target: listAt,
            // An incremental sends the changed blocks only: the others need not be read beside being hashed.
            fewBlocks: cursor !== null,
            onProgress: opts.onProgress,
            onBlock: async (b) => {
              if (b.read) stats.bytesRead += b.length;
              if (cursor) {
                if (b.digest.equals(await cursor.digest(b.index))) return;
              } else if (b.state !== 'data') {
                return; // a new full image reads zeros already
              }
              stats.changedBytes += b.length;
              if (b.state === 'data') {
                await image.write(b.offset, await b.bytes());
                stats.dataBytes += b.length;
              } else {
                await image.writeZeroes(b.offset, b.length);
                stats.zeroBytes += b.length;
              }
            },
          });
        });
        const point: RestorePoint = {
          id,
          time: time.toISOString(),
          image: written.image,
          kind: written.kind,
          parent: written.parent,
          virtualSize: src.virtualSize,
          changedBytes: stats.changedBytes,
          source: sourceName(source),
        };
        // The point exists from this write on, and only from it: whatever fails after its create says so (exit 3).
        m = { ...m, generation: m.generation + 1, points: [...m.points, point] };
        try {
          await session.writeManifest(m);
        } catch (err) {
          if (err instanceof ManifestWrittenError) throw new RecordedError(`${recorded(repo, disk, id, err.generation)}, but ${err.unfinished}`, repo.display, { disk, point: id, generation: err.generation });
          throw err;
        }
        after = { id, generation: m.generation, step: 'the retention step (--keep) did not finish', advice: 'the next backup with it, or a prune, applies it' };
        const pruned = opts.retention ? await applyPolicy(session, m, opts.retention) : { dropped: [], removed: [] };
        after = { ...after, step: 'reading its stored size failed', advice: 'nothing else is left to do' };
        const imageBytes = written.imageBytes ?? (await repo.pointSize(disk, point)) ?? 0;
        after = { ...after, step: 'closing the source failed' };
        return {
          disk,
          source: point.source,
          point: id,
          time: point.time,
          kind: point.kind,
          parent: point.parent,
          virtualSize: point.virtualSize,
          ...stats,
          imageBytes,
          note,
          dropped: pruned.dropped,
          finishedInterrupted: settled.finished,
          removed: [...settled.removed, ...pruned.removed],
          seconds: (Date.now() - started) / 1000,
        };
      } finally {
        await list?.close();
      }
    } finally {
      await dropEarly(early);
      await opened?.close();
    }
  } catch (err) {
    // Whatever it is (a raw EIO at close included), the point stands: exit 3 with the step, never exit 1.
    if (!after || err instanceof RecordedError) throw err;
    throw new RecordedError(`${recorded(repo, disk, after.id, after.generation)}, but ${after.step}: ${describeError(err)}; ${after.advice}`, repo.display, { disk, point: after.id, generation: after.generation });
  } finally {
    await session.release();
  }
}

/** One source of a multi-disk backup and the disk it goes to. */
export interface BackupJob {
  source: BackupSource;
  disk: string;
}

/** Backs up several disks, up to `jobs` at a time; one failing does not stop the others. `onEnd` hears each one end. */
export async function backupMany(
  repo: RepoBackend,
  work: BackupJob[],
  jobs: number,
  opts: (job: BackupJob) => BackupOptions,
  onEnd?: (job: BackupJob) => void,
): Promise<Array<{ job: BackupJob; summary?: BackupSummary; error?: unknown }>> {
  const names = new Set<string>();
  for (const w of work) {
    if (names.has(w.disk)) throw new UsageError(`two sources would be backed up as disk '${w.disk}': give them different file names, or back them up one at a time with --name`);
    names.add(w.disk);
  }
  // Created once before the jobs start, so parallel first backups do not race to make it.
  await repo.exists(true);
  const results: Array<{ job: BackupJob; summary?: BackupSummary; error?: unknown }> = work.map((job) => ({ job }));
  let nextJob = 0;
  const worker = async () => {
    while (nextJob < work.length) {
      const r = results[nextJob++];
      try {
        r.summary = await backupDisk(repo, r.job.source, r.job.disk, { ...opts(r.job), repositoryChecked: true });
      } catch (err) {
        r.error = err;
      }
      onEnd?.(r.job);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(jobs, work.length)) }, worker));
  return results;
}
