/**
 * Planning a copy from the two metafiles: both opened, checked fresh against their images and comparable,
 * then the changed blocks listed with the digest the source's metafile expects for each.
 */
import type { Disk } from '../formats/disk.js';
import { compareMetafiles, openFreshMetafile, type Comparison, type Metafile } from '../meta/index.js';
import type { ChangedBlock } from './copy-blocks.js';

export { openFreshMetafile };

/** Entries are read from the source metafile this many at a time. */
const BATCH = 1 << 16;

/** A copy plan: both lists (open; the caller closes them) and what differs. */
export interface CopyPlan {
  source: Metafile;
  target: Metafile;
  comparison: Comparison;
}

/** Compares the source's metafile (opened here; the caller closes it) with the target's, as `check` does. */
export async function planCopy(source: Disk, targetMeta: Metafile): Promise<CopyPlan> {
  const s = await openFreshMetafile(source);
  try {
    return { source: s, target: targetMeta, comparison: await compareMetafiles(s, targetMeta) };
  } catch (err) {
    await s.close();
    throw err;
  }
}

/** The plan's changed blocks in order, each with the digest the source's list records for it. */
export async function* changedBlocksOf(plan: CopyPlan): AsyncGenerator<ChangedBlock> {
  const cursor = new DigestCursor(plan.source);
  for (const r of plan.comparison.changed) {
    for (let index = r.first; index < r.first + r.count; index++) {
      yield { index, expected: Buffer.from(await cursor.digest(index)) };
    }
  }
}

/** Random access to a list's digests in ascending order, read in batches (for the one-pass --createmeta copy). */
export class DigestCursor {
  private batch: Awaited<ReturnType<Metafile['read']>> | null = null;
  constructor(private readonly meta: Metafile) {}

  /** The digest of block `index`. */
  async digest(index: number): Promise<Buffer> {
    let b = this.batch;
    if (!b || index < b.first || index >= b.first + b.count) b = this.batch = await this.meta.read(index, BATCH);
    const k = index - b.first;
    return b.digests.subarray(k * b.digestLength, (k + 1) * b.digestLength);
  }
}
