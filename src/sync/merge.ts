/**
 * `merge`: folds a differencing image into its parent at sector granularity, crash-safe and resumable, then
 * rotates the metafile so the parent's list describes its new content. See docs/decisions/0003-merge-state.md.
 */
import type { Disk, FormatDriver, OpenOptions, ParentExpectation, ParentOpener } from '../formats/disk.js';
import { detectStructured } from '../formats/open.js';
// From the formats' index, which registers the drivers detectStructured and the parent opener choose from.
import { openDisk } from '../formats/index.js';
import type { Location } from '../io/location.js';
import { displayLocation, withPath } from '../io/location.js';
// Modules, not the meta index: a merge does not hash, and the index would load the hashers and their native helpers.
import { metafileLocationFor, readMetafile } from '../meta/metafile.js';
import { chunkedParentPath, isChunkedDiff, openChunkedDiff } from './chunked-diff.js';
import type { RandomAccessFile } from '../io/store.js';
import { BusyError, MetafileError, NotFoundError, ParentError, UsageError } from '../util/errors.js';
import { sizedRing } from '../util/aligned.js';
import { prefetch } from '../util/prefetch.js';
import { EventLoopTurns } from '../util/event-loop.js';
import { lockImage, type ImageLock } from './lock.js';
import { hookLocation } from './kill-hook.js';
import { mergeStateLocationFor, readMergeState, writeMergeState, type MergeState } from './merge-state.js';
import { readMergeMarker, removeMergeMarker, writeMergeMarker } from './merge-marker.js';
import { cleanupMerge, diffGoneMessage, diffIdAt, diffOfStatePresent, findMergeOf, pendingMergeMessage } from './merge-leftovers.js';
import { checkDiffMetafile, firstDifference, rotateMetafile } from './rotate.js';
import { parentChange, resumeProblem } from './parent-identity.js';
import { randomUUID } from 'node:crypto';

/** Data is copied in pieces this large; one piece is read ahead while the previous one is written. */
const CHUNK = 4 << 20;
/** Allocation tables are asked about this much virtual content at a time, so huge disks need no huge lists. */
const STATUS_WINDOW = 1 << 30;
/** After this many bytes merged, the parent is flushed and the progress recorded, bounding redone work. */
const CHECKPOINT_BYTES = 256 << 20;

/** One line for a parent someone else wrote to while its merge was interrupted, with the ways out. */
function changedWhileInterrupted(parent: string, why: string, state: string): string {
  return `parent ${parent} was written to while its merge was interrupted (${why}); it holds neither its old content nor the merged one: restore it from a backup (or keep it as it is: delete ${state} and run vhdsync createmeta ${parent}), then copy again with --force`;
}

/** The way out when the parent is not the image the diff was made against. */
const REDO = (parent: string) => `delete the diff, run vhdsync createmeta ${parent}, then copy again`;

/** Options for mergeDiff. */
export interface MergeOptions {
  /** Keep the diff and its metafile after the merge. */
  keepDiff?: boolean;
  /** How VHD virtual sizes are read (`--vhd-size`), for the diff and its parent alike. */
  vhdSize?: OpenOptions['vhdSize'];
  /**
   * The content id the merged parent gets (VHD UniqueId / VHDX DataWriteGuid text) instead of a new random one: a
   * backup repository gives it the diff's own id, so the diff's children then find their content under the parent.
   */
  parentContentId?: string;
  /** Called once with the bytes the merge will write (depth-0 extents from the resume point). */
  onTotal?: (bytes: number) => void;
  /** Called with bytes merged as they are. */
  onProgress?: (bytes: number) => void;
  /** The parent's lock, already held by the caller (serve's import holds it from upload to merge); not released here. */
  lock?: ImageLock;
}

