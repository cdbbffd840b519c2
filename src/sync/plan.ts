/**
 * Planning a copy from the two metafiles: both opened, checked fresh against their images and comparable,
 * then the changed blocks listed with the digest the source's metafile expects for each, and, when both lists
 * have a second level (docs/metafile.md, version 3), the sub-blocks inside each changed block that differ.
 */
import type { Disk } from '../formats/disk.js';
import { compareMetafiles, type Comparison } from '../meta/compare.js';
import { openFreshMetafile } from '../meta/fresh.js';
import type { SubLevel } from '../meta/header.js';
import type { EntryView, Metafile } from '../meta/metafile.js';
import type { ChangedBlock, ChangedParts } from './copy-blocks.js';

export { openFreshMetafile };

/** Entries are read from the source metafile this many at a time. */
const BATCH = 1 << 16;
/** Sub-digest slots are read this many blocks at a time. */
const SUB_BATCH = 1 << 10;

/** A copy plan: both lists (open; the caller closes them) and what differs. */
export interface CopyPlan {
  source: Metafile;
  target: Metafile;
  comparison: Comparison;
  /** The second level both lists share, or null when either lacks it (whole changed blocks move). */
  sub: SubLevel | null;
  /** Bytes the copy will move: the changed sub-blocks' bytes with a shared second level, else the changed blocks'. */
  moveBytes: number;
}

/** The second level two lists share (same sub-block size and digest), or null. */
export function sharedSubLevel(a: Metafile, b: Metafile): SubLevel | null {
  const x = a.summary.sub;
  const y = b.summary.sub;
  return x && y && x.size === y.size && x.algorithm === y.algorithm ? x : null;
}

/**
 * Compares the source's metafile (`sourceList`, or opened here and checked fresh; the caller closes it) with the
 * target's, as `check` does.
 */
export async function planCopy(source: Disk, targetMeta: Metafile, sourceList?: Metafile): Promise<CopyPlan> {
  const s = sourceList ?? (await openFreshMetafile(source));
  try {
    const comparison = await compareMetafiles(s, targetMeta);
    const sub = sharedSubLevel(s, targetMeta);
    const plan: CopyPlan = { source: s, target: targetMeta, comparison, sub, moveBytes: comparison.changedBytes };
    if (sub) {
      plan.moveBytes = 0;
      for await (const b of changedBlocksOf(plan)) plan.moveBytes += bytesOf(b, s);
    }
    return plan;
  } catch (err) {
    if (!sourceList) await s.close();
    throw err;
  }
}

/** Bytes a changed block moves: its changed sub-blocks, or all of it. */
function bytesOf(b: ChangedBlock, list: Metafile): number {
  const length = list.blockLength(b.index);
  if (!b.parts) return length;
  let n = 0;
  for (const c of b.parts.changed) n += Math.min(b.parts.size, length - c.sub * b.parts.size);
  return n;
}

/**
 * The plan's changed blocks in order, each with the digest the source's list records for it and, with a shared
 * second level, the sub-blocks that differ from the target's (each with the source's sub-digest).
 */
export async function* changedBlocksOf(plan: CopyPlan): AsyncGenerator<ChangedBlock> {
  const cursor = new DigestCursor(plan.source);
  const subs = plan.sub ? { source: new SubCursor(plan.source), target: new SubCursor(plan.target) } : null;
  for (const r of plan.comparison.changed) {
    for (let index = r.first; index < r.first + r.count; index++) {
      const block: ChangedBlock = { index, expected: Buffer.from(await cursor.digest(index)) };
      if (subs) {
        const parts = changedParts(plan.sub!, plan.source.subCount(index), await subs.source.slot(index), await subs.target.slot(index));
        // Block digests that differ over equal sub-digests mean two sub-blocks collided: the whole block moves.
        if (parts.changed.length) block.parts = parts;
      }
      yield block;
    }
  }
}

/** The sub-blocks whose digests differ between two slots of `count` sub-digests. */
export function changedParts(sub: SubLevel, count: number, source: Buffer, target: Buffer): ChangedParts {
  const len = sub.digestLength;
  const changed: ChangedParts['changed'] = [];
  for (let k = 0; k < count; k++) {
    if (source.compare(target, k * len, (k + 1) * len, k * len, (k + 1) * len) !== 0) changed.push({ sub: k, expected: Buffer.from(source.subarray(k * len, (k + 1) * len)) });
  }
  return { size: sub.size, algorithm: sub.algorithm, changed };
}

/** Random access to a list's digests in ascending order, read in batches as stored (a list in memory is not copied). */
export class DigestCursor {
  private view: EntryView | null = null;
  constructor(private readonly meta: Metafile) {}

  /** The digest of block `index` (a view into the batch: copy it to keep it). */
  async digest(index: number): Promise<Buffer> {
    let v = this.view;
    if (!v || index < v.first || index >= v.first + v.count) v = this.view = await this.meta.entryView(index, BATCH);
    const at = (index - v.first) * v.stride + v.digestOffset;
    return v.bytes.subarray(at, at + v.digestLength);
  }
}

/** Random access to a list's sub-digest slots in ascending order, read in batches. */
export class SubCursor {
  private first = -1;
  private bytes: Buffer | null = null;
  private readonly slotSize: number;
  constructor(private readonly meta: Metafile) {
    const s = meta.summary;
    this.slotSize = (s.blockSize / s.sub!.size) * s.sub!.digestLength;
  }

  /** The sub-digest slot of block `index` (its digests back to back, spare slots of the last block zero). */
  async slot(index: number): Promise<Buffer> {
    if (!this.bytes || index < this.first || (index - this.first + 1) * this.slotSize > this.bytes.length) {
      this.bytes = await this.meta.readSubs(index, SUB_BATCH);
      this.first = index;
    }
    const k = index - this.first;
    return this.bytes.subarray(k * this.slotSize, (k + 1) * this.slotSize);
  }
}
