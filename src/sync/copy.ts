/**
 * `copy`: writes only the blocks that differ between SOURCE and TARGET into a new differencing image
 * `<target-name>_diff.<ext>` parented on TARGET (next to it or in --diffdir), plus the diff's metafile, which
 * lists the content TARGET will have once the diff is merged.
 */
import type { Disk, DiskIdentity, OpenOptions } from '../formats/disk.js';
import { createDisk, openDisk } from '../formats/open.js';
import { flushByName, writeAtomically } from '../io/atomic.js';
import type { Location } from '../io/location.js';
import { displayLocation, sibling } from '../io/location.js';
// The meta modules themselves, not their index: a copy that does not hash (no --createmeta) loads no hasher, no hashing
// threads and no native block hasher (decision 0032, as merge).
import { checkFresh } from '../meta/fresh.js';
import { metafileLocationFor, readMetafile, type Metafile, type ReadMetafileOptions } from '../meta/metafile.js';
import { restampList } from '../meta/restamp.js';
import { defaultSubLevel } from '../meta/hashers.js';
import { AlreadyExistsError, UnsupportedError, UsageError } from '../util/errors.js';
import { isAllZero } from '../util/struct.js';
import { ChunkedDiffWriter, chunkedDiffName, scanChunkedDiff } from './chunked-diff.js';
import { copyChangedBlocks, type DiffSink } from './copy-blocks.js';
import { hookLocation } from './kill-hook.js';
import { removePartials } from './leftovers.js';
import { refuseDiffInMerge, settlePendingMerge } from './merge-leftovers.js';
import { lockImage, type ImageLock } from './lock.js';
import { changedBlocksOf, changedParts, DigestCursor, openFreshMetafile, planCopy, SubCursor } from './plan.js';

/** Options for copyToDiff. */
export interface CopyOptions {
  /** Hash the source in the same pass (its old metafile is not needed) and write its new metafile. */
  createmeta?: boolean;
  /** Write the diff here instead of next to the target; its parent locators still point from the target's folder. */
  diffdir?: Location;
  /** Replace an existing diff. */
  force?: boolean;
  /**
   * `image` (default): a differencing image of TARGET's format; `chunked`: XAPI chunked frames in one file
   * `<TARGET>_diff.chunked` (sync/chunked-diff.ts), whose size follows the changed bytes.
   */
  diffFormat?: 'image' | 'chunked';
  /** How images are opened; a forced `format` applies to SOURCE only (TARGET must be a VHD or VHDX). */
  open?: OpenOptions;
  /** Called once with the bytes the copy will examine (changed bytes, or the whole source with createmeta). */
  onTotal?: (bytes: number) => void;
  onProgress?: (bytes: number) => void;
}

/** What a copy did, for summaries and --json. */
export interface CopySummary {
  source: string;
  target: string;
  /** Where the diff was written. */
  diff: string;
  /** Where its parent locators expect it to live (next to the target). */
  diffFinalLocation: string;
  diffMetafile: string;
  /** The source's new metafile (createmeta only). */
  sourceMetafile: string | null;
  totalBlocks: number;
  blockSize: number;
  changedBlocks: number;
  /** Virtual bytes of the changed blocks. */
  changedBytes: number;
  /**
   * Sub-block size both lists share (only the changed sub-blocks of a changed block move), or 0 when whole
   * changed blocks move (either list has no second level: an older or VhdBlockBackup list).
   */
  subBlockSize: number;
  /** Bytes written into the diff as data, and as zeros. */
  dataBytes: number;
  zeroBytes: number;
  /** Bytes read from the source. */
  bytesRead: number;
  /** Size of the diff file (its apparent size; holes included). */
  diffFileSize: number;
  seconds: number;
}

/** The diff's file name for a target: `<stem>_diff.<ext>` (VhdBlockBackup's naming). */
export function diffNameFor(target: Location, format: string): string {
  const base = target.store.paths.basename(target.path);
  const dot = base.lastIndexOf('.');
  return dot > 0 ? `${base.slice(0, dot)}_diff${base.slice(dot)}` : `${base}_diff.${format}`;
}

/** The smallest block VHDX allows: 1 MiB. */
const VHDX_MIN_BLOCK = 1 << 20;