/** What a merge did, for summaries and --json. */
export interface MergeSummary {
  diff: string;
  parent: string;
  /** Bytes of virtual content folded into the parent (data and zeroed ranges), over all runs. */
  bytesMerged: number;
  /** Depth-0 extents folded in, over all runs. */
  extentsMerged: number;
  /** Blocks of the parent (of `parentBlockSize`) the merge wrote into; 0 when the diff was already gone. */
  blocksMerged: number;
  parentBlockSize: number;
  /** Whether this run finished a merge an earlier run started. */
  resumed: boolean;
  /** The step an earlier run had reached when this one resumed it. */
  resumedFrom: string | null;
  /** The parent's metafile written by the rotation, or null when the diff had none. */
  metafile: string | null;
  diffKept: boolean;
  seconds: number;
}

/** Progress callback of mergeExtents: called after each checkpoint-worthy amount with the new safe offset. */
export type Checkpoint = (doneOffset: number, bytes: number, extents: number) => Promise<void>;

interface Piece {
  offset: number;
  length: number;
  zero: boolean;
  /** True on the last piece of an extent, so extents are counted once. */
  last: boolean;
}

/** Yields the depth-0 content of `diff` in [from, to), as zero ranges and data pieces of at most CHUNK bytes. */
async function* ownPieces(diff: Disk, from: number, to = diff.virtualSize): AsyncGenerator<Piece> {
  for (let base = from; base < to; base += STATUS_WINDOW) {
    const len = Math.min(STATUS_WINDOW, to - base);
    // The parent is not asked about what the diff leaves to it: only depth 0 moves.
    for (const e of await diff.status(base, len, { ownOnly: true })) {
      // Only what this image itself holds moves; depth > 0 is already the parent's, `unallocated` is nobody's.
      if (e.depth !== 0 || e.state === 'unallocated') continue;
      if (e.state === 'zero') {
        yield { offset: e.offset, length: e.length, zero: true, last: true };
        continue;
      }
      for (let o = 0; o < e.length; o += CHUNK) {
        const n = Math.min(CHUNK, e.length - o);
        yield { offset: e.offset + o, length: n, zero: false, last: o + n === e.length };
      }
    }
  }
}

/** Counts the blocks of `blockSize` that ascending ranges touch, each block once. */
export interface BlockCounter {
  add(offset: number, length: number): void;
  readonly blocks: number;
}

/** A BlockCounter for blocks of `blockSize` (0: counts nothing). */
export function blockCounter(blockSize: number): BlockCounter {
  let blocks = 0;
  let lastBlock = -1;
  return {
    add(offset, length) {
      if (blockSize <= 0 || length <= 0) return;
      const first = Math.max(lastBlock + 1, Math.floor(offset / blockSize));
      const last = Math.floor((offset + length - 1) / blockSize);
      if (last >= first) blocks += last - first + 1;
      lastBlock = Math.max(lastBlock, last);
    },
    get blocks() {
      return blocks;
    },
  };
}

/**
 * What the merge will write in [from, to), from allocation tables only: the bytes (for progress bars); the ranges
 * go to `counter`, which counts the blocks of the parent they touch.
 */
export async function mergeFootprint(diff: Disk, counter: BlockCounter, from = 0, to = diff.virtualSize): Promise<number> {
  let bytes = 0;
  for await (const p of ownPieces(diff, from, to)) {
    bytes += p.length;
    counter.add(p.offset, p.length);
  }
  return bytes;
}

/**
 * Folds every range `diff` itself holds (depth 0) into `parent`, from virtual offset `from` on: data is read
 * from the diff and written, zero ranges become parent.writeZeroes. Presence is per sector, so a partly
 * present block moves only its present sectors. Every piece is idempotent, so a rerun may redo any of them.
 * `checkpoint` is called with a safe resume offset after the parent has been flushed.
 */
