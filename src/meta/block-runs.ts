/** A disk's blocks grouped into runs by what hashing them needs, from allocation tables only (no data read). */
import type { Disk, Extent } from '../formats/disk.js';

/** `status` is asked about this much of the disk at a time, so huge fragmented images need no huge extent list. */
const STATUS_WINDOW = 1 << 30;

/** A run of consecutive blocks handled alike. */
export interface Run {
  first: number;
  count: number;
  kind: 'read' | 'unallocated' | 'zero';
}

/** Classifies blocks from `disk.status` into runs: unallocated, zero (no read needed), or read (at most `maxRead` blocks). */
export async function* planRuns(disk: Disk, blockSize: number, maxRead: number): AsyncGenerator<Run> {
  const window = Math.max(blockSize, Math.floor(STATUS_WINDOW / blockSize) * blockSize);
  let pending: Run | null = null;
  for (let base = 0; base < disk.virtualSize; base += window) {
    const len = Math.min(window, disk.virtualSize - base);
    const extents = await disk.status(base, len);
    let ei = 0;
    for (let off = base; off < base + len; off += blockSize) {
      const end = Math.min(off + blockSize, disk.virtualSize);
      while (ei < extents.length && extents[ei].offset + extents[ei].length <= off) ei++;
      const kind = classify(extents, ei, off, end);
      const index = off / blockSize;
      const limit = kind === 'read' ? maxRead : Number.MAX_SAFE_INTEGER;
      if (pending && pending.kind === kind && pending.count < limit) {
        pending.count++;
      } else {
        if (pending) yield pending;
        pending = { first: index, count: 1, kind };
      }
    }
  }
  if (pending) yield pending;
}

/** What block [start, end) needs, from extents sorted by offset starting at index `from`. Gaps count as data. */
function classify(extents: Extent[], from: number, start: number, end: number): Run['kind'] {
  let allUnallocated = true;
  let covered = start;
  for (let i = from; i < extents.length && extents[i].offset < end; i++) {
    const e = extents[i];
    if (e.offset > covered) return 'read';
    if (e.state === 'data') return 'read';
    if (e.state !== 'unallocated') allUnallocated = false;
    covered = Math.max(covered, e.offset + e.length);
  }
  if (covered < end) return 'read';
  return allUnallocated ? 'unallocated' : 'zero';
}