/**
 * The diff's block size: for VHDX, the smallest the format allows (1 MiB) when changes come in pieces smaller than
 * the driver's default of 2 MiB (the metafile's blocks, or its sub-blocks when both lists have them), so scattered
 * small changes cost half the apparent size a 2 MiB block would (what a robocopy, scp or USB disk carries after
 * --diffdir; docs/performance.md); VHD keeps its 2 MiB blocks, which are what Hyper-V and Virtual PC expect of
 * differencing disks.
 */
export function diffBlockSize(format: string, changeUnit: number): number | undefined {
  return format === 'vhdx' && changeUnit < 2 * VHDX_MIN_BLOCK ? VHDX_MIN_BLOCK : undefined;
}

/**
 * Writes the differencing image that turns TARGET into SOURCE. Refuses raw targets, different virtual sizes,
 * missing, stale or incompatible metafiles, an existing diff (without `force`) and a target with a merge pending.
 */
export async function copyToDiff(sourceAt: Location, targetAt: Location, opts: CopyOptions = {}): Promise<CopySummary> {
  const started = Date.now();
  // Held for the whole copy: a merge into the target, or a second copy sharing its diff name, must wait.
  const lock = await lockImage(hookLocation(targetAt), 'copy');
  // Every write of this run stops once the lock's lease cannot be renewed (another run may then take it over).
  const sourceWhere = lock.guard(hookLocation(sourceAt));
  const targetWhere = lock.guard(hookLocation(targetAt));
  let source: Disk;
  let target: Disk | null = null;
  // The diff's lock, taken alongside the opens when its name does not need the target's format (on a share, one
  // round trip less); its failure is thrown where the lock was taken before, after the checks that come first.
  const early = earlyDiffLock(targetAt, opts);
  const targetOpts = { ...opts.open, format: undefined };
  // A merge into the target that only lacked its cleanup is finished here; any other is named with its way out.
  // Both images open meanwhile (on a share, their round trips overlap); a target opened before a cleanup is reopened.
  // A cleanup may take the same diff name's lock: the early one is let go first.
  // A failed open ends a wait for that cleanup's lock: the failure is reported now, not after a stale lock's lease.
  const settleQuit = new AbortController();
  let settleFailedFirst = false;
  const settling = settlePendingMerge(targetWhere, { beforeLock: () => early.drop(), signal: settleQuit.signal });
  settling.catch(() => (settleFailedFirst ||= !settleQuit.signal.aborted));
  // Changed pieces are read one after another and written into a new local diff: on the calling thread (OpenHints.syncIo,
  // as merge), not a thread-pool hand-off each. The --createmeta pass reads the whole source through the hashing pipeline,
  // which overlaps reads with hashing, so it keeps the pool.
  const sourceOpening = openDisk(sourceWhere, opts.createmeta ? opts.open : { ...opts.open, syncIo: true });
  const targetOpening = openDisk(targetWhere, targetOpts);
  for (const opening of [sourceOpening, targetOpening]) opening.catch(() => settleQuit.abort());
  // With no merge pending and the early lock held, the checks under the diff's lock go out while the target is still
  // opening (on a share, beside its metadata read: one round trip less); their results are looked at where they were.
  const ahead = earlyChecks(early, settling, targetWhere, targetOpening, lock, opts);
  try {
    const [settled, src, tgt] = await Promise.allSettled([settling, sourceOpening, targetOpening]);
    // An aborted cleanup's wait is not the failure to report: the open that aborted it is.
    const failed = (settleFailedFirst ? [settled, src, tgt] : [src, tgt, settled]).find((r) => r.status === 'rejected');
    if (failed) {
      for (const r of [src, tgt]) if (r.status === 'fulfilled') await r.value.close().catch(() => {});
      throw failed.reason;
    }
    source = (src as PromiseFulfilledResult<Disk>).value;
    target = (tgt as PromiseFulfilledResult<Disk>).value;
    if ((settled as PromiseFulfilledResult<boolean>).value) {
      // A failed close of the stale open is not this run's concern: the reopen below is what it reads.
      await target.close().catch(() => {});
      target = null;
      target = await openDisk(targetWhere, targetOpts).catch(async (err: unknown) => {
        await source.close().catch(() => {});
        throw err;
      });
    }
  } catch (err) {
    // The refusal comes now: an early lock still being waited for (a stale-looking one is watched for its lease) is
    // given up; checks already running under it are waited for before it is let go.
    early.abort();
    await closeChecks(await ahead);
    await Promise.all([early.drop(), lock.release()]);
    throw err;
  }
  let diffLock: ImageLock | null = null;
  const metas: Metafile[] = [];
  let pre: DiffChecks | null | undefined;
  try {
    const targetName = displayLocation(target.location);
    // Frames apply to any image; a differencing image needs a VHD or VHDX parent.
    if (target.format === 'raw' && opts.diffFormat !== 'chunked') {
      throw new UnsupportedError('not a VHD or VHDX image (raw content has no differencing format, so no diff can be written for it); convert it with vhdsync convert and run createmeta on the result', targetName);
    }
    if (source.virtualSize !== target.virtualSize) {
      throw new UnsupportedError(`virtual sizes differ (source ${source.virtualSize} bytes, target ${target.virtualSize}): a diff cannot resize its parent`, displayLocation(source.location));
    }
    const chunked = opts.diffFormat === 'chunked';
    const diffName = chunked ? chunkedDiffName(target.location.store.paths.basename(target.location.path)) : diffNameFor(target.location, target.format);
    const finalLoc = sibling(target.location, diffName);
    let diffAt = sibling(targetAt, diffName);
    if (opts.diffdir) {
      const st = await opts.diffdir.store.stat(opts.diffdir.path);
      if (!st?.isDirectory) throw new UsageError('--diffdir is not an existing directory', displayLocation(opts.diffdir));
      diffAt = { store: opts.diffdir.store, path: opts.diffdir.store.paths.join(opts.diffdir.path, diffName) };
    }
    // The refusals above needed only the images (and --diffdir), so they did not wait for the diff's lock. Nothing runs
    // under the early lock past this point: its list (if read) is closed with the others.
    const checked = (pre = await ahead);
    if (checked?.list.status === 'fulfilled') metas.push(checked.list.value);
    // Another target of the same file name can have the same diff name in the same --diffdir: the diff's own lock
    // keeps two copies from deleting each other's temp files or replacing each other's diff.
    diffLock = await early.take(diffAt);
    const writeLoc = diffLock.guard(opts.diffdir ? lock.guard(hookLocation(diffAt)) : finalLoc);
    // What follows only reads, but for the leftovers' removal (which the diff's lock allows), so it runs together (on a
    // share: one round trip, not seven); failures are reported in the order the steps had when they ran one by one.
    const image = target;
    // The checks started ahead hold when they looked where these would (the same diff, the same target).
    const same = checked !== null && checked.diffAt.store === diffAt.store && checked.diffAt.path === diffAt.path && image.location === targetWhere;
    const [checks, identity, sourceList] = await Promise.all([
      same ? checked : checksUnderDiffLock(diffAt, writeLoc, image.location, { virtualSize: image.virtualSize, logicalSectorSize: image.logicalSectorSize }, opts),
      // Read before the target's list is checked fresh, so a write after the check shows as a change: the diff's
      // metafile records it and merge refuses a target that no longer matches (docs/metafile.md, parent identity).
      // On a share it is what the open's CREATE reply said (identityStat).
      settle(image.identity()),
      // The source's list, checked fresh against it; planned from below.
      settle(opts.createmeta ? Promise.resolve(null) : openFreshMetafile(source)),
    ]);
    const { refused, existing, list } = checks;
    if (!same && list.status === 'fulfilled') metas.push(list.value);
    if (sourceList.status === 'fulfilled' && sourceList.value) metas.push(sourceList.value);
    const failed = [refused, existing, identity, list].find((r) => r.status === 'rejected');
    if (failed) throw failed.reason;
    if ((existing as PromiseFulfilledResult<unknown>).value) {
      throw new AlreadyExistsError('the diff already exists (merge it first, or use --force to replace it)', displayLocation(writeLoc));
    }
    const targetIdentity = (identity as PromiseFulfilledResult<DiskIdentity>).value;
    const targetMeta = (list as PromiseFulfilledResult<Metafile>).value;
    await checkFresh(targetMeta, image, targetIdentity);
    if (sourceList.status === 'rejected') throw sourceList.reason;
    const ts = targetMeta.summary;
    const summary: CopySummary = {
      source: displayLocation(source.location),
      target: targetName,
      diff: displayLocation(writeLoc),
      diffFinalLocation: displayLocation(finalLoc),
      diffMetafile: displayLocation(metafileLocationFor(writeLoc)),
      sourceMetafile: null,
      totalBlocks: ts.blockCount,
      blockSize: ts.blockSize,
      changedBlocks: 0,
      changedBytes: 0,
      subBlockSize: 0,
      dataBytes: 0,
      zeroBytes: 0,
      bytesRead: 0,
      diffFileSize: 0,
      seconds: 0,
    };
    const parent = target;
    // Planned before anything is written, so a missing, stale or incompatible source list refuses cleanly.
    const plan = sourceList.value ? await planCopy(source, targetMeta, sourceList.value) : null;
    if (plan) {
      summary.changedBlocks = plan.comparison.changedBlocks;
      summary.changedBytes = plan.comparison.changedBytes;
      summary.subBlockSize = plan.sub?.size ?? 0;
    } else {
      summary.subBlockSize = createmetaSubLevel(targetMeta);
    }

    let diffId: DiskIdentity | null = null;
    await writeAtomically(
      writeLoc,
      async (temp) => {
        let sourceList: Metafile;
        const chunkedFile = chunked ? await temp.store.createExclusive(temp.path, { syncIo: true, writeBehind: true }) : null;
        const writer = chunkedFile ? new ChunkedDiffWriter(chunkedFile, source.virtualSize) : null;
        const image = writer
          ? null
          : await createDisk(temp, {
              format: parent.format,
              type: 'differencing',
              parent,
              parentIdentity: targetIdentity,
              // Published only by writeAtomically's flush and rename below.
              unpublished: true,
              finalLocation: finalLoc,
              blockSize: diffBlockSize(parent.format, summary.subBlockSize || ts.blockSize),
              syncIo: true,
              writeBehind: true,
            });
        const diff: DiffSink = writer ?? image!;
        try {
          if (!plan) {
            const written = await copyWithCreatemeta(source, diff, targetMeta, summary, opts);
            summary.sourceMetafile = displayLocation(written);
            sourceList = await readMetafile(written, { virtualSize: source.virtualSize, logicalSectorSize: source.logicalSectorSize });
            metas.push(sourceList);
          } else {
            // The list that was checked fresh and planned from, read through its open handle: a createmeta that
            // replaces the file by name meanwhile cannot slip a different list into the diff.
            sourceList = plan.source;
            opts.onTotal?.(plan.moveBytes);
            const st = await copyChangedBlocks(source, diff, changedBlocksOf(plan), {
              blockSize: ts.blockSize,
              algorithm: ts.algorithm,
              onProgress: opts.onProgress,
            });
            summary.dataBytes = st.dataBytes;
            summary.zeroBytes = st.zeroBytes;
            summary.bytesRead = st.readBytes;
          }
          if (writer) {
            await writer.finish();
            diffId = (await scanChunkedDiff(chunkedFile!, temp, source.virtualSize)).identity;
          } else {
            // Closing completes the image (durable only by the flush below); its identity is then the
            // file as closed, which a share reports in its CLOSE reply.
            await image!.close();
            diffId = await image!.identity();
          }
        } finally {
          await (image ?? chunkedFile!).close();
        }
        // The diff's FLUSH goes out beside its list's publication (on a share: no round trip of its own), answered
        // before the rename (writeAtomically, `flushed`): a server may rename behind a failed FLUSH (decision 0034).
        const [flushed, listed] = await Promise.allSettled([
          flushByName(temp),
          (async () => {
            // --force: the old diff goes before the new list takes its metafile's name, so an old diff is never left
            // under a list that is not its own. Until the rename below neither is there.
            if (opts.force) await writeLoc.store.unlink(writeLoc.path).catch(() => {});
            // The diff's list is the source's list: after the merge it is what the target holds. The merge's
            // rotation re-stamps it with the parent's new identity.
            // With the diff's identity and its parent's (the target's, as checked) in its header; a native list's body
            // is copied byte for byte.
            await restampList(sourceList, metafileLocationFor(writeLoc), diffId!, source.logicalSectorSize, targetIdentity);
          })(),
        ]);
        if (flushed.status === 'rejected') {
          // No diff will be published: nor is its list left without it (best effort, as the rest of the rollback).
          if (listed.status === 'fulfilled') await writeLoc.store.unlink(metafileLocationFor(writeLoc).path).catch(() => {});
          throw flushed.reason;
        }
        if (listed.status === 'rejected') throw listed.reason;
        // The locks' read-back (before their deletion at the end) goes out with the diff's flush and rename below.
        diffLock!.prepareRelease();
        lock.prepareRelease();
      },
      // Checked above (the rename still refuses a diff that appeared since); flushed in the body.
      { overwrite: opts.force, checked: true, flushed: true },
    );
    // The size the diff had once complete (its identity); renaming it changed nothing.
    summary.diffFileSize = diffId!.fileSize;
    summary.seconds = (Date.now() - started) / 1000;
    return summary;
  } finally {
    // Refused before the diff's lock was looked at: as after a failed open (above).
    if (pre === undefined) {
      early.abort();
      await closeChecks(await ahead);
    }
    for (const m of metas) await m.close().catch(() => {});
    await target?.close().catch(() => {});
    await source.close().catch(() => {});
    // Two locks: released together (on a share, each reads the lock back and deletes it: two round trips, not four).
    await Promise.all([diffLock?.release(), early.drop(), lock.release()]);
  }
}