export async function mergeExtents(
  diff: Disk,
  parent: Disk,
  from: number,
  opts: {
    checkpoint?: Checkpoint;
    onProgress?: (bytes: number) => void;
    checkpointBytes?: number;
    /** Told of every range as it is merged (the caller counts the parent blocks it touches). */
    onPiece?: (offset: number, length: number) => void;
  } = {},
): Promise<{ bytes: number; extents: number }> {
  const { checkpoint, onProgress } = opts;
  const every = opts.checkpointBytes ?? CHECKPOINT_BYTES;
  let bytes = 0;
  let extents = 0;
  let sinceCheckpoint = 0;
  const turns = new EventLoopTurns();
  // One piece read ahead from the diff while the previous one is written into the parent.
  // Aligned buffers, so the parent's store writes them without a bounce copy (decision 0009), no larger than the
  // pieces need: scattered 64 KiB extents do not pay for faulting in 3 x 4 MiB.
  const buffer = sizedRing(3, CHUNK);
  const read = (piece: Piece) => (piece.zero ? Promise.resolve(null) : diff.read(piece.offset, piece.length, buffer(piece.length)));
  for await (const { item: piece, value: data } of prefetch(ownPieces(diff, from), read, 2)) {
    if (data) await parent.write(piece.offset, data);
    else await parent.writeZeroes(piece.offset, piece.length);
    opts.onPiece?.(piece.offset, piece.length);
    bytes += piece.length;
    sinceCheckpoint += piece.length;
    if (piece.last) extents++;
    onProgress?.(piece.length);
    if (checkpoint && sinceCheckpoint >= every) {
      await parent.flush();
      await checkpoint(piece.offset + piece.length, bytes, extents);
      sinceCheckpoint = 0;
    }
    // Local reads and writes do not give the event loop a turn (syncIo): the lock's renewals and progress need one.
    await turns.after(piece.length);
  }
  await parent.flush();
  return { bytes, extents };
}

/** A chunked diff is merged only with its metafile: the parent identity it records is the only check of the parent. */
async function requireChunkedMetafile(diffLoc: Location): Promise<void> {
  const at = metafileLocationFor(diffLoc);
  const meta = (await at.store.stat(at.path)) ? await readMetafile(at) : null;
  await meta?.close();
  if (!meta?.summary.parentIdentity) {
    throw new MetafileError(`missing or without a parent identity: a chunked diff is merged only with the metafile copy wrote beside it, which names its parent's identity (${displayLocation(diffLoc)})`, displayLocation(at));
  }
}

/** The parent an opened diff found, with what the diff expects of it. */
interface MergePair {
  diff: Disk;
  parent: Disk;
  expect: ParentExpectation;
  /** Taken before the parent was opened writable (a writable open may already replay its log). */
  lock: ImageLock;
  /** The parent file's size and mtime under the lock, before the writable open could change them. */
  parentStat: { size: number; mtimeMs: number };
}

async function detectDriver(file: RandomAccessFile, subject: string): Promise<FormatDriver> {
  const d = await detectStructured(file, subject);
  if (d) return d;
  throw new UsageError('not a differencing image (no VHD or VHDX structure found): nothing to merge', subject);
}

/**
 * Opens the diff read-only with its parent opened *writable* in the same chain, so one handle serves both
 * and a VHDX parent's log is replayed on open. The parent match is not checked here: a resumed merge has
 * already changed the parent's id, so the caller decides from the state file.
 */
/** The first of `candidates` that is the expected parent or has a merge pending into it (read-only looks, no lock). */
async function firstParentLike(candidates: Location[], expect: ParentExpectation, vhdSize: OpenOptions['vhdSize']): Promise<Location | null> {
  for (const cand of candidates) {
    const pending = mergeStateLocationFor(cand);
    if (await pending.store.stat(pending.path)) return cand;
    const disk = await openDisk(cand, { vhdSize, ignoreParentMismatch: true }).catch(() => null);
    if (!disk) continue;
    try {
      if (await expect.matches(disk)) return cand;
    } finally {
      await disk.close();
    }
  }
  return null;
}

