/**
 * VHD images (fixed, dynamic, differencing) as a Disk, and the 'vhd' format driver.
 *
 * Layout written here: footer copy at 0, dynamic header at 512, BAT at 1536, parent locator data,
 * then blocks (sector bitmap + data, data 4 KiB-aligned), footer at the end.
 *
 * Durability of writes to dynamic/differencing images (crash windows):
 * - Allocating a block first writes a footer at the block's future end (extending the file), then
 *   overwrites the old trailing footer with padding and the new block's bitmap, then the data. The
 *   BAT entry stays in memory. A crash now leaves an orphaned, unreferenced region: readers see the
 *   content as of the last flush. If the file system persisted the bitmap but not the new footer,
 *   the file has no trailing footer and readers (ours, qemu) use the copy at offset 0.
 * - Presence bits set in existing bitmaps and BAT entries are written only by flush(), after an
 *   fsync of the data: on disk, metadata never points at data that is not durable. A crash between
 *   the metadata writes leaves some entries/bits old, each consistent (512-byte sector writes).
 * - The footer's content never changes after creation, so its copies need no rewrite except at a
 *   new end of file.
 */
import type {
  CreateOptions,
  Disk,
  DiskIdentity,
  DiskInfo,
  DiskType,
  Extent,
  FileRun,
  FormatDriver,
  OpenOptions,
  ParentExpectation,
  ParentOpener,
  StatusOptions,
} from '../disk.js';
import { closeBoth, identityStat } from '../disk.js';
import type { Location } from '../../io/location.js';
import { displayLocation } from '../../io/location.js';
import { readFully, type RandomAccessFile } from '../../io/store.js';
import { evictOneClean } from '../../util/cache.js';
import { CorruptImageError, ParentError, UnsupportedError, UsageError } from '../../util/errors.js';
import { formatGuidBE, newGuid, parseGuidBE, ZERO_GUID } from '../../util/guid.js';
import { isAllZero } from '../../util/struct.js';
import { ZERO_RUN, zeros } from '../../util/aligned.js';
import { alignUp, formatSize, isPowerOfTwo } from '../../util/units.js';
import { checkRange, pushExtent } from '../ranges.js';
import { batBytes, emptyBatBytes, parseBat, serializeBat, UNALLOCATED } from './bat.js';
import { DYNAMIC_HEADER_SIZE, HEADER_VERSION, parseDynamicHeader, serializeDynamicHeader, type DynamicHeader } from './dynamic-header.js';
import {
  FEATURE_RESERVED,
  FOOTER_SIZE,
  FORMAT_VERSION,
  fourCC,
  hasFooterCookie,
  HOST_OS_WINDOWS,
  MAX_VHD_SIZE,
  parseFooter,
  serializeFooter,
  VHD_EPOCH_OFFSET,
  vhdNow,
  vhdTimeToIso,
  type VhdFooter,
} from './footer.js';
import { chsForSize, virtualSizeOf, type Geometry } from './geometry.js';
import { containerSignatureOf, SIGNATURE_HEAD_BYTES } from '../signatures.js';
import {
  checkLocatorBounds,
  decodeLocatorData,
  encodeWindowsPath,
  isKnownPlatform,
  LOCATOR_COUNT,
  parentCandidates,
  reservedBytes,
  windowsAbsolutePath,
  windowsBasename,
  windowsRelativePath,
  type LocatorEntry,
  type ParentHint,
} from './parent-locator.js';
import { bitmapBytes, isSectorSet, sectorRuns, setSectors } from './sector-bitmap.js';

const SECTOR = 512;
/** Default block size of new dynamic/differencing images (what Windows and qemu use). */
export const DEFAULT_BLOCK_SIZE = 2 << 20;
/** Block sizes outside this range are refused: tiny ones make absurd tables, huge ones absurd buffers. */
export const MIN_BLOCK_SIZE = 512;
export const MAX_BLOCK_SIZE = 256 << 20;
/**
 * Creator application of images written here. qemu takes a VHD's size from its CHS geometry unless the creator is
 * one it trusts for current_size, so a VHD marked with a name of our own would lose its tail in qemu/KVM (a 24 MiB
 * disk reads as 23.9 MiB). We write Hyper-V's marker, as Windows' own tools do (docs/decisions/0005-vhd-creator.md).
 */
export const CREATOR_APP = 'win ';
/** Hyper-V writes 10.0 here; qemu and libvhdi do not look at it. */
const CREATOR_VERSION = 0x000a0000;
/** New blocks' data starts on this boundary, as Windows aligns it, so guest 4 KiB I/O stays aligned. */
const DATA_ALIGN = 4096;
/** Memory for cached sector bitmaps (512 bytes each for 2 MiB blocks, 64 KiB for 256 MiB blocks). */
const BITMAP_CACHE_BYTES = 32 << 20;
/** Changed bitmaps held before write() flushes them itself, so memory stays bounded without flush() calls. */
const DIRTY_BITMAP_BYTES = 16 << 20;
/** New BAT entries held before write() flushes them itself. */
const DIRTY_BAT_ENTRIES = 1 << 16;
/** Block tables larger than this (64 MiB in memory) are refused: only absurdly small blocks need them. */
export const MAX_BAT_ENTRIES = 1 << 24;
/** Positioned reads in flight for one read() call. */
const IO_PARALLEL = 8;
/** BAT entries per 512-byte sector of the table. */
const ENTRIES_PER_SECTOR = SECTOR / 4;

