/**
 * What differs between a source and a base, as the ranges a delta stream must carry (zeros included), found the
 * cheapest way that is exact: from allocation when the base is an ancestor in the source's chain, from digests
 * when both have fresh metafiles, else by reading and comparing both.
 */
import type { Disk, Extent } from '../formats/disk.js';
import { chainOf } from '../formats/index.js';
import { windowsAbsolutePath, windowsBasename, windowsRelativePath } from '../formats/vhd/parent-locator.js';
import { displayLocation, type Location } from '../io/location.js';
import type { Metafile } from '../meta/metafile.js';
import { MetafileError, NotFoundError, UsageError } from '../util/errors.js';
import { parseGuidBE, ZERO_GUID } from '../util/guid.js';
import { prefetch } from '../util/prefetch.js';
import { VHD_EPOCH_OFFSET } from '../formats/vhd/footer.js';
import { childLocator } from '../formats/vhdx/create.js';
import { contentOfDisk, normalizeRanges, PIECE, READS_IN_FLIGHT, splitRanges, type ByteRange, type ContentSource, type DeltaBase } from './content.js';

/** How a delta was found. */
export type DeltaMethod = 'allocation' | 'digest' | 'content';

/** Content comparison works on runs of this size: small enough that a few changed sectors send little. */
export const COMPARE_GRANULE = 64 << 10;
const STATUS_WINDOW = 1 << 30;

/** Options for deltaContent. */
export interface DeltaOptions {
  /** Where the delta will finally live, for a relative parent locator. */
  finalLocation?: Location | null;
  /**
   * Lists known to describe both disks' current content (a repository's points, checked as they are read): the
   * delta then comes from their digests, as from fresh metafiles. The caller keeps and closes them.
   */
  lists?: { source: Metafile; base: Metafile };
}

/** The content of `src` that differs from `base`, and how that was found. */
export async function deltaContent(src: Disk, base: Disk, opts: DeltaOptions = {}): Promise<{ source: ContentSource; method: DeltaMethod }> {
  if (src.virtualSize !== base.virtualSize) {
    throw new UsageError(`--relative-to: the base has ${base.virtualSize} bytes of virtual size, the source ${src.virtualSize}`, displayLocation(base.location));
  }
  const info = await deltaBase(base, opts.finalLocation ?? null);
  const depth = await ancestorDepth(src, base);
  if (depth !== null) {
    const above = await rangesAbove(src, depth);
    return { source: contentOfDisk(src, above.ranges, info, above.zeros), method: 'allocation' };
  }
  if (opts.lists) {
    (await metafileModules()).assertComparable(opts.lists.source, opts.lists.base);
    return { source: contentOfDisk(src, await digestRanges(opts.lists.source, opts.lists.base, src.virtualSize), info), method: 'digest' };
  }
  const metas = await freshMetafiles(src, base);
  if (metas) {
    try {
      return { source: contentOfDisk(src, await digestRanges(metas[0], metas[1], src.virtualSize), info), method: 'digest' };
    } finally {
      await Promise.all(metas.map((m) => m.close()));
    }
  }
  return { source: contentOfDisk(src, await comparedRanges(src, base), info), method: 'content' };
}

/** What a differencing image records about the base. */
async function deltaBase(base: Disk, finalLocation: Location | null): Promise<DeltaBase> {
  const id = await base.identity();
  const relative = finalLocation ? windowsRelativePath(finalLocation, base.location) : null;
  const paths = base.location.store.paths;
  return {
    uniqueId: base.format === 'vhd' ? parseGuidBE(id.contentId) : Buffer.from(ZERO_GUID),
    timestamp: base.format === 'vhd' ? id.timestamp : Math.max(0, Math.floor(id.mtimeMs / 1000) - VHD_EPOCH_OFFSET),
    name: windowsBasename(base.location.path),
    locatorPath: relative ?? windowsAbsolutePath(base.location),
    locatorCode: relative ? 'W2ru' : 'W2ku',
    format: base.format,
    backingPath: finalLocation && finalLocation.store === base.location.store ? paths.relative(paths.dirname(finalLocation.path), base.location.path) : base.location.path,
    ...(base.format === 'vhdx'
      ? { vhdxParent: { locator: childLocator(base, id.contentId, finalLocation), logicalSectorSize: base.logicalSectorSize, physicalSectorSize: base.physicalSectorSize } }
      : {}),
  };
}