async function openPair(diffLoc: Location, vhdSize: OpenOptions['vhdSize'], held?: ImageLock): Promise<MergePair> {
  const subject = displayLocation(diffLoc);
  // Merge moves small pieces one at a time: local files do each read and write on this thread (OpenHints.syncIo).
  const file = await diffLoc.store.open(diffLoc.path, 'read', { syncIo: true });
  let found: { parent: Disk; expect: ParentExpectation; stat: { size: number; mtimeMs: number } } | null = null;
  let lock: ImageLock | null = null;
  const opener: ParentOpener = async (candidates, child, _opts, expect) => {
    const tried: string[] = [];
    const existing: Location[] = [];
    for (const cand of candidates) {
      tried.push(displayLocation(cand));
      const st = await cand.store.stat(cand.path).catch(() => null);
      // Locators often name one file twice (relative and absolute): look at each file once.
      if (st && !st.isDirectory && !existing.some((e) => e.path === cand.path)) existing.push(cand);
    }
    // A --diffdir may hold another image under the parent's name, found first by the relative locator: take the
    // first candidate that is the parent (its id matches, or a merge into it is pending), else the first one, so
    // the caller's check names the mismatch.
    const cand = existing.length > 1 ? ((await firstParentLike(existing, expect, vhdSize)) ?? existing[0]) : existing[0];
    if (cand) {
      const st = (await cand.store.stat(cand.path))!;
      lock = held ?? (await lockImage(cand, 'merge'));
      const locked = (await cand.store.stat(cand.path)) ?? st;
      // The parent's writes (and the state file and metafile beside it) stop if the lock's lease lapses.
      const parent = await openDisk(lock.guard(cand), { writable: true, vhdSize, syncIo: true });
      found = { parent, expect, stat: { size: locked.size, mtimeMs: locked.mtimeMs } };
      return parent;
    }
    throw new ParentError(`parent image not found (looked for ${tried.length ? tried.join(', ') : 'no locator'})`, displayLocation(child));
  };
  let diff: Disk;
  try {
    if (isChunkedDiff(diffLoc.path)) {
      // Frames name no parent: it is the image the name says, checked against the identity the metafile records.
      const parentLoc = withPath(diffLoc, chunkedParentPath(diffLoc.path));
      await requireChunkedMetafile(diffLoc);
      const expect: ParentExpectation = { id: '', idName: 'the identity its metafile records', matches: async () => true };
      diff = await openChunkedDiff(file, diffLoc, await opener([parentLoc], diffLoc, { writable: true, vhdSize }, expect));
    } else {
      const driver = await detectDriver(file, subject);
      diff = await driver.open(file, diffLoc, { writable: false, vhdSize }, opener);
    }
  } catch (err) {
    await file.close().catch(() => {});
    if (!held) await (lock as ImageLock | null)?.release();
    throw err;
  }
  const got = found as { parent: Disk; expect: ParentExpectation; stat: { size: number; mtimeMs: number } } | null;
  if (!diff.parent || !got || !lock) {
    await diff.close();
    if (!held) await (lock as ImageLock | null)?.release();
    throw new UsageError(`not a differencing image (${diff.format} ${diff.type}): nothing to merge`, subject);
  }
  return { diff, parent: got.parent, expect: got.expect, lock, parentStat: got.stat };
}

/**
 * Merges the differencing image at `where` into its parent. Reruns after a crash resume from the state file
 * `<parent>.merge-state.json`; each step is idempotent. Refuses a parent that does not match the diff (unless
 * this is a resumed merge, which changed the parent's id itself), a different virtual size, and a second
 * diff while another merge into the same parent is pending.
 */