/** A piece of a read: from this file, from the parent, or zeros. */
type Segment = { kind: 'file'; v: number; n: number; f: number } | { kind: 'parent' | 'zero'; v: number; n: number };

/** The dynamic/differencing part of an opened image. */
interface Sparse {
  headerOffset: number;
  header: DynamicHeader;
  /** Entries for the blocks the virtual size needs (the on-disk table may be longer). */
  bat: Uint32Array;
  bitmapSize: number;
  /** Where the next block may go: after every structure and block, at the trailing footer. */
  nextFree: number;
  parentHints: ParentHint[];
}

/** What `openVhd` found, handed to the constructor. */
interface VhdState {
  footer: VhdFooter;
  footerPos: number;
  footerAtEnd: boolean;
  virtualSize: number;
  sparse: Sparse | null;
}

/** An opened VHD image. */
export class VhdDisk implements Disk {
  readonly format = 'vhd' as const;
  readonly logicalSectorSize = SECTOR;
  readonly physicalSectorSize = SECTOR;
  readonly type: DiskType;
  readonly virtualSize: number;
  readonly blockSize: number;
  parent: Disk | null = null;

  private readonly bitmaps = new Map<number, Buffer>();
  private readonly dirtyBitmaps = new Set<number>();
  private readonly dirtyBat = new Set<number>();
  private footerDirty: boolean;
  private lock: Promise<unknown> = Promise.resolve();
  private closed = false;

  constructor(
    readonly file: RandomAccessFile,
    readonly location: Location,
    private readonly state: VhdState,
    private readonly openedWritable: boolean,
  ) {
    this.type = state.footer.diskType;
    this.virtualSize = state.virtualSize;
    this.blockSize = state.sparse ? state.sparse.header.blockSize : 0;
    // A dynamic file interrupted while growing has no trailing footer: put one back on the next flush.
    this.footerDirty = openedWritable && !state.footerAtEnd;
  }

  /** The footer in use (the trailing one, or the copy at offset 0 when the end was damaged). */
  get footer(): VhdFooter {
    return this.state.footer;
  }

  /** The dynamic header, or null for fixed images. */
  get dynamicHeader(): DynamicHeader | null {
    return this.state.sparse?.header ?? null;
  }

  get writable(): boolean {
    return this.openedWritable && this.file.writable && !this.closed;
  }

  private get subject(): string {
    return displayLocation(this.location);
  }

  private get sparse(): Sparse {
    if (!this.state.sparse) throw new Error('internal: fixed VHD has no block table');
    return this.state.sparse;
  }

  async read(offset: number, length: number, into?: Buffer): Promise<Buffer> {
    checkRange(this, offset, length);
    if (into && into.length < length) throw new RangeError(`read buffer of ${into.length} bytes is shorter than ${length}`);
    const out = into ? into.subarray(0, length) : Buffer.allocUnsafe(length);
    const segs = await this.plan(offset, length);
    await forEachLimited(segs, IO_PARALLEL, async (s) => {
      const dst = out.subarray(s.v - offset, s.v - offset + s.n);
      if (s.kind !== 'file') {
        if (s.kind === 'zero') dst.fill(0);
        else await this.readParent(s.v, dst);
      } else {
        const got = await this.file.read(s.f, s.n, dst);
        // Only a file truncated after opening can end early; what is missing reads as zeros.
        if (got.length < s.n) dst.fill(0, got.length);
      }
    });
    return out;
  }

  async status(offset: number, length: number, opts: StatusOptions = {}): Promise<Extent[]> {
    checkRange(this, offset, length);
    const out: Extent[] = [];
    for (const s of await this.plan(offset, length)) {
      if (s.kind === 'file') pushExtent(out, { offset: s.v, length: s.n, state: 'data', depth: 0 });
      else if (s.kind === 'zero') pushExtent(out, { offset: s.v, length: s.n, state: 'unallocated', depth: 0 });
      else if (opts.ownOnly) pushExtent(out, { offset: s.v, length: s.n, state: 'unallocated', depth: 1 });
      else {
        const p = this.requireParent();
        const avail = Math.max(0, Math.min(s.n, p.virtualSize - s.v));
        if (avail > 0) for (const e of await p.status(s.v, avail)) pushExtent(out, { ...e, depth: e.depth + 1 });
        pushExtent(out, { offset: s.v + avail, length: s.n - avail, state: 'unallocated', depth: 1 });
      }
    }
    return out;
  }