/** The settled outcome of `p` (it never rejects). */
function settle<T>(p: Promise<T>): Promise<PromiseSettledResult<T>> {
  return Promise.allSettled([p]).then(([r]) => r);
}

/** The checks a copy makes under the diff's lock, each settled, and the diff location they looked at. */
interface DiffChecks {
  diffAt: Location;
  /** refuseDiffInMerge's outcome. */
  refused: PromiseSettledResult<void>;
  /** The diff already there (null with --force: not looked for). */
  existing: PromiseSettledResult<unknown>;
  /** The target's list. */
  list: PromiseSettledResult<Metafile>;
}

/**
 * Under the diff's lock (held): refuses a diff name another target's merge still needs, looks for an existing diff,
 * removes the leftovers of an interrupted copy, and reads the target's list (`listOpts` may still be pending).
 */
async function checksUnderDiffLock(diffAt: Location, writeLoc: Location, image: Location, listOpts: ReadMetafileOptions | Promise<ReadMetafileOptions>, opts: CopyOptions): Promise<DiffChecks> {
  const [refused, existing, , list] = await Promise.allSettled([
    // Nor replace a diff of this name that an interrupted merge into another target still needs.
    refuseDiffInMerge(diffAt, image),
    opts.force ? null : writeLoc.store.stat(writeLoc.path),
    removePartials(writeLoc, metafileLocationFor(writeLoc)),
    readMetafile(metafileLocationFor(image), listOpts),
  ]);
  return { diffAt, refused, existing, list };
}