export async function mergeDiff(where: Location, opts: MergeOptions = {}): Promise<MergeSummary> {
  const started = Date.now();
  const diffLoc = hookLocation(where);
  const subject = displayLocation(diffLoc);
  if (!(await diffLoc.store.stat(diffLoc.path))) return finishWithoutDiff(diffLoc, started, opts.lock);

  const pair = await openPair(diffLoc, opts.vhdSize, opts.lock);
  const { diff, parent } = pair;
  let closed = false;
  // Taken after the parent's, in copy's order: a copy writing a diff of this name must wait until it is merged.
  let diffLock: ImageLock | null = null;
  try {
    diffLock = await lockImage(diffLoc, 'merge');
    const diffSide = diffLock.guard(diffLoc);
    const parentLoc = parent.location;
    const stateLoc = mergeStateLocationFor(parentLoc);
    const diffId = (await diff.identity()).contentId;
    let state = await readMergeState(stateLoc);
    const resumedFrom = state ? state.step : null;
    // Taken under the lock, before the writable open could touch the file.
    const current = { ...(await parent.identity()), fileSize: pair.parentStat.size, mtimeMs: pair.parentStat.mtimeMs };
    const marker = await readMergeMarker(diffSide).catch(() => null);
    if (state) {
      if (state.diffId !== diffId) {
        const exists = await diffOfStatePresent(state, parentLoc);
        throw new BusyError(`another merge into this parent is pending: ${pendingMergeMessage(state, parentLoc, exists)}`, displayLocation(parentLoc));
      }
      if (state.diff !== diffLoc.path) {
        // The same diff (by its id) under another name: moved after the interruption, or spelled otherwise.
        // The merge goes on from here, and its marker moves with it.
        const old = withPath(diffLoc, state.diff);
        state.diff = diffLoc.path;
        await writeMergeMarker(diffSide, { version: 1, parent: parentLoc.path, diffId, finished: false, keepDiff: state.keepDiff });
        await writeMergeState(stateLoc, state);
        // The old name's marker (and the killed run's lock there) go, under that name's lock.
        const oldLock = await lockImage(old, 'merge').catch(() => null);
        if (oldLock) {
          try {
            const oldMarker = await readMergeMarker(old).catch(() => null);
            if (oldMarker?.diffId === diffId && (await diffIdAt(old)) !== diffId) await removeMergeMarker(oldLock.guard(old));
          } finally {
            await oldLock.release();
          }
        }
      }
      const why = resumeProblem(state, current);
      if (why) throw new ParentError(`${changedWhileInterrupted(displayLocation(parentLoc), why, displayLocation(stateLoc))}`, subject);
    } else if (marker?.finished && marker.diffId === diffId && marker.parent === parentLoc.path && !(await pair.expect.matches(parent))) {
      // Killed after the state file of a --keep-diff merge was removed: the merge is complete (the parent carries
      // the id the merge gave it). A parent that still has the id the diff expects was never merged into: a marker
      // whose unflushed removal a crash undid, over a parent restored since, is stale, and the merge below runs.
      await removeMergeMarker(diffSide);
      const meta = metafileLocationFor(parentLoc);
      return { ...alreadyDone(diffLoc, marker.parent, diffId, (await meta.store.stat(meta.path)) ? displayLocation(meta) : null, started), diffKept: true };
    } else {
      if (!(await pair.expect.matches(parent))) {
        const got = (await parent.identity()).contentId;
        const name = displayLocation(parentLoc);
        throw new ParentError(
          `parent ${name} does not match: the diff expects ${pair.expect.idName} ${pair.expect.id}, the parent has ${got} (the parent changed after the diff was made; ${REDO(name)})`,
          subject,
        );
      }
      if (diff.virtualSize !== parent.virtualSize) {
        throw new ParentError(`virtual size ${diff.virtualSize} differs from the parent's ${parent.virtualSize}`, subject);
      }
      // A broken diff metafile, or a parent written to since copy, is found before the parent is touched.
      const record = await checkDiffMetafile(diffLoc, diff);
      const before = current;
      const changed = parentChange(record, before);
      if (changed) {
        const name = displayLocation(parentLoc);
        throw new ParentError(`parent ${name} changed after the diff was made (${changed}); merging would mix its new content into the result: ${REDO(name)}`, subject);
      }
      state = {
        version: 2,
        diff: diffLoc.path,
        diffId,
        parent: parentLoc.path,
        parentBefore: { contentId: before.contentId, fileSize: before.fileSize, mtimeMs: before.mtimeMs },
        // Durable before the parent carries it, so a resume can tell the id it gave from anyone else's.
        parentId: parent.setContentId ? (opts.parentContentId ?? randomUUID()) : before.contentId,
        step: 'merging',
        doneOffset: 0,
        bytesMerged: 0,
        extentsMerged: 0,
        virtualSize: diff.virtualSize,
        // A first run killed before its state file existed recorded --keep-diff in its marker only.
        keepDiff: Boolean(opts.keepDiff) || Boolean(marker && !marker.finished && marker.diffId === diffId && marker.keepDiff),
        startedAt: new Date().toISOString(),
      };
      // The marker first: whatever of the merge exists, the diff's side can find it (docs/decisions/0003).
      await writeMergeMarker(diffSide, { version: 1, parent: parentLoc.path, diffId, finished: false, keepDiff: state.keepDiff });
      await writeMergeState(stateLoc, state);
    }
    const st: MergeState = state;
    // A rerun may ask for --keep-diff even if the first run did not; never lose a diff someone asked to keep.
    st.keepDiff = st.keepDiff || Boolean(opts.keepDiff);

    // Parent blocks the merge writes into, for the summary: counted as the data step goes (it reads the allocation
    // tables anyway), plus those before a resume point; from the tables alone when the data step is over.
    const counter = blockCounter(parent.blockSize);
    if (st.step === 'merging') {
      // A new id before the first data write: children and metafiles made against the old content stop matching.
      // Reapplied on resume (idempotent): a kill may have left it in one VHD footer copy only.
      await parent.setContentId?.(st.parentId || randomUUID());
      // A pass over the tables just for the total, only when someone shows it (a progress bar).
      if (opts.onTotal) opts.onTotal(await mergeFootprint(diff, blockCounter(0), st.doneOffset));
      if (st.doneOffset > 0) await mergeFootprint(diff, counter, 0, st.doneOffset);
      const baseBytes = st.bytesMerged;
      const baseExtents = st.extentsMerged;
      const done = await mergeExtents(
        diff,
        parent,
        st.doneOffset,
        {
          checkpoint: async (doneOffset, bytes, extents) => {
            await writeMergeState(stateLoc, { ...st, doneOffset, bytesMerged: baseBytes + bytes, extentsMerged: baseExtents + extents });
          },
          onProgress: opts.onProgress,
          onPiece: counter.add,
        },
      );
      st.bytesMerged = baseBytes + done.bytes;
      st.extentsMerged = baseExtents + done.extents;
      st.doneOffset = st.virtualSize;
      const finalId = (await parent.identity()).contentId;
      // Closing the pair closes the writable parent: its allocation tables and headers are final and durable
      // before the state says so.
      closed = true;
      await diff.close();
      if (resumedFrom === 'merging' && (parent.format !== 'vhdx' || !st.parentId)) {
        // A VHD or raw parent keeps its id through others' writes, so a resume cannot tell them from its own:
        // before the parent's metafile claims the diff's content, the content is checked against it.
        const wrong = await firstDifference(diffLoc, parentLoc, opts.vhdSize);
        if (wrong) throw new ParentError(changedWhileInterrupted(displayLocation(parentLoc), `after the merge ${wrong}`, displayLocation(stateLoc)), subject);
      }
      const fst = await parentLoc.store.stat(parentLoc.path);
      st.parentFinal = { contentId: finalId, fileSize: fst?.size ?? 0, mtimeMs: fst?.mtimeMs ?? 0 };
      st.version = 2;
      st.parentId ??= finalId;
      st.step = 'rotating';
      await writeMergeState(stateLoc, st);
    } else {
      await mergeFootprint(diff, counter);
      closed = true;
      await diff.close();
    }

    if (st.step === 'rotating') {
      st.metafile = await rotateMetafile(diffLoc, parentLoc, opts.vhdSize);
      st.step = 'cleanup';
      await writeMergeState(stateLoc, st);
    }
    await cleanupMerge(diffSide, stateLoc, st, parentLoc, true);
    return { ...summaryOf(st, diffLoc, resumedFrom !== null, resumedFrom, started), blocksMerged: counter.blocks, parentBlockSize: parent.blockSize };
  } finally {
    if (!closed) await diff.close().catch(() => {});
    await (diffLock as ImageLock | null)?.release();
    if (!opts.lock) await pair.lock.release();
  }
}