  async mapFile(offset: number, length: number): Promise<FileRun[] | null> {
    checkRange(this, offset, length);
    if (this.writable || this.location.store.kind !== 'local') return null;
    const out: FileRun[] = [];
    for (const s of await this.plan(offset, length)) {
      if (s.kind === 'file') out.push({ length: s.n, path: this.location.path, fileOffset: s.f });
      else if (s.kind === 'zero') out.push({ length: s.n, path: null, fileOffset: 0 });
      else {
        const p = this.requireParent();
        const avail = Math.max(0, Math.min(s.n, p.virtualSize - s.v));
        const runs = avail > 0 ? await p.mapFile?.(s.v, avail) : [];
        if (!runs) return null;
        out.push(...runs);
        if (avail < s.n) out.push({ length: s.n - avail, path: null, fileOffset: 0 });
      }
    }
    return out;
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    checkRange(this, offset, data.byteLength);
    this.ensureWritable();
    const buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    await this.locked(async () => {
      if (!this.state.sparse) return this.file.write(offset, buf);
      await this.forBlocks(offset, buf.length, (b, inBlock, v, n) => this.writeInBlock(b, inBlock, buf.subarray(v - offset, v - offset + n)));
    });
  }

  async writeZeroes(offset: number, length: number): Promise<void> {
    checkRange(this, offset, length);
    this.ensureWritable();
    await this.locked(async () => {
      if (!this.state.sparse) {
        for (let done = 0; done < length; done += ZERO_RUN) await this.file.write(offset + done, zeros(length - done));
        return;
      }
      const { bat } = this.sparse;
      await this.forBlocks(offset, length, async (b, inBlock, v, n) => {
        if (bat[b] === UNALLOCATED) {
          // Dynamic: already zeros. Differencing: the parent shows through, so mask it only where it has something.
          if (this.type === 'dynamic' || !(await this.parentHasContent(v, n))) return;
        }
        for (let done = 0; done < n; done += ZERO_RUN) await this.writeInBlock(b, inBlock + done, zeros(n - done));
      });
    });
  }

  async flush(): Promise<void> {
    if (!this.writable) return;
    await this.locked(() => this.flushLocked());
  }

  /** flush() for callers already holding the lock. */
  private async flushLocked(): Promise<void> {
    if (this.dirtyBitmaps.size || this.dirtyBat.size || this.footerDirty) {
      // Data first: the bitmaps and BAT entries written below must never point at data still in flight.
      await this.file.flush();
      await this.writeDirtyMetadata();
    }
    await this.file.flush();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    try {
      await this.flush();
    } finally {
      this.closed = true;
      await closeBoth(this.file, this.parent);
    }
  }

  async setContentId(id: string): Promise<void> {
    this.ensureWritable();
    await this.locked(async () => {
      this.state.footer = { ...this.state.footer, uniqueId: parseGuidBE(id) };
      const footer = serializeFooter(this.state.footer);
      // The footer readers use goes first: a kill before the copy at 0 is rewritten already shows the new id.
      if (this.state.footerAtEnd) await this.file.write(this.state.footerPos, footer);
      if (this.state.sparse) await this.file.write(0, footer);
      await this.flushLocked();
    });
  }

  async identity(): Promise<DiskIdentity> {
    const st = await identityStat(this.file, this.location);
    return {
      format: 'vhd',
      contentId: formatGuidBE(this.footer.uniqueId),
      timestamp: this.footer.timestamp,
      fileSize: st?.size ?? (await this.file.size()),
      mtimeMs: st?.mtimeMs ?? 0,
    };
  }

  async info(): Promise<DiskInfo> {
    const f = this.footer;
    const info: DiskInfo = {
      file: this.subject,
      format: 'vhd',
      type: this.type,
      virtualSize: this.virtualSize,
      blockSize: this.blockSize,
      logicalSectorSize: this.logicalSectorSize,
      physicalSectorSize: this.physicalSectorSize,
      fileSize: await this.file.size(),
      creatorApp: f.creatorApp.replace(/\0/g, '\\0'),
      creatorVersion: `${f.creatorVersion >>> 16}.${f.creatorVersion & 0xffff}`,
      creatorHostOs: fourCC(f.creatorHostOs),
      created: vhdTimeToIso(f.timestamp),
      uniqueId: formatGuidBE(f.uniqueId),
      currentSize: f.currentSize,
      originalSize: f.originalSize,
      geometry: { ...f.geometry },
      footerChecksum: f.checksumOk ? 'ok' : 'wrong (ignored)',
      footerSource: this.state.footerAtEnd ? 'end of file' : 'copy at offset 0 (trailing footer missing)',
      savedState: f.savedState !== 0,
    };
    const sp = this.state.sparse;
    if (sp) {
      info.totalBlocks = sp.bat.length;
      info.allocatedBlocks = sp.bat.reduce((n, e) => n + (e === UNALLOCATED ? 0 : 1), 0);
      info.headerChecksum = sp.header.checksumOk ? 'ok' : 'wrong (ignored)';
    }
    if (sp && this.type === 'differencing') {
      info.parentUniqueId = formatGuidBE(sp.header.parentUniqueId);
      info.parentName = sp.header.parentUnicodeName;
      info.parentTimestamp = vhdTimeToIso(sp.header.parentTimestamp);
      info.parentLocators = sp.parentHints.filter((h) => h.source !== 'ParentUnicodeName').map((h) => `${h.source}: ${h.path}`);
      info.parent = this.parent ? displayLocation(this.parent.location) : null;
    }
    return info;
  }