/**
 * The checks under the diff's lock, started while the target opens: once no merge is pending and the early lock is
 * held (else null: they run after the open). Never rejects.
 */
async function earlyChecks(early: EarlyLock, settling: Promise<boolean>, targetWhere: Location, opening: Promise<Disk>, lock: ImageLock, opts: CopyOptions): Promise<DiffChecks | null> {
  // A cleanup (or a failed probe) comes first: the cleanup may rotate the target's list and remove the old diff.
  if (await settling.catch(() => true)) return null;
  const held = await early.held();
  if (!held || !early.at) return null;
  const diffAt = early.at;
  // As copyToDiff places it once the target is open (the diff's name from the target's path alone).
  const finalLoc = sibling(targetWhere, targetWhere.store.paths.basename(diffAt.path));
  const writeLoc = held.guard(opts.diffdir ? lock.guard(hookLocation(diffAt)) : finalLoc);
  const sizes = opening.then((d) => ({ virtualSize: d.virtualSize, logicalSectorSize: d.logicalSectorSize }));
  return checksUnderDiffLock(diffAt, writeLoc, targetWhere, sizes, opts).catch(() => null);
}

/** Closes the list a discarded set of checks opened. */
async function closeChecks(checks: DiffChecks | null): Promise<void> {
  if (checks?.list.status === 'fulfilled') await checks.list.value.close().catch(() => {});
}