/** The depth of `base` in `src`'s chain (the same file, unchanged), or null. */
async function ancestorDepth(src: Disk, base: Disk): Promise<number | null> {
  const chain = chainOf(src);
  const want = await base.identity();
  for (let k = 1; k < chain.length; k++) {
    const d = chain[k];
    if (d.location.store.kind !== base.location.store.kind || d.location.path !== base.location.path) continue;
    const id = await d.identity();
    if (id.contentId === want.contentId && id.fileSize === want.fileSize && id.mtimeMs === want.mtimeMs) return k;
  }
  return null;
}

/** Extents decided by the layers above depth `k` (everything else reads as it does in the base), and which of them read as zeros. */
async function rangesAbove(src: Disk, k: number): Promise<{ ranges: ByteRange[]; zeros: ByteRange[] }> {
  const out: ByteRange[] = [];
  const zeros: ByteRange[] = [];
  await forStatus(src, (e) => {
    if (e.depth >= k) return;
    out.push({ offset: e.offset, length: e.length });
    if (e.state !== 'data') zeros.push({ offset: e.offset, length: e.length });
  });
  return { ranges: normalizeRanges(out), zeros: normalizeRanges(zeros) };
}

async function forStatus(disk: Disk, fn: (e: Extent) => void): Promise<void> {
  for (let at = 0; at < disk.virtualSize; at += STATUS_WINDOW) {
    for (const e of await disk.status(at, Math.min(STATUS_WINDOW, disk.virtualSize - at))) fn(e);
  }
}

let metaModules: Promise<typeof import('../meta/fresh.js') & typeof import('../meta/compare.js')> | undefined;

/**
 * meta/fresh.js and meta/compare.js (not meta/index.js, the hashing pipeline), loaded on first use: only a delta needs
 * metafiles, and they bring the hashing addons (two dlopens, about 20 ms of every stream's start-up). One import
 * after the other, once: jest's ESM loader fails dynamic imports in flight at once that share a dependency.
 */
function metafileModules(): NonNullable<typeof metaModules> {
  metaModules ??= (async () => ({ ...(await import('../meta/fresh.js')), ...(await import('../meta/compare.js')) }))();
  return metaModules;
}

/** Both images' metafiles when both exist, are fresh and comparable; null otherwise (content comparison then). */
async function freshMetafiles(src: Disk, base: Disk): Promise<[Metafile, Metafile] | null> {
  const { openFreshMetafile, assertComparable } = await metafileModules();
  const open = async (d: Disk) => {
    try {
      return await openFreshMetafile(d);
    } catch (err) {
      if (err instanceof MetafileError || err instanceof NotFoundError) return null;
      throw err;
    }
  };
  const a = await open(src);
  const b = a ? await open(base) : null;
  if (a && b) {
    try {
      assertComparable(a, b);
      return [a, b];
    } catch (err) {
      if (!(err instanceof MetafileError)) throw err;
    }
  }
  await a?.close();
  await b?.close();
  return null;
}

/** Blocks whose digests differ, as byte ranges. */
async function digestRanges(a: Metafile, b: Metafile, virtualSize: number): Promise<ByteRange[]> {
  const bs = a.summary.blockSize;
  const { changedRanges } = await metafileModules();
  const out: ByteRange[] = [];
  for await (const r of changedRanges(a, b)) {
    const offset = r.first * bs;
    out.push({ offset, length: Math.min(virtualSize, (r.first + r.count) * bs) - offset });
  }
  return normalizeRanges(out);
}

/** Reads both images where either may hold something and keeps the granules that differ. */
async function comparedRanges(src: Disk, base: Disk): Promise<ByteRange[]> {
  const maybe: ByteRange[] = [];
  const collect = (e: Extent) => {
    if (e.state !== 'unallocated') maybe.push({ offset: e.offset, length: e.length });
  };
  await forStatus(src, collect);
  await forStatus(base, collect);
  const size = src.virtualSize;
  const candidates = normalizeRanges(maybe).map((r) => {
    const start = Math.floor(r.offset / COMPARE_GRANULE) * COMPARE_GRANULE;
    return { offset: start, length: Math.min(size, Math.ceil((r.offset + r.length) / COMPARE_GRANULE) * COMPARE_GRANULE) - start };
  });
  const out: ByteRange[] = [];
  const load = (p: ByteRange) => Promise.all([src.read(p.offset, p.length), base.read(p.offset, p.length)]);
  for await (const { item, value: [x, y] } of prefetch(splitRanges(normalizeRanges(candidates), PIECE, COMPARE_GRANULE * 64), load, READS_IN_FLIGHT)) {
    for (let o = 0; o < item.length; o += COMPARE_GRANULE) {
      const end = Math.min(item.length, o + COMPARE_GRANULE);
      if (x.compare(y, o, end, o, end) !== 0) out.push({ offset: item.offset + o, length: end - o });
    }
  }
  return normalizeRanges(out);
}