  /** Splits the virtual range into the pieces each backing store supplies, merging neighbours. */
  private async plan(offset: number, length: number): Promise<Segment[]> {
    const segs: Segment[] = [];
    const push = (s: Segment) => {
      const last = segs[segs.length - 1];
      if (last && last.kind === s.kind && last.v + last.n === s.v && (s.kind !== 'file' || (last.kind === 'file' && last.f + last.n === s.f))) {
        last.n += s.n;
      } else segs.push(s);
    };
    if (!this.state.sparse) {
      if (length) push({ kind: 'file', v: offset, n: length, f: offset });
      return segs;
    }
    const { bat, bitmapSize } = this.state.sparse;
    const differencing = this.type === 'differencing';
    await this.forBlocks(offset, length, async (b, inBlock, v, n) => {
      const entry = bat[b];
      if (entry === UNALLOCATED) return push({ kind: differencing ? 'parent' : 'zero', v, n });
      const data = entry * SECTOR + bitmapSize;
      if (!differencing) return push({ kind: 'file', v, n, f: data + inBlock });
      const bm = await this.bitmap(b);
      const first = Math.floor(inBlock / SECTOR);
      const last = Math.floor((inBlock + n - 1) / SECTOR);
      const blockStart = v - inBlock;
      for (const r of sectorRuns(bm, first, last - first + 1)) {
        const s = Math.max(inBlock, r.first * SECTOR);
        const e = Math.min(inBlock + n, (r.first + r.count) * SECTOR);
        push(r.present ? { kind: 'file', v: blockStart + s, n: e - s, f: data + s } : { kind: 'parent', v: blockStart + s, n: e - s });
      }
    });
    return segs;
  }

  /** Calls `fn` for each block-sized piece of [offset, offset+length), in order. */
  private async forBlocks(
    offset: number,
    length: number,
    fn: (block: number, inBlock: number, v: number, n: number) => Promise<unknown> | unknown,
  ): Promise<void> {
    const bs = this.blockSize;
    for (let v = offset; v < offset + length; ) {
      const b = Math.floor(v / bs);
      const inBlock = v - b * bs;
      const n = Math.min(bs - inBlock, offset + length - v);
      await fn(b, inBlock, v, n);
      v += n;
    }
  }

  /** The sector bitmap of allocated block `b`, cached. */
  private async bitmap(b: number): Promise<Buffer> {
    const cached = this.bitmaps.get(b);
    if (cached) return cached;
    const { bat, bitmapSize } = this.sparse;
    const bm = await readFully(this.file, bat[b] * SECTOR, bitmapSize);
    if (!bm) throw new CorruptImageError(`sector bitmap of block ${b} lies past the end of the file`, this.subject);
    // Another caller may have loaded (and since modified) it while we waited: theirs wins.
    const again = this.bitmaps.get(b);
    if (again) return again;
    if (this.bitmaps.size * bitmapSize >= BITMAP_CACHE_BYTES) evictOneClean(this.bitmaps, this.dirtyBitmaps);
    this.bitmaps.set(b, bm);
    return bm;
  }

  private requireParent(): Disk {
    if (!this.parent) throw new ParentError('differencing image opened without its parent', this.subject);
    return this.parent;
  }

  /** Reads the parent's content at `v` into `dst`; beyond a smaller parent's end the content is zeros. */
  private async readParent(v: number, dst: Buffer): Promise<void> {
    const p = this.requireParent();
    const avail = Math.max(0, Math.min(dst.length, p.virtualSize - v));
    if (avail > 0) {
      const part = dst.subarray(0, avail);
      const got = await p.read(v, avail, part);
      if (got.buffer !== part.buffer || got.byteOffset !== part.byteOffset) got.copy(part);
    }
    dst.fill(0, avail);
  }

  /** True when the parent chain has data or zero-state content in [v, v+n) that a child must mask. */
  private async parentHasContent(v: number, n: number): Promise<boolean> {
    const p = this.requireParent();
    const avail = Math.max(0, Math.min(n, p.virtualSize - v));
    if (avail === 0) return false;
    return (await p.status(v, avail)).some((e) => e.state === 'data');
  }

  private ensureWritable(): void {
    if (!this.writable) throw new UsageError('image is not open for writing', this.subject);
  }