/** The diff's lock taken ahead (earlyDiffLock): handed over once the diff's place is known, or let go. */
interface EarlyLock {
  /** Where the early lock is taken, or null when the diff's name needs the target's format. */
  readonly at: Location | null;
  /** The early lock once taken and still not handed over or let go; null when it failed, or was never taken. */
  held(): Promise<ImageLock | null>;
  /** The lock of `diffAt`: the early one when it is that location's, else taken now (the early one let go). */
  take(diffAt: Location): Promise<ImageLock>;
  /** Lets the early lock go (when it was taken), once its attempt has ended. Never throws. */
  drop(): Promise<void>;
  /** Ends an attempt still waiting (watching a stale-looking lock); a lock already taken stays until drop(). */
  abort(): void;
}

/**
 * Starts taking the lock of the diff's location when the target's path alone names it (the target's file name has
 * an extension, or the diff is chunked): the place `copyToDiff` locks once the target is open.
 */
function earlyDiffLock(targetAt: Location, opts: CopyOptions): EarlyLock {
  const base = targetAt.store.paths.basename(targetAt.path);
  const chunked = opts.diffFormat === 'chunked';
  const name = chunked ? chunkedDiffName(base) : base.lastIndexOf('.') > 0 ? diffNameFor(targetAt, '') : null;
  const at = name === null ? null : opts.diffdir ? { store: opts.diffdir.store, path: opts.diffdir.store.paths.join(opts.diffdir.path, name) } : sibling(targetAt, name);
  const quit = new AbortController();
  let pending: Promise<ImageLock> | null = at ? lockImage(at, 'copy', undefined, quit.signal) : null;
  // Its failure is thrown by take(), or not at all.
  pending?.catch(() => {});
  const drop = async () => {
    const p = pending;
    pending = null;
    // An attempt still watching a stale-looking lock ends now rather than after its lease.
    quit.abort();
    if (p) await p.then((l) => l.release(), () => {}).catch(() => {});
  };
  return {
    at,
    held: async () => {
      const p = pending;
      return p ? p.catch(() => null) : null;
    },
    take: async (diffAt) => {
      if (!pending || at!.store !== diffAt.store || at!.path !== diffAt.path) {
        await drop();
        return lockImage(diffAt, 'copy');
      }
      const p = pending;
      pending = null;
      return p;
    },
    drop,
    abort: () => quit.abort(),
  };
}