/**
 * A rerun whose diff is gone: the merge it names through the marker (or a state file in the diff's folder) is
 * finished if only its cleanup was left, reported as done if the marker says so, or explained (naming
 * `merge --discard`) if it stopped earlier.
 */
async function finishWithoutDiff(diffLoc: Location, started: number, held?: ImageLock): Promise<MergeSummary> {
  const subject = displayLocation(diffLoc);
  const found = await findMergeOf(diffLoc);
  if (!found) throw new NotFoundError('no such file', subject);
  // Parent first, then the diff's name, as everywhere; both taken before anything is re-read and acted on.
  const lock = held ?? (await lockImage(found.parent, 'merge'));
  try {
    const diffLock = await lockImage(diffLoc, 'merge');
    try {
      const again = await findMergeOf(diffLoc);
      const state = again?.state ?? null;
      const diffSide = diffLock.guard(diffLoc);
      // Looked at again under both locks: a diff that came back under this name (moved back) is merged normally.
      if (state && (await diffOfStatePresent(state, again!.parent))) {
        throw new BusyError(`the diff reappeared while this run looked for it; run vhdsync merge ${subject} again`, subject);
      }
      if (!again || !state) {
        if (again?.marker) await removeMergeMarker(diffSide);
        if (!again?.marker?.finished) throw new NotFoundError('no such file (and no merge of it is pending)', subject);
        const meta = metafileLocationFor(again.parent);
        return alreadyDone(diffLoc, again.marker.parent, again.marker.diffId, (await meta.store.stat(meta.path)) ? displayLocation(meta) : null, started);
      }
      if (state.step !== 'cleanup') throw new BusyError(diffGoneMessage(state, again!.parent), subject);
      await cleanupMerge(diffSide, lock.guard(again!.stateLoc), state, again!.parent);
      return summaryOf(state, diffLoc, true, 'cleanup', started);
    } finally {
      await diffLock.release();
    }
  } finally {
    if (!held) await lock.release();
  }
}

/** The summary of a merge found complete (only its marker was left). */
function alreadyDone(diffLoc: Location, parent: string, diffId: string, metafile: string | null, started: number): MergeSummary {
  const done: MergeState = {
    version: 2, diff: diffLoc.path, diffId, parent, parentBefore: { contentId: '', fileSize: 0, mtimeMs: 0 }, step: 'cleanup',
    doneOffset: 0, bytesMerged: 0, extentsMerged: 0, virtualSize: 0, keepDiff: false, startedAt: '', metafile,
  };
  return summaryOf(done, diffLoc, true, 'cleanup', started);
}

function summaryOf(
  st: MergeState,
  diffLoc: Location,
  resumed: boolean,
  resumedFrom: string | null,
  started: number,
): MergeSummary {
  return {
    diff: displayLocation(diffLoc),
    parent: diffLoc.store.display(st.parent),
    bytesMerged: st.bytesMerged,
    extentsMerged: st.extentsMerged,
    blocksMerged: 0,
    parentBlockSize: 0,
    resumed,
    resumedFrom,
    metafile: st.metafile ?? null,
    diffKept: st.keepDiff,
    seconds: (Date.now() - started) / 1000,
  };
}