  /** Runs mutations one at a time: block allocation and bitmap updates must not interleave. */
  private locked<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.lock.then(fn);
    this.lock = run.catch(() => {});
    return run;
  }

  /** Writes `piece` at `inBlock` of block `b`, allocating the block and setting presence bits. */
  private async writeInBlock(b: number, inBlock: number, piece: Buffer): Promise<void> {
    const sp = this.sparse;
    if (sp.bat[b] === UNALLOCATED) await this.allocate(b);
    const data = sp.bat[b] * SECTOR + sp.bitmapSize;
    if (this.type !== 'differencing') {
      await this.file.write(data + inBlock, piece);
      return this.autoFlush();
    }

    const bm = await this.bitmap(b);
    const s0 = Math.floor(inBlock / SECTOR);
    const s1 = Math.ceil((inBlock + piece.length) / SECTOR);
    const head = inBlock - s0 * SECTOR;
    const tail = s1 * SECTOR - (inBlock + piece.length);
    let buf = piece;
    let at = inBlock;
    if ((head && !isSectorSet(bm, s0)) || (tail && !isSectorSet(bm, s1 - 1))) {
      // A sector that becomes present must hold all its bytes: take the untouched part from where it
      // reads now (the parent, or this file when already present).
      buf = Buffer.alloc((s1 - s0) * SECTOR);
      at = s0 * SECTOR;
      const blockStart = b * this.blockSize;
      const fill = async (sector: number) => {
        const dst = buf.subarray((sector - s0) * SECTOR, (sector - s0 + 1) * SECTOR);
        if (isSectorSet(bm, sector)) await this.file.read(data + sector * SECTOR, SECTOR, dst);
        else await this.readParent(blockStart + sector * SECTOR, dst);
      };
      if (head) await fill(s0);
      if (tail && (s1 - 1 !== s0 || !head)) await fill(s1 - 1);
      piece.copy(buf, head);
    }
    await this.file.write(data + at, buf);
    setSectors(bm, s0, s1 - s0);
    this.dirtyBitmaps.add(b);
    await this.autoFlush();
  }

  /** Flushes when so much metadata waits that memory would grow without bound (a long write with no flush()). */
  private async autoFlush(): Promise<void> {
    if (this.dirtyBitmaps.size * this.sparse.bitmapSize >= DIRTY_BITMAP_BYTES || this.dirtyBat.size >= DIRTY_BAT_ENTRIES) {
      await this.flushLocked();
    }
  }

  /** Appends block `b` at the end of the file (see the crash windows at the top of this file). */
  private async allocate(b: number): Promise<void> {
    const sp = this.sparse;
    const bitmapPos = alignUp(sp.nextFree + sp.bitmapSize, DATA_ALIGN) - sp.bitmapSize;
    const blockEnd = bitmapPos + sp.bitmapSize + this.blockSize;
    if (bitmapPos / SECTOR >= UNALLOCATED) {
      throw new UnsupportedError('the file would outgrow what a VHD block table can address (2 TiB)', this.subject);
    }
    await this.file.write(blockEnd, serializeFooter(this.footer));
    // Padding up to the bitmap covers the old trailing footer, so no stale footer stays inside the block.
    const head = Buffer.alloc(bitmapPos - sp.nextFree + sp.bitmapSize);
    const bm = head.subarray(bitmapPos - sp.nextFree);
    // Dynamic: the whole block is defined (written data or zeros). Differencing: nothing is present yet.
    if (this.type === 'dynamic') bm.fill(0xff);
    await this.file.write(sp.nextFree, head);
    sp.bat[b] = bitmapPos / SECTOR;
    sp.nextFree = blockEnd;
    this.state.footerPos = blockEnd;
    this.state.footerAtEnd = true;
    this.footerDirty = false;
    this.dirtyBat.add(b);
    if (this.type === 'differencing') this.bitmaps.set(b, Buffer.from(bm));
  }

  /** Writes changed bitmaps, then changed BAT sectors, then a missing trailing footer. */
  private async writeDirtyMetadata(): Promise<void> {
    const sp = this.sparse;
    for (const b of this.dirtyBitmaps) {
      const bm = this.bitmaps.get(b);
      if (bm) await this.file.write(sp.bat[b] * SECTOR, bm);
    }
    this.dirtyBitmaps.clear();
    const sectors = [...new Set([...this.dirtyBat].map((b) => Math.floor(b / ENTRIES_PER_SECTOR)))].sort((x, y) => x - y);
    for (const s of sectors) {
      const from = s * ENTRIES_PER_SECTOR;
      const to = Math.min(sp.bat.length, from + ENTRIES_PER_SECTOR);
      await this.file.write(sp.header.tableOffset + from * 4, serializeBat(sp.bat, from, to));
    }
    this.dirtyBat.clear();
    if (this.footerDirty) {
      await this.file.write(sp.nextFree, serializeFooter(this.footer));
      this.state.footerPos = sp.nextFree;
      this.state.footerAtEnd = true;
      this.footerDirty = false;
    }
  }
}

/** Runs `fn` over `items` with at most `limit` in flight. */
async function forEachLimited<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await fn(items[next++]);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

