/** Comparing two metafiles block by block. */
import { MetafileError } from '../util/errors.js';
import { formatSize } from '../util/units.js';
import { displayLocation } from '../io/location.js';
import { imageLocationForMetafile, type Metafile } from './metafile.js';

/** Consecutive blocks [first, first+count). */
export interface BlockRange {
  first: number;
  count: number;
}

/** What differs between two lists. */
export interface Comparison {
  totalBlocks: number;
  changedBlocks: number;
  /** Virtual bytes in changed blocks (the last block counts its real length). */
  changedBytes: number;
  /** Changed blocks as ranges, in order. */
  changed: BlockRange[];
}

/** Entries compared per step: bounded memory whatever the list's length. */
const BATCH = 1 << 16;

/**
 * Refuses two lists that cannot be compared entry by entry, with the difference and its fix. `a` is the source
 * side, `b` the target (the fix re-hashes the source, which is usually local).
 */
export function assertComparable(a: Metafile, b: Metafile): void {
  const sa = a.summary;
  const sb = b.summary;
  const refuse = (why: string) => new MetafileError(why, a.name);
  if (sa.layout !== sb.layout) {
    const [vbb, native] = sa.layout === 'vbb' ? [a, b] : [b, a];
    throw new MetafileError(
      `is a VhdBlockBackup (vbb) metafile and ${native.name} a native one, which cannot be compared: run vhdsync createmeta --format vbb ${imageOf(native)}, or vhdsync createmeta ${imageOf(vbb)}`,
      vbb.name,
    );
  }
  if (sa.algorithm !== sb.algorithm) {
    throw refuse(`hash algorithms differ (${sa.algorithm} here, ${sb.algorithm} in ${b.name}): run vhdsync createmeta --hash ${sb.algorithm} ${imageOf(a)}`);
  }
  if (sa.blockSize !== sb.blockSize) {
    throw refuse(
      `block sizes differ (${formatSize(sa.blockSize)} here, ${formatSize(sb.blockSize)} in ${b.name}): run vhdsync createmeta --block-size ${sb.blockSize} ${imageOf(a)}`,
    );
  }
  const exact = sa.virtualSizeExact && sb.virtualSizeExact;
  if ((exact && sa.virtualSize !== sb.virtualSize) || sa.blockCount !== sb.blockCount) {
    throw refuse(
      `virtual sizes differ (${sa.virtualSize} bytes here, ${sb.virtualSize} in ${b.name}): resize ${imageOf(b)} to the source's size and run vhdsync createmeta on it`,
    );
  }
  if (sa.logicalSectorSize !== null && sb.logicalSectorSize !== null && sa.logicalSectorSize !== sb.logicalSectorSize) {
    throw refuse(`logical sector sizes differ (${sa.logicalSectorSize} here, ${sb.logicalSectorSize} in ${b.name}): the images are not interchangeable`);
  }
}

/** The image a metafile belongs to, for fix-it hints (the metafile itself when its name says nothing). */
function imageOf(m: Metafile): string {
  const image = imageLocationForMetafile(m.location);
  return image ? displayLocation(image) : `<image of ${m.name}>`;
}

/**
 * Entries compared as one span before entry by entry: most spans of an incremental backup are equal, and one memcmp
 * over 16 entries is far cheaper than 16 (a differing state byte over equal digests, such as zero against
 * unallocated, only sends its span to the entry-by-entry check).
 */
const SPAN = 16;

/** Yields ranges of blocks whose digests differ, in order; call assertComparable first. */
export async function* changedRanges(a: Metafile, b: Metafile): AsyncGenerator<BlockRange> {
  const total = a.summary.blockCount;
  let open: BlockRange | null = null;
  for (let first = 0; first < total; first += BATCH) {
    // Comparable lists share layout and digest, so their entries have the same stride.
    const [x, y] = await Promise.all([a.entryView(first, BATCH), b.entryView(first, BATCH)]);
    const { stride, digestOffset: at, digestLength: len } = x;
    for (let i = 0; i < x.count; i += SPAN) {
      const end = Math.min(x.count, i + SPAN);
      if (x.bytes.compare(y.bytes, i * stride, end * stride, i * stride, end * stride) === 0) continue;
      for (let k = i; k < end; k++) {
        const from = k * stride + at;
        if (x.bytes.compare(y.bytes, from, from + len, from, from + len) === 0) continue;
        const index = first + k;
        if (open && open.first + open.count === index) {
          open.count++;
        } else {
          if (open) yield open;
          open = { first: index, count: 1 };
        }
      }
    }
  }
  if (open) yield open;
}

/** Compares two lists (refusing incompatible ones) and sums up what differs. */
export async function compareMetafiles(a: Metafile, b: Metafile): Promise<Comparison> {
  assertComparable(a, b);
  const result: Comparison = { totalBlocks: a.summary.blockCount, changedBlocks: 0, changedBytes: 0, changed: [] };
  for await (const r of changedRanges(a, b)) {
    result.changed.push(r);
    result.changedBlocks += r.count;
    const last = r.first + r.count - 1;
    result.changedBytes += (r.count - 1) * a.summary.blockSize + a.blockLength(last);
  }
  return result;
}

/** Expands ranges into block indices (for callers that want a flat list; ranges are far smaller). */
export function blockIndices(ranges: Iterable<BlockRange>): number[] {
  const out: number[] = [];
  for (const r of ranges) for (let i = 0; i < r.count; i++) out.push(r.first + i);
  return out;
}