/** The sub-block size a --createmeta copy compares at: the target list's, when the source's new list gets the same. */
function createmetaSubLevel(targetMeta: Metafile): number {
  const ts = targetMeta.summary;
  const mine = ts.layout === 'native' ? defaultSubLevel(ts.algorithm) : null;
  return ts.sub && mine && mine.size === ts.sub.size && mine.algorithm === ts.sub.algorithm ? ts.sub.size : 0;
}

/**
 * One pass over the source: hashes every block (the meta pipeline, which skips what the allocation tables
 * say is empty), copies the blocks whose digest differs from the target's, and writes the source's new
 * metafile. Returns that metafile's location.
 */
async function copyWithCreatemeta(source: Disk, diff: DiffSink, targetMeta: Metafile, summary: CopySummary, opts: CopyOptions): Promise<Location> {
  const ts = targetMeta.summary;
  const cursor = new DigestCursor(targetMeta);
  const subs = summary.subBlockSize ? new SubCursor(targetMeta) : null;
  const put = async (offset: number, data: Buffer | null, length: number) => {
    if (data && !isAllZero(data)) {
      await diff.write(offset, data);
      summary.dataBytes += length;
    } else {
      await diff.writeZeroes(offset, length);
      summary.zeroBytes += length;
    }
  };
  opts.onTotal?.(source.virtualSize);
  const hashing = ts.layout === 'vbb' ? { layout: 'vbb' as const } : { layout: 'native' as const, algorithm: ts.algorithm as 'xxh128' | 'sha256', blockSize: ts.blockSize };
  const { createMetafile } = await import('../meta/create.js');
  const result = await createMetafile(source, {
    ...hashing,
    onProgress: opts.onProgress,
    onBlock: async (b) => {
      if (b.read) summary.bytesRead += b.length;
      if (b.digest.equals(await cursor.digest(b.index))) return;
      summary.changedBlocks++;
      summary.changedBytes += b.length;
      const data = b.state === 'data' ? b.data! : null;
      if (subs && b.subDigests) {
        const sub = ts.sub!;
        const parts = changedParts(sub, b.subDigests.length / sub.digestLength, b.subDigests, await subs.slot(b.index));
        // An empty list under differing block digests means two sub-blocks collided: the whole block moves.
        if (parts.changed.length) {
          for (const { sub: k } of parts.changed) {
            const at = k * sub.size;
            const n = Math.min(sub.size, b.length - at);
            await put(b.offset + at, data ? data.subarray(at, at + n) : null, n);
          }
          return;
        }
      }
      await put(b.offset, data, b.length);
    },
  });
  return result.metafile;
}