/** Finds the footer: the trailing one (512 bytes, or the old 511-byte variant), else the copy at offset 0. */
async function findFooter(
  file: RandomAccessFile,
  size: number,
  subject: string,
  opts: OpenOptions,
): Promise<{ footer: VhdFooter; footerPos: number; footerAtEnd: boolean }> {
  if (size < FOOTER_SIZE) throw new CorruptImageError(`file too small to be a VHD (${size} bytes)`, subject);
  let endError: unknown = null;
  const tail = await file.read(size - FOOTER_SIZE, FOOTER_SIZE);
  const tailPos = hasFooterCookie(tail) ? size - FOOTER_SIZE : hasFooterCookie(tail.subarray(1)) ? size - FOOTER_SIZE + 1 : -1;
  if (tailPos >= 0) {
    try {
      const bytes = Buffer.concat([tail.subarray(tailPos - (size - FOOTER_SIZE)), Buffer.alloc(FOOTER_SIZE)]);
      return { footer: parseFooter(bytes, subject, opts), footerPos: tailPos, footerAtEnd: true };
    } catch (err) {
      endError = err;
    }
  }
  const head = await file.read(0, FOOTER_SIZE);
  if (hasFooterCookie(head)) {
    try {
      const copy = parseFooter(head, subject, opts);
      if (copy.diskType !== 'fixed') return { footer: copy, footerPos: -1, footerAtEnd: false };
    } catch (err) {
      endError ??= err;
    }
  }
  throw endError ?? new CorruptImageError('not a VHD: no footer (cookie \'conectix\') at the end of the file or at offset 0', subject);
}

/** Reads and bounds the dynamic header, BAT and locators of a dynamic or differencing image. */
async function openSparse(file: RandomAccessFile, size: number, footer: VhdFooter, footerAt: { pos: number; atEnd: boolean }, virtualSize: number, subject: string, opts: OpenOptions): Promise<Sparse> {
  const headerOffset = footer.dataOffset;
  if (headerOffset === null || headerOffset + DYNAMIC_HEADER_SIZE > size) {
    throw new CorruptImageError(`dynamic header offset ${headerOffset ?? 'none'} lies outside the file (${size} bytes)`, subject);
  }
  const header = parseDynamicHeader((await readFully(file, headerOffset, DYNAMIC_HEADER_SIZE))!, subject, opts);
  const { blockSize, maxTableEntries, tableOffset } = header;
  if (!isPowerOfTwo(blockSize) || blockSize < MIN_BLOCK_SIZE || blockSize > MAX_BLOCK_SIZE) {
    throw new CorruptImageError(`unsupported VHD block size ${blockSize} (expected a power of two from 512 bytes to 256 MiB)`, subject);
  }
  const needed = Math.ceil(virtualSize / blockSize);
  if (needed > MAX_BAT_ENTRIES) {
    throw new UnsupportedError(`VHD with ${needed} blocks of ${blockSize} bytes: more than the ${MAX_BAT_ENTRIES} blocks this tool supports`, subject);
  }
  if (maxTableEntries < needed) {
    throw new CorruptImageError(`VHD BAT has ${maxTableEntries} entries but ${formatSize(virtualSize)} needs ${needed}`, subject);
  }
  if (tableOffset + maxTableEntries * 4 > size) {
    throw new CorruptImageError(`VHD BAT (${maxTableEntries} entries at offset ${tableOffset}) extends past the end of the file (${size} bytes)`, subject);
  }
  const bat = parseBat((await readFully(file, tableOffset, needed * 4))!, needed, subject);
  const bitmapSize = bitmapBytes(blockSize);
  let end = Math.max(headerOffset + DYNAMIC_HEADER_SIZE, tableOffset + batBytes(maxTableEntries));
  for (let i = 0; i < needed; i++) {
    if (bat[i] === UNALLOCATED) continue;
    const blockEnd = bat[i] * SECTOR + bitmapSize + blockSize;
    if (blockEnd > size) {
      throw new CorruptImageError(`BAT entry of block ${i} points past the end of the file (sector ${bat[i]}, block ends at ${blockEnd}, file has ${size} bytes)`, subject);
    }
    end = Math.max(end, blockEnd);
  }
  const parentHints: ParentHint[] = [];
  // Locator data of any platform is reserved space that new blocks must not overwrite.
  for (const e of header.locators) if (e.platformCode) end = Math.max(end, Math.min(size, e.dataOffset + reservedBytes(e)));
  if (footer.diskType === 'differencing') {
    for (let i = 0; i < LOCATOR_COUNT; i++) {
      const e = header.locators[i];
      if (!isKnownPlatform(e.platformCode) || e.dataLength === 0) continue;
      checkLocatorBounds(e, i, size, subject);
      const data = (await readFully(file, e.dataOffset, e.dataLength))!;
      parentHints.push({ source: e.platformCode, path: decodeLocatorData(e.platformCode, data) });
    }
    if (header.parentUnicodeName) parentHints.push({ source: 'ParentUnicodeName', path: header.parentUnicodeName });
  }
  const nextFree = footerAt.atEnd ? Math.max(end, footerAt.pos) : Math.max(end, alignUp(size, SECTOR));
  return { headerOffset, header, bat, bitmapSize, nextFree, parentHints };
}

/** Opens a VHD of any subtype; differencing images get their parent through `openParent`. */
export async function openVhd(file: RandomAccessFile, location: Location, opts: OpenOptions, openParent: ParentOpener): Promise<VhdDisk> {
  const subject = displayLocation(location);
  const size = await file.size();
  const { footer, footerPos, footerAtEnd } = await findFooter(file, size, subject, opts);
  const virtualSize = virtualSizeOf(footer.creatorApp, footer.geometry, footer.currentSize, opts.vhdSize);
  if (virtualSize % SECTOR !== 0 || virtualSize > MAX_VHD_SIZE) {
    throw new CorruptImageError(`VHD virtual size ${virtualSize} is not a whole number of sectors within 2040 GiB`, subject);
  }
  let sparse: Sparse | null = null;
  if (footer.diskType === 'fixed') {
    if (virtualSize > footerPos) {
      throw new CorruptImageError(`fixed VHD is truncated: ${formatSize(virtualSize)} of data expected, the file holds ${footerPos} bytes before its footer`, subject);
    }
  } else {
    sparse = await openSparse(file, size, footer, { pos: footerPos, atEnd: footerAtEnd }, virtualSize, subject, opts);
  }
  const disk = new VhdDisk(file, location, { footer, footerPos, footerAtEnd, virtualSize, sparse }, !!opts.writable);
  if (sparse && footer.diskType === 'differencing') {
    const id = formatGuidBE(sparse.header.parentUniqueId);
    const noId = isAllZero(sparse.header.parentUniqueId);
    const expect: ParentExpectation = {
      id,
      idName: 'ParentUniqueId',
      // Only a VHD has a UniqueId; another format can be a parent only of a child that records none.
      matches: async (p) => (p.format === 'vhd' ? (await p.identity()).contentId === id : noId),
    };
    disk.parent = await openParent(parentCandidates(location, sparse.parentHints), location, opts, expect);
  }
  return disk;
}

/** True when the file carries a VHD footer at its end (fixed or any) or its copy at offset 0. */
export async function probeVhd(file: RandomAccessFile): Promise<boolean> {
  const size = await file.size();
  if (size < FOOTER_SIZE) return false;
  const head = await file.read(0, SIGNATURE_HEAD_BYTES);
  if (hasFooterCookie(head)) return true;
  // A container's last payload sector may hold anything, even a nested VHD's footer: its own signature wins.
  if (head.toString('latin1', 0, 8) === 'vhdxfile' || containerSignatureOf(head)) return false;
  const tail = await file.read(size - FOOTER_SIZE, 9);
  return hasFooterCookie(tail) || hasFooterCookie(tail.subarray(1));
}

/** Checks creation options and returns the new image's size and geometry. */
function planCreate(location: Location, opts: CreateOptions): { size: number; geometry: Geometry; blockSize: number } {
  const subject = displayLocation(location);
  if (opts.format !== 'vhd') throw new UsageError(`the vhd driver cannot create '${opts.format}' images`, subject);
  if ((opts.logicalSectorSize ?? SECTOR) !== SECTOR) throw new UnsupportedError('VHD supports only 512-byte logical sectors', subject);
  if ((opts.physicalSectorSize ?? SECTOR) !== SECTOR) {
    throw new UnsupportedError('VHD cannot record a physical sector size (it is always 512); use VHDX for 4 KiB sectors', subject);
  }
  const blockSize = opts.blockSize ?? DEFAULT_BLOCK_SIZE;
  if (opts.type !== 'fixed' && (!isPowerOfTwo(blockSize) || blockSize < MIN_BLOCK_SIZE || blockSize > MAX_BLOCK_SIZE)) {
    throw new UsageError(`invalid VHD block size ${blockSize} (a power of two from 512 bytes to 256 MiB; default 2 MiB)`, subject);
  }
  let size: number;
  let geometry: Geometry;
  if (opts.type === 'differencing') {
    const p = opts.parent;
    if (!p) throw new UsageError('a differencing image needs a parent', subject);
    size = p.virtualSize;
    if (opts.virtualSize !== undefined && opts.virtualSize !== size) {
      throw new UsageError(`a differencing VHD has its parent's size (${size}), not ${opts.virtualSize}`, subject);
    }
    // Readers compute the size from the same CHS as the parent's, so copy it when there is one.
    geometry = p instanceof VhdDisk ? { ...p.footer.geometry } : chsForSize(size);
  } else {
    if (opts.parent) throw new UsageError(`a ${opts.type} image has no parent`, subject);
    if (opts.virtualSize === undefined) throw new UsageError('a size is needed (--size)', subject);
    size = opts.virtualSize;
    geometry = chsForSize(size);
  }
  if (!Number.isSafeInteger(size) || size <= 0 || size % SECTOR !== 0 || size > MAX_VHD_SIZE) {
    throw new UsageError(`invalid VHD size ${size} (a positive multiple of 512 bytes, at most 2040 GiB)`, subject);
  }
  if (opts.type !== 'fixed' && Math.ceil(size / blockSize) > MAX_BAT_ENTRIES) {
    throw new UsageError(`block size ${blockSize} is too small for ${formatSize(size)} (more than ${MAX_BAT_ENTRIES} blocks)`, subject);
  }
  return { size, geometry, blockSize };
}

/** The on-disk parent fields and locators of a new differencing image, locator data placed from `dataStart`. */
async function parentLinks(
  location: Location,
  opts: CreateOptions,
  dataStart: number,
): Promise<{ uniqueId: Buffer; timestamp: number; name: string; locators: LocatorEntry[]; blobs: { at: number; data: Buffer }[]; end: number }> {
  const p = opts.parent!;
  const subject = displayLocation(location);
  const paths: { code: 'W2ku' | 'W2ru'; path: string }[] = [{ code: 'W2ku', path: windowsAbsolutePath(p.location) }];
  const rel = windowsRelativePath(opts.finalLocation ?? location, p.location);
  if (rel) paths.push({ code: 'W2ru', path: rel });
  const locators: LocatorEntry[] = [];
  const blobs: { at: number; data: Buffer }[] = [];
  let at = dataStart;
  for (const { code, path } of paths) {
    const data = encodeWindowsPath(path);
    const space = alignUp(Math.max(data.length, 1), SECTOR);
    // PlatformDataSpace in bytes, as Windows writes it (and as readers that follow Windows expect).
    locators.push({ platformCode: code, dataSpace: space, dataLength: data.length, dataOffset: at });
    blobs.push({ at, data });
    at += space;
  }
  while (locators.length < LOCATOR_COUNT) locators.push({ platformCode: '', dataSpace: 0, dataLength: 0, dataOffset: 0 });
  const name = windowsBasename(p.location.path);
  if (name.length > 255) throw new UnsupportedError('parent file name longer than the 255 characters a VHD can record', subject);
  const id = await p.identity();
  const isVhd = p instanceof VhdDisk;
  return {
    uniqueId: isVhd ? Buffer.from(p.footer.uniqueId) : Buffer.from(ZERO_GUID),
    timestamp: isVhd ? p.footer.timestamp : Math.max(0, Math.floor(id.mtimeMs / 1000) - VHD_EPOCH_OFFSET),
    name,
    locators,
    blobs,
    end: at,
  };
}

/** Creates a new VHD (the location must not exist) and returns it opened for writing. */
export async function createVhd(location: Location, opts: CreateOptions): Promise<VhdDisk> {
  const { size, geometry, blockSize } = planCreate(location, opts);
  const type = opts.type;
  const footerFields = {
    features: FEATURE_RESERVED,
    formatVersion: FORMAT_VERSION,
    dataOffset: type === 'fixed' ? null : FOOTER_SIZE,
    timestamp: vhdNow(),
    creatorApp: CREATOR_APP,
    creatorVersion: CREATOR_VERSION,
    creatorHostOs: HOST_OS_WINDOWS,
    originalSize: size,
    currentSize: size,
    geometry,
    diskType: type,
    uniqueId: newGuid(),
    savedState: 0,
  };
  const footer = serializeFooter(footerFields);
  const file = await location.store.createExclusive(location.path, { syncIo: opts.syncIo, writeBehind: opts.writeBehind });
  try {
    if (type === 'fixed') {
      // Data area as a hole: the file system supplies the zeros.
      await file.truncate(size);
      await file.write(size, footer);
    } else {
      const entries = Math.ceil(size / blockSize);
      const tableOffset = FOOTER_SIZE + DYNAMIC_HEADER_SIZE;
      const batEnd = tableOffset + batBytes(entries);
      const links =
        type === 'differencing'
          ? await parentLinks(location, opts, batEnd)
          : { uniqueId: ZERO_GUID, timestamp: 0, name: '', locators: [], blobs: [], end: batEnd };
      const locators = [...links.locators];
      while (locators.length < LOCATOR_COUNT) locators.push({ platformCode: '', dataSpace: 0, dataLength: 0, dataOffset: 0 });
      const header = serializeDynamicHeader({
        tableOffset,
        headerVersion: HEADER_VERSION,
        maxTableEntries: entries,
        blockSize,
        parentUniqueId: links.uniqueId,
        parentTimestamp: links.timestamp,
        parentUnicodeName: links.name,
        locators,
      });
      await file.write(0, footer);
      await file.write(FOOTER_SIZE, header);
      await file.write(tableOffset, emptyBatBytes(entries));
      for (const blob of links.blobs) await file.write(blob.at, blob.data);
      await file.write(links.end, footer);
    }
    await file.flush();
    const parent = opts.parent;
    return await openVhd(file, location, { writable: true }, async () => {
      if (!parent) throw new ParentError('internal: differencing image created without a parent', displayLocation(location));
      return parent;
    });
  } catch (err) {
    await file.close().catch(() => {});
    await location.store.unlink(location.path).catch(() => {});
    throw err;
  }
}

/** The 'vhd' format driver. */
export const vhdDriver: FormatDriver = {
  name: 'vhd',
  probe: probeVhd,
  open: openVhd,
  create: createVhd,
};
