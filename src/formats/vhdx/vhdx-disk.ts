/**
 * A VHDX image as a Disk: composes the on-disk structures, replays the log before any read, and
 * routes every metadata update (BAT, sector bitmaps) through the log so a crash at any point leaves
 * a file that replays to a consistent state.
 */
import type { Disk, DiskIdentity, DiskInfo, DiskType, Extent, FileRun, OpenOptions, ParentOpener, StatusOptions } from '../disk.js';
import { closeBoth, identityStat } from '../disk.js';
import { displayLocation, withPath, type Location } from '../../io/location.js';
import type { RandomAccessFile } from '../../io/store.js';
import { CorruptImageError, ParentError, UnsupportedError, UsageError } from '../../util/errors.js';
import { ZERO_GUID, formatGuidLE, isGuidText, newGuid, parseGuidLE } from '../../util/guid.js';
import { ZERO_RUN, zeros } from '../../util/aligned.js';
import { checkRange, pushExtent } from '../ranges.js';
import * as fileId from './file-identifier.js';
import * as hdr from './header.js';
import * as rt from './region-table.js';
import * as md from './metadata.js';
import * as log from './log.js';
import * as bitmap from './sector-bitmap.js';
import { locatorValue } from './parent-locator.js';
import { Bat, BITMAP, PAYLOAD, SECTOR_BITMAP_BLOCK_SIZE, bitmapIndex, geometry, payloadIndex, type BatGeometry } from './bat.js';
import { FileView, applyChanges } from './replay.js';
import { Mutex } from '../../util/mutex.js';

const MIB = 1 << 20;
/** The fixed part of every VHDX: identifier, two headers, two region tables. */
const HEADER_AREA = MIB;
/**
 * Logs larger than this are refused (Hyper-V and qemu write 1 MiB). The search for the active sequence tries every
 * 4 KiB sector as an entry start and checksums each candidate, so a crafted log costs about length^2: 8 MiB bounds
 * that to seconds.
 */
const MAX_LOG_LENGTH = 8 * MIB;
/** No VHDX (64 TiB of data at most, plus metadata) needs a file larger than this; a log saying otherwise is corrupt. */
const MAX_FILE_SIZE = 2 ** 47;
/** Metadata regions larger than this are refused rather than read into memory. */
const MAX_METADATA_LENGTH = 64 * MIB;
/**
 * BAT bytes read beside the metadata before the geometry is known: 8192 entries, all of them for disks up to 256 GiB
 * at 32 MiB blocks; a larger BAT's rest is read once the metadata says how much there is.
 */
const BAT_READ_AHEAD = 64 * 1024;
/** Metadata bytes read first: the 64 KiB table and the items that follow it in every known writer's layout. */
const META_READ_AHEAD = 128 * 1024;
/** Dirty 4 KiB metadata sectors that trigger a log commit inside write(), batching BAT updates. */
const COMMIT_THRESHOLD = 64;
/** Sector bitmap blocks (1 MiB each) kept in memory; a huge child would otherwise pull in all of them. */
const MAX_CACHED_BITMAPS = 64;

/** Everything parsed from an image's fixed structures. */
export interface VhdxLayout {
  creator: string;
  header: hdr.VhdxHeader;
  headerSlot: number;
  regions: rt.Region[];
  batRegion: rt.Region;
  metaRegion: rt.Region;
  meta: md.VhdxMetadata;
  geometry: BatGeometry;
  bat: Bat;
  /** The file size a reader sees (after a replay that extended it). */
  fileSize: number;
  /** Log sequence numbers replayed on open, for info(). */
  replayed: number;
}

/** Writes a header to the non-current slot, flushes, and repeats for the other slot, as the spec's update rule asks. */
export async function updateHeaders(
  file: RandomAccessFile,
  current: { header: hdr.VhdxHeader; slot: number },
  patch: Partial<hdr.VhdxHeader>,
): Promise<{ header: hdr.VhdxHeader; slot: number }> {
  let { header, slot } = current;
  for (let i = 0; i < 2; i++) {
    header = { ...header, ...patch, sequenceNumber: header.sequenceNumber + 1n };
    slot = 1 - slot;
    await file.write(hdr.HEADER_OFFSETS[slot], hdr.serialize(header));
    await file.flush();
  }
  return { header, slot };
}

/** Finds and checks the log's active sequence: its changes in order, and the file size after replay. */
async function readActiveLog(file: RandomAccessFile, h: hdr.VhdxHeader, realSize: number, subject: string): Promise<{ changes: log.LogChange[]; fileSize: number; entries: number }> {
  const { logOffset, logLength } = h;
  if (logLength > MAX_LOG_LENGTH) throw new UnsupportedError(`log of ${logLength} bytes is larger than supported (${MAX_LOG_LENGTH})`, subject);
  if (logOffset + logLength > realSize) throw new CorruptImageError(`log at ${logOffset}+${logLength} lies past the end of the file (${realSize})`, subject);
  const seq = log.findActiveSequence(await file.read(logOffset, logLength), h.logGuid);
  if (!seq) throw new CorruptImageError('the header says the log holds entries to replay (LogGuid set) but the log has no valid entry sequence', subject);
  const headEntry = seq[seq.length - 1];
  if (headEntry.flushedFileOffset > realSize) {
    throw new CorruptImageError(`file is ${realSize} bytes but the log says ${headEntry.flushedFileOffset} were flushed: the file was truncated`, subject);
  }
  const lastFileOffset = Math.max(...seq.map((e) => e.lastFileOffset));
  if (lastFileOffset > MAX_FILE_SIZE) throw new CorruptImageError(`log says the file extends to ${lastFileOffset} bytes, more than any VHDX needs`, subject);
  // Like qemu, round the extended size up to 1 MiB: every structure is 1 MiB aligned.
  const fileSize = Math.max(realSize, Math.ceil(lastFileOffset / MIB) * MIB);
  const changes = seq.flatMap((e) => e.changes);
  for (const c of changes) {
    const end = c.fileOffset + (c.kind === 'data' ? c.data.length : c.length);
    // The log may rewrite region tables and everything after them, never the identifier or headers.
    if (c.fileOffset < rt.REGION_TABLE_OFFSETS[0]) throw new CorruptImageError(`log entry writes into the VHDX headers (offset ${c.fileOffset})`, subject);
    if (end > fileSize) throw new CorruptImageError(`log entry writes at ${c.fileOffset}+${end - c.fileOffset}, past the file's end and the log's LastFileOffset`, subject);
  }
  return { changes, fileSize, entries: seq.length };
}

/** Reads and checks the fixed structures, replaying the log (in the file when writable, in memory otherwise). */
export async function readLayout(file: RandomAccessFile, subject: string, writable: boolean): Promise<{ layout: VhdxLayout; view: FileView }> {
  const realSize = await file.size();
  if (realSize < HEADER_AREA) throw new CorruptImageError(`file is ${realSize} bytes, smaller than the 1 MiB VHDX header area`, subject);
  const head = await file.read(0, 320 * 1024);
  const creator = fileId.parse(head, subject).creator;
  let cur = hdr.pickCurrent(hdr.HEADER_OFFSETS.map((o) => hdr.parse(head.subarray(o, o + hdr.HEADER_SIZE))), subject);
  let overlay: log.LogChange[] = [];
  let fileSize = realSize;
  let replayed = 0;
  if (hdr.logIsActive(cur.header)) {
    const active = await readActiveLog(file, cur.header, realSize, subject);
    fileSize = active.fileSize;
    replayed = active.entries;
    if (writable) {
      await applyChanges(file, active.changes);
      if (fileSize > realSize) await file.truncate(fileSize);
      await file.flush();
      cur = await updateHeaders(file, cur, { logGuid: Buffer.from(ZERO_GUID), fileWriteGuid: newGuid() });
    } else {
      overlay = active.changes;
    }
  }
  const view = new FileView(file, overlay);
  const rtBytes = await view.read(rt.REGION_TABLE_OFFSETS[0], 2 * rt.REGION_TABLE_SIZE);
  const regions = rt.pickValid([rt.parse(rtBytes.subarray(0, rt.REGION_TABLE_SIZE), subject), rt.parse(rtBytes.subarray(rt.REGION_TABLE_SIZE), subject)], subject);
  rt.checkOverlaps([...regions, { fileOffset: cur.header.logOffset, length: cur.header.logLength, guid: 'log' }], subject, 'regions (log, BAT, metadata)');
  // The log too: new blocks are allocated at the end of the file, and must never land on it.
  for (const r of [...regions, { fileOffset: cur.header.logOffset, length: cur.header.logLength, guid: 'log' }]) {
    if (r.fileOffset + r.length > fileSize) throw new CorruptImageError(`region ${r.guid} at ${r.fileOffset}+${r.length} lies past the end of the file (${fileSize})`, subject);
  }
  const batRegion = regions.find((r) => r.guid === rt.BAT_REGION)!;
  const metaRegion = regions.find((r) => r.guid === rt.METADATA_REGION)!;
  if (metaRegion.length > MAX_METADATA_LENGTH) throw new UnsupportedError(`metadata region of ${metaRegion.length} bytes is larger than supported`, subject);
  // The BAT's first entries are read beside the metadata (one round trip on a share, not two); the geometry the
  // metadata gives decides how many it needs, and only those (whole 4 KiB sectors, as they are logged) are kept.
  // Of the metadata region (1 MiB as Hyper-V, qemu and vhdsync lay it out) only the table and the items it names
  // are read when they lie in its first bytes, as they do in those images; the rest of the region is not looked at.
  const [metaStart, batStart] = await Promise.all([
    view.read(metaRegion.fileOffset, Math.min(metaRegion.length, META_READ_AHEAD)),
    view.read(batRegion.fileOffset, Math.min(batRegion.length, BAT_READ_AHEAD)),
  ]);
  // Items within the bytes read are parsed there, bounded by the region's length (no 1 MiB copy per open); items past
  // them (no known writer puts them there) need only the rest of the region, not all of it again.
  const meta =
    md.itemsEnd(metaStart) <= metaStart.length
      ? md.parse(metaStart, subject, metaRegion.length)
      : md.parse(Buffer.concat([metaStart, await view.read(metaRegion.fileOffset + metaStart.length, metaRegion.length - metaStart.length)]), subject);
  const g = geometry(meta.virtualSize, meta.blockSize, meta.logicalSectorSize, meta.hasParent);
  const batBytes = Math.min(batRegion.length, Math.ceil((g.totalEntries * 8) / log.LOG_SECTOR) * log.LOG_SECTOR);
  const batRaw = batBytes <= batStart.length ? batStart.subarray(0, batBytes) : Buffer.concat([batStart, await view.read(batRegion.fileOffset + batStart.length, batBytes - batStart.length)]);
  const bat = Bat.parse(g, batRaw, subject);
  checkBat(g, bat, meta.hasParent, fileSize, subject);
  return {
    layout: { creator, header: cur.header, headerSlot: cur.slot, regions, batRegion, metaRegion, meta, geometry: g, bat, fileSize, replayed },
    view,
  };
}

/** Refuses BAT entries with offsets inside the header area or past the end of the file. */
function checkBat(g: BatGeometry, bat: Bat, differencing: boolean, fileSize: number, subject: string): void {
  for (let i = 0; i < g.payloadBlocks; i++) {
    const e = bat.get(payloadIndex(g, i));
    if (e.state !== PAYLOAD.FULLY_PRESENT && e.state !== PAYLOAD.PARTIALLY_PRESENT) continue;
    if (e.state === PAYLOAD.PARTIALLY_PRESENT && !differencing) throw new CorruptImageError(`BAT entry of block ${i} is PARTIALLY_PRESENT in an image without a parent`, subject);
    if (e.fileOffset < HEADER_AREA || e.fileOffset + g.blockSize > fileSize) {
      throw new CorruptImageError(`BAT entry of block ${i} points at ${e.fileOffset}, outside the file (${fileSize} bytes)`, subject);
    }
  }
  if (!differencing) return;
  for (let k = 0; k * g.chunkRatio < g.payloadBlocks; k++) {
    const e = bat.get(bitmapIndex(g, k));
    if (e.state === BITMAP.NOT_PRESENT) continue;
    if (e.state !== BITMAP.PRESENT) throw new CorruptImageError(`sector bitmap entry ${k} has invalid state ${e.state}`, subject);
    if (e.fileOffset < HEADER_AREA || e.fileOffset + SECTOR_BITMAP_BLOCK_SIZE > fileSize) {
      throw new CorruptImageError(`sector bitmap block ${k} points at ${e.fileOffset}, outside the file (${fileSize} bytes)`, subject);
    }
  }
}

/** A VHDX image (fixed, dynamic or differencing). */
export class VhdxDisk implements Disk {
  readonly format = 'vhdx' as const;
  readonly type: DiskType;
  readonly virtualSize: number;
  readonly logicalSectorSize: number;
  readonly physicalSectorSize: number;
  readonly blockSize: number;
  private readonly g: BatGeometry;
  private readonly bat: Bat;
  private readonly subject: string;
  private readonly bitmaps = new Map<number, Buffer>();
  /** Chunks whose sector bitmap block is known to be all zeros in the file (made by create, no bit set since): never read. */
  private readonly zeroBitmaps = new Set<number>();
  /** 4 KiB sector indices of the BAT region changed in memory and not yet logged. */
  private readonly dirtyBat = new Set<number>();
  /** Sector bitmap sectors changed in memory: file offset -> [chunk, sector within the bitmap block]. */
  private readonly dirtyBitmap = new Map<number, [number, number]>();
  private readonly lock = new Mutex();
  private header: { header: hdr.VhdxHeader; slot: number };
  /** Next 1 MiB aligned allocation offset. */
  private eof: number;
  private fileGuidRenewed: boolean;
  private dataGuidRenewed: boolean;
  /** The LogGuid this session's entries carry; set in the header after the first entry is durable. */
  private readonly logGuid = newGuid();
  private logPosition = 0;
  private logSequence = 1n;
  /** Sector images of a commit that failed before they were all written in place and flushed. */
  private unapplied: Array<{ fileOffset: number; data: Buffer }> = [];
  private closed = false;

  constructor(
    readonly file: RandomAccessFile,
    readonly location: Location,
    private readonly layout: VhdxLayout,
    private readonly view: FileView,
    readonly parent: Disk | null,
    fresh: boolean,
    /** CreateOptions.unpublished: BAT and bitmap sectors go in place without the log, and nothing flushes but flush(). */
    private readonly unpublished = false,
  ) {
    const m = layout.meta;
    this.virtualSize = m.virtualSize;
    this.logicalSectorSize = m.logicalSectorSize;
    this.physicalSectorSize = m.physicalSectorSize;
    this.blockSize = m.blockSize;
    this.g = layout.geometry;
    this.bat = layout.bat;
    this.subject = displayLocation(location);
    this.header = { header: layout.header, slot: layout.headerSlot };
    this.eof = Math.ceil(layout.fileSize / MIB) * MIB;
    this.fileGuidRenewed = fresh;
    this.dataGuidRenewed = fresh;
    if (fresh && m.hasParent) {
      for (let k = 0; k * this.g.chunkRatio < this.g.payloadBlocks; k++) {
        if (this.bat.get(bitmapIndex(this.g, k)).state === BITMAP.PRESENT) this.zeroBitmaps.add(k);
      }
    }
    // VHDX has no type field: Hyper-V marks fixed images by LeaveBlockAllocated.
    this.type = m.hasParent ? 'differencing' : m.leaveBlockAllocated ? 'fixed' : 'dynamic';
  }

  get writable(): boolean {
    return this.file.writable && !this.view.hasOverlay;
  }

  /** Bytes of block `b` inside the virtual disk (the last block may be cut short). */
  private blockBytes(b: number): number {
    return Math.min(this.blockSize, this.virtualSize - b * this.blockSize);
  }

  /** Visits [offset, offset+length) block by block. */
  private async forBlocks(offset: number, length: number, fn: (b: number, inBlock: number, n: number, done: number) => Promise<void>): Promise<void> {
    let done = 0;
    while (done < length) {
      const pos = offset + done;
      const b = Math.floor(pos / this.blockSize);
      const inBlock = pos - b * this.blockSize;
      const n = Math.min(this.blockSize - inBlock, length - done);
      await fn(b, inBlock, n, done);
      done += n;
    }
  }

  private async loadBitmap(chunk: number): Promise<Buffer | null> {
    const cached = this.bitmaps.get(chunk);
    if (cached) return cached;
    const e = this.bat.get(bitmapIndex(this.g, chunk));
    if (e.state !== BITMAP.PRESENT) return null;
    // A new child's bitmaps are holes: on a share, reading one would cost a round trip and 1 MiB for nothing.
    const bm = this.zeroBitmaps.has(chunk) ? Buffer.alloc(SECTOR_BITMAP_BLOCK_SIZE) : await this.view.read(e.fileOffset, SECTOR_BITMAP_BLOCK_SIZE);
    // A write may have created or changed this bitmap in memory while the read was in flight: that copy wins.
    const raced = this.bitmaps.get(chunk);
    if (raced) return raced;
    this.evictBitmaps();
    this.bitmaps.set(chunk, bm);
    return bm;
  }

  /** Keeps at most MAX_CACHED_BITMAPS clean bitmaps in memory; bitmaps with unlogged changes stay. */
  private evictBitmaps(): void {
    if (this.bitmaps.size < MAX_CACHED_BITMAPS) return;
    const pinned = new Set([...this.dirtyBitmap.values()].map(([chunk]) => chunk));
    for (const chunk of this.bitmaps.keys()) {
      if (this.bitmaps.size < MAX_CACHED_BITMAPS) break;
      if (!pinned.has(chunk)) this.bitmaps.delete(chunk);
    }
  }

  /** The first bitmap bit of block `b` within its chunk's bitmap. */
  private firstBit(b: number): number {
    return (b % this.g.chunkRatio) * (this.blockSize / this.logicalSectorSize);
  }

  /**
   * Splits [inBlock, inBlock+n) of a PARTIALLY_PRESENT block into runs stored here or not, from its
   * sector bitmap. The range need not be sector aligned: a run covers the sectors it touches.
   */
  private async presenceRuns(b: number, inBlock: number, n: number): Promise<Array<{ from: number; to: number; present: boolean }>> {
    const bm = await this.loadBitmap(Math.floor(b / this.g.chunkRatio));
    if (!bm) throw new CorruptImageError(`block ${b} is PARTIALLY_PRESENT but its sector bitmap block is not present`, this.subject);
    const lss = this.logicalSectorSize;
    const base = this.firstBit(b);
    const lastBit = base + Math.ceil((inBlock + n) / lss);
    const runs: Array<{ from: number; to: number; present: boolean }> = [];
    for (let pos = inBlock; pos < inBlock + n; ) {
      const bit = base + Math.floor(pos / lss);
      const to = Math.min(inBlock + n, (bitmap.runEnd(bm, bit, lastBit) - base) * lss);
      runs.push({ from: pos, to, present: bitmap.isSet(bm, bit) });
      pos = to;
    }
    return runs;
  }

  private async readParent(pos: number, dst: Buffer): Promise<void> {
    const p = this.parent!;
    const n = Math.max(0, Math.min(dst.length, p.virtualSize - pos));
    if (n > 0) await p.read(pos, n, dst.subarray(0, n));
    dst.fill(0, n);
  }

  async read(offset: number, length: number, into?: Buffer): Promise<Buffer> {
    checkRange(this, offset, length);
    const out = into ?? Buffer.allocUnsafe(length);
    await this.forBlocks(offset, length, async (b, inBlock, n, done) => {
      const dst = out.subarray(done, done + n);
      const e = this.bat.get(payloadIndex(this.g, b));
      if (e.state === PAYLOAD.FULLY_PRESENT) {
        await this.view.read(e.fileOffset + inBlock, n, dst);
      } else if (e.state === PAYLOAD.PARTIALLY_PRESENT) {
        for (const run of await this.presenceRuns(b, inBlock, n)) {
          const piece = dst.subarray(run.from - inBlock, run.to - inBlock);
          if (run.present) await this.view.read(e.fileOffset + run.from, piece.length, piece);
          else await this.readParent(b * this.blockSize + run.from, piece);
        }
      } else if (e.state === PAYLOAD.NOT_PRESENT && this.parent) {
        await this.readParent(b * this.blockSize + inBlock, dst);
      } else {
        // Dynamic NOT_PRESENT, UNDEFINED, ZERO, UNMAPPED and the reserved states read as zeros.
        dst.fill(0);
      }
    });
    return out;
  }

  async mapFile(offset: number, length: number): Promise<FileRun[] | null> {
    checkRange(this, offset, length);
    // A log replayed in memory patches reads: the file alone is not the content then.
    if (this.file.writable || this.view.hasOverlay || this.location.store.kind !== 'local') return null;
    const out: FileRun[] = [];
    const here = (fileOffset: number, n: number) => out.push({ length: n, path: this.location.path, fileOffset });
    const zero = (n: number) => out.push({ length: n, path: null, fileOffset: 0 });
    let whole = true;
    const fromParent = async (pos: number, n: number) => {
      const p = this.parent!;
      const inParent = Math.max(0, Math.min(n, p.virtualSize - pos));
      const runs = inParent > 0 ? await p.mapFile?.(pos, inParent) : [];
      if (!runs) whole = false;
      else out.push(...runs);
      if (inParent < n) zero(n - inParent);
    };
    await this.forBlocks(offset, length, async (b, inBlock, n) => {
      if (!whole) return;
      const e = this.bat.get(payloadIndex(this.g, b));
      if (e.state === PAYLOAD.FULLY_PRESENT) here(e.fileOffset + inBlock, n);
      else if (e.state === PAYLOAD.PARTIALLY_PRESENT) {
        for (const run of await this.presenceRuns(b, inBlock, n)) {
          if (run.present) here(e.fileOffset + run.from, run.to - run.from);
          else await fromParent(b * this.blockSize + run.from, run.to - run.from);
        }
      } else if (e.state === PAYLOAD.NOT_PRESENT && this.parent) await fromParent(b * this.blockSize + inBlock, n);
      else zero(n);
    });
    return whole ? out : null;
  }

  async status(offset: number, length: number, opts: StatusOptions = {}): Promise<Extent[]> {
    checkRange(this, offset, length);
    const own: Extent[] = [];
    // Content this image leaves to its parent is gathered into runs (each noting where it stands among our own
    // extents) and asked of the parent once per run after the scan, not once per block: a scattered diff is thousands
    // of NOT_PRESENT blocks between its few present ones. Positions only grow, so a run either continues the last one
    // or starts after content of our own.
    const asks: Array<{ at: number; from: number; to: number }> = [];
    const leave = (pos: number, n: number) => {
      const last = asks[asks.length - 1];
      if (last && last.to === pos) last.to = pos + n;
      else asks.push({ at: own.length, from: pos, to: pos + n });
    };
    // A plain loop rather than forBlocks: no closure or promise per block on the common path.
    for (let done = 0; done < length; ) {
      const pos = offset + done;
      const b = Math.floor(pos / this.blockSize);
      const inBlock = pos - b * this.blockSize;
      const n = Math.min(this.blockSize - inBlock, length - done);
      done += n;
      const state = this.bat.get(payloadIndex(this.g, b)).state;
      if (state === PAYLOAD.FULLY_PRESENT) {
        pushExtent(own, { offset: pos, length: n, state: 'data', depth: 0 });
      } else if (state === PAYLOAD.PARTIALLY_PRESENT) {
        for (const run of await this.presenceRuns(b, inBlock, n)) {
          const at = b * this.blockSize + run.from;
          if (run.present) pushExtent(own, { offset: at, length: run.to - run.from, state: 'data', depth: 0 });
          else leave(at, run.to - run.from);
        }
      } else if (state === PAYLOAD.NOT_PRESENT) {
        if (this.parent) leave(pos, n);
        else pushExtent(own, { offset: pos, length: n, state: 'unallocated', depth: 0 });
      } else if (state === PAYLOAD.ZERO || this.parent) {
        // In a child, UNDEFINED and UNMAPPED blocks do not consult the parent either: they read as zeros.
        pushExtent(own, { offset: pos, length: n, state: 'zero', depth: 0 });
      } else {
        pushExtent(own, { offset: pos, length: n, state: 'unallocated', depth: 0 });
      }
    }
    if (asks.length === 0) return own;
    const out: Extent[] = [];
    let i = 0;
    for (const ask of asks) {
      for (; i < ask.at; i++) pushExtent(out, own[i]);
      if (opts.ownOnly) pushExtent(out, { offset: ask.from, length: ask.to - ask.from, state: 'unallocated', depth: 1 });
      else await this.askParent(out, ask.from, ask.to);
    }
    for (; i < own.length; i++) pushExtent(out, own[i]);
    return out;
  }

  /** Appends the parent's extents for [from, to) one level deeper (past the parent's end: unallocated); nothing when empty. */
  private async askParent(out: Extent[], from: number, to: number): Promise<void> {
    if (to <= from) return;
    const p = this.parent!;
    const inParent = Math.max(0, Math.min(to, p.virtualSize) - from);
    if (inParent > 0) for (const x of await p.status(from, inParent)) pushExtent(out, { offset: x.offset, length: x.length, state: x.state, depth: x.depth + 1 });
    if (from + inParent < to) pushExtent(out, { offset: from + inParent, length: to - from - inParent, state: 'unallocated', depth: 1 });
  }

  private requireWritable(): void {
    if (this.closed) throw new UsageError('image is closed', this.subject);
    if (!this.writable) throw new UsageError('image is opened read-only', this.subject);
  }

  /** New FileWriteGuid before the first modification of this open, new DataWriteGuid before the first visible change. */
  private async beginChange(visible: boolean): Promise<void> {
    const patch: Partial<hdr.VhdxHeader> = {};
    if (!this.fileGuidRenewed) patch.fileWriteGuid = newGuid();
    if (visible && !this.dataGuidRenewed) patch.dataWriteGuid = newGuid();
    if (Object.keys(patch).length === 0) return;
    this.header = await updateHeaders(this.file, this.header, patch);
    this.fileGuidRenewed = true;
    if (visible) this.dataGuidRenewed = true;
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    checkRange(this, offset, data.byteLength);
    if (data.byteLength === 0) return;
    return this.lock.run(async () => {
      this.requireWritable();
      await this.beginChange(true);
      const lss = this.logicalSectorSize;
      const start = Math.floor(offset / lss) * lss;
      const end = Math.ceil((offset + data.byteLength) / lss) * lss;
      let buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
      if (start !== offset || end !== offset + data.byteLength) {
        // Partial sectors: read the rest of each sector through the chain, then write whole sectors.
        const merged = Buffer.alloc(end - start);
        await this.read(start, lss, merged.subarray(0, lss));
        if (end - lss > start) await this.read(end - lss, lss, merged.subarray(merged.length - lss));
        buf.copy(merged, offset - start);
        buf = merged;
      }
      await this.forBlocks(start, buf.length, (b, inBlock, n, done) => this.writeInBlock(b, inBlock, buf.subarray(done, done + n)));
      if (this.dirtyBat.size + this.dirtyBitmap.size >= COMMIT_THRESHOLD) await this.commit();
    });
  }

  /** Writes whole logical sectors inside block `b`, allocating it first when needed. */
  private async writeInBlock(b: number, inBlock: number, piece: Buffer): Promise<void> {
    const idx = payloadIndex(this.g, b);
    const e = this.bat.get(idx);
    if (e.state === PAYLOAD.FULLY_PRESENT || e.state === PAYLOAD.PARTIALLY_PRESENT) {
      await this.file.write(e.fileOffset + inBlock, piece);
      if (e.state === PAYLOAD.PARTIALLY_PRESENT) await this.markPresent(b, inBlock, piece.length);
      return;
    }
    // A new block lies past the old end of file, so its unwritten parts read as zeros (a hole).
    const at = this.allocate(this.blockSize);
    await this.file.write(at + inBlock, piece);
    const whole = inBlock === 0 && piece.length === this.blockBytes(b);
    if (this.parent && e.state === PAYLOAD.NOT_PRESENT && !whole) {
      this.setBat(idx, PAYLOAD.PARTIALLY_PRESENT, at);
      await this.markPresent(b, inBlock, piece.length);
    } else {
      this.setBat(idx, PAYLOAD.FULLY_PRESENT, at);
    }
  }

  private setBat(index: number, state: number, fileOffset: number): void {
    const at = this.bat.set(index, { state, fileOffset });
    this.dirtyBat.add(Math.floor(at / log.LOG_SECTOR));
  }

  /** Reserves space at the end of the file; the file is extended to cover it before the BAT is committed. */
  private allocate(size: number): number {
    const at = this.eof;
    this.eof += size;
    return at;
  }

  /** Sets the presence bits of sectors [inBlock, inBlock+length) of block `b`, allocating its bitmap block on demand. */
  private async markPresent(b: number, inBlock: number, length: number): Promise<void> {
    const chunk = Math.floor(b / this.g.chunkRatio);
    let bm = await this.loadBitmap(chunk);
    if (!bm) {
      const at = this.allocate(SECTOR_BITMAP_BLOCK_SIZE);
      bm = Buffer.alloc(SECTOR_BITMAP_BLOCK_SIZE);
      this.evictBitmaps();
      this.bitmaps.set(chunk, bm);
      this.setBat(bitmapIndex(this.g, chunk), BITMAP.PRESENT, at);
    }
    const lss = this.logicalSectorSize;
    const from = this.firstBit(b) + inBlock / lss;
    const to = from + length / lss;
    bitmap.setRange(bm, from, to);
    this.zeroBitmaps.delete(chunk);
    const blockAt = this.bat.get(bitmapIndex(this.g, chunk)).fileOffset;
    for (let s = Math.floor(from / 8 / log.LOG_SECTOR); s <= Math.floor((to - 1) / 8 / log.LOG_SECTOR); s++) {
      this.dirtyBitmap.set(blockAt + s * log.LOG_SECTOR, [chunk, s]);
    }
  }

  async writeZeroes(offset: number, length: number): Promise<void> {
    checkRange(this, offset, length);
    if (length === 0) return;
    return this.lock.run(async () => {
      this.requireWritable();
      await this.beginChange(true);
      await this.forBlocks(offset, length, async (b, inBlock, n) => {
        const idx = payloadIndex(this.g, b);
        const e = this.bat.get(idx);
        const readsZero = this.parent
          ? e.state === PAYLOAD.ZERO || e.state === PAYLOAD.UNDEFINED || e.state === PAYLOAD.UNMAPPED
          : e.state !== PAYLOAD.FULLY_PRESENT && e.state !== PAYLOAD.PARTIALLY_PRESENT;
        if (readsZero) return;
        const whole = inBlock === 0 && n === this.blockBytes(b);
        // A fixed image keeps its blocks. In a child, ZERO is legal ([MS-VHDX] 2.5.1.1) but libvhdi reads such
        // a block from the parent, so an unallocated block becomes a fresh FULLY_PRESENT hole instead: as cheap, read alike everywhere.
        if (whole && !this.parent && this.type !== 'fixed') {
          this.setBat(idx, PAYLOAD.ZERO, 0);
          return;
        }
        if (whole && this.parent && e.state === PAYLOAD.NOT_PRESENT) {
          this.setBat(idx, PAYLOAD.FULLY_PRESENT, this.allocate(this.blockSize));
          return;
        }
        const lss = this.logicalSectorSize;
        const pos = b * this.blockSize + inBlock;
        const s0 = Math.ceil(pos / lss) * lss;
        const s1 = Math.floor((pos + n) / lss) * lss;
        // Partial sectors at the edges need the chain's bytes; whole sectors go straight to the block.
        const edge = async (from: number, to: number) => {
          if (from >= to) return;
          const sector = Math.floor(from / lss) * lss;
          const cur = await this.read(sector, lss);
          cur.fill(0, from - sector, to - sector);
          await this.writeInBlock(b, sector - b * this.blockSize, cur);
        };
        if (s0 > s1) return edge(pos, pos + n);
        await edge(pos, s0);
        for (let at = s0; at < s1; at += ZERO_RUN) await this.writeInBlock(b, at - b * this.blockSize, zeros(s1 - at));
        await edge(s1, pos + n);
      });
      if (this.dirtyBat.size + this.dirtyBitmap.size >= COMMIT_THRESHOLD) await this.commit();
    });
  }

  /** The sector images of every dirty metadata sector, copied so later changes do not leak into a logged entry. */
  private dirtySectors(): Array<{ fileOffset: number; data: Buffer }> {
    const out: Array<{ fileOffset: number; data: Buffer }> = [];
    const S = log.LOG_SECTOR;
    for (const s of [...this.dirtyBat].sort((a, b) => a - b)) {
      out.push({ fileOffset: this.layout.batRegion.fileOffset + s * S, data: Buffer.from(this.bat.bytes.subarray(s * S, (s + 1) * S)) });
    }
    for (const [fileOffset, [chunk, s]] of [...this.dirtyBitmap].sort((a, b) => a[0] - b[0])) {
      out.push({ fileOffset, data: Buffer.from(this.bitmaps.get(chunk)!.subarray(s * S, (s + 1) * S)) });
    }
    return out;
  }

  /**
   * Makes pending metadata durable through the log: data flushed first, then the log entry written
   * and flushed (and the header pointed at this session's log), then the sectors written in place
   * and flushed. Each entry is at most half the log, placed after the previous one, so a torn entry
   * never damages the last complete one.
   */
  private async commit(): Promise<void> {
    if (this.dirtyBat.size === 0 && this.dirtyBitmap.size === 0 && this.unapplied.length === 0) return;
    // Sectors of a commit that failed part-way come first; a newer image of the same sector replaces them.
    const byOffset = new Map<number, { fileOffset: number; data: Buffer }>();
    for (const s of [...this.unapplied, ...this.dirtySectors()]) byOffset.set(s.fileOffset, s);
    const sectors = [...byOffset.values()];
    this.dirtyBat.clear();
    this.dirtyBitmap.clear();
    // Until they are in place and flushed, a later commit (or close) logs and applies them again: a failure
    // anywhere below must not leave a logged entry that close() then forgets by clearing LogGuid.
    this.unapplied = sectors;
    // Blocks allocated since the last commit may be only partly written: extend the file over them
    // (one call, not one per block), so no committed BAT entry ever points past the end of the file.
    if ((await this.file.size()) < this.eof) await this.file.truncate(this.eof);
    if (this.unpublished) {
      // Nobody opens this file before a flush and a rename publish it whole: no order among its writes matters.
      for (const s of sectors) await this.file.write(s.fileOffset, s.data);
      this.unapplied = [];
      return;
    }
    await this.file.flush();
    const { logOffset, logLength } = this.header.header;
    const half = logLength / 2 / log.LOG_SECTOR;
    let perEntry = half - 1;
    while (log.descriptorSectors(perEntry) + perEntry > half) perEntry--;
    for (let i = 0; i < sectors.length; i += perEntry) {
      const batch = sectors.slice(i, i + perEntry);
      const fileSize = this.eof;
      const bytes = log.serializeEntry({
        sequenceNumber: this.logSequence,
        tail: this.logPosition,
        logGuid: this.logGuid,
        flushedFileOffset: fileSize,
        lastFileOffset: fileSize,
        changes: batch.map((s) => ({ kind: 'data' as const, ...s })),
      });
      for (const [at, piece] of log.placeInLog(logLength, this.logPosition, bytes)) await this.file.write(logOffset + at, piece);
      await this.file.flush();
      this.logPosition = (this.logPosition + bytes.length) % logLength;
      this.logSequence++;
      // The header names the log only once an entry is durable, so a set LogGuid always has a valid entry behind it.
      if (!this.header.header.logGuid.equals(this.logGuid)) this.header = await updateHeaders(this.file, this.header, { logGuid: this.logGuid });
      for (const s of batch) await this.file.write(s.fileOffset, s.data);
      await this.file.flush();
    }
    this.unapplied = [];
  }

  async flush(): Promise<void> {
    if (!this.writable || this.closed) return;
    return this.lock.run(async () => {
      await this.commit();
      await this.file.flush();
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    try {
      if (this.writable && this.unpublished) {
        // In place already, log never used; durability is the publisher's flush before its rename.
        await this.lock.run(() => this.commit());
      } else if (this.writable) {
        await this.flush();
        await this.lock.run(async () => {
          // Everything logged is applied in place: mark the log empty so other readers need not replay it.
          if (hdr.logIsActive(this.header.header)) this.header = await updateHeaders(this.file, this.header, { logGuid: Buffer.from(ZERO_GUID) });
        });
      }
    } finally {
      this.closed = true;
      await closeBoth(this.file, this.parent);
    }
  }

  async setContentId(id: string): Promise<void> {
    const dataWriteGuid = parseGuidLE(id);
    return this.lock.run(async () => {
      this.requireWritable();
      const patch: Partial<hdr.VhdxHeader> = { dataWriteGuid };
      if (!this.fileGuidRenewed) patch.fileWriteGuid = newGuid();
      if (!this.fileGuidRenewed || !this.header.header.dataWriteGuid.equals(dataWriteGuid)) {
        this.header = await updateHeaders(this.file, this.header, patch);
      }
      this.fileGuidRenewed = true;
      this.dataGuidRenewed = true;
    });
  }

  async identity(): Promise<DiskIdentity> {
    const st = await identityStat(this.file, this.location);
    return {
      format: 'vhdx',
      contentId: formatGuidLE(this.header.header.dataWriteGuid),
      timestamp: 0,
      fileSize: st?.size ?? (await this.file.size()),
      mtimeMs: st?.mtimeMs ?? 0,
    };
  }

  async info(): Promise<DiskInfo> {
    const h = this.header.header;
    const m = this.layout.meta;
    let allocated = 0;
    for (let i = 0; i < this.g.payloadBlocks; i++) {
      const s = this.bat.get(payloadIndex(this.g, i)).state;
      if (s === PAYLOAD.FULLY_PRESENT || s === PAYLOAD.PARTIALLY_PRESENT) allocated++;
    }
    const info: DiskInfo = {
      file: this.subject,
      format: 'vhdx',
      type: this.type,
      virtualSize: this.virtualSize,
      logicalSectorSize: this.logicalSectorSize,
      physicalSectorSize: this.physicalSectorSize,
      blockSize: this.blockSize,
      fileSize: await this.file.size(),
      dataWriteGuid: formatGuidLE(h.dataWriteGuid),
      fileWriteGuid: formatGuidLE(h.fileWriteGuid),
      logGuid: formatGuidLE(h.logGuid),
      logState: this.layout.replayed ? `replayed ${this.layout.replayed} entries${this.view.hasOverlay ? ' in memory (file not modified)' : ''}` : 'empty',
      headerSequenceNumber: h.sequenceNumber.toString(),
      hasParent: m.hasParent,
      leaveBlockAllocated: m.leaveBlockAllocated,
      allocatedBlocks: allocated,
      totalBlocks: this.g.payloadBlocks,
      page83Id: formatGuidLE(m.page83),
    };
    if (this.layout.creator) info.creator = this.layout.creator;
    if (m.parentLocator) info.parentLocator = Object.fromEntries(m.parentLocator.entries);
    if (this.parent) info.parent = displayLocation(this.parent.location);
    return info;
  }
}

/** Candidate parent locations from a locator, in the spec's order, each also tried by name next to the child. */
export function parentCandidates(locator: md.VhdxMetadata['parentLocator'], child: Location): Location[] {
  const paths = child.store.paths;
  const dir = paths.dirname(child.path);
  const out: Location[] = [];
  const add = (p: string) => {
    if (!out.some((l) => l.path === p)) out.push(withPath(child, p));
  };
  const slashes = (p: string) => p.replace(/\\/g, '/');
  const baseName = (p: string) => slashes(p).split('/').pop() ?? '';
  const rel = locator ? locatorValue(locator, 'relative_path') : undefined;
  if (rel) add(paths.resolve(dir, slashes(rel)));
  for (const key of ['volume_path', 'absolute_win32_path']) {
    const v = locator ? locatorValue(locator, key) : undefined;
    if (!v) continue;
    // A POSIX absolute path is usable as is; Windows drive and volume paths only by their file name next to the child.
    if (v.startsWith('/')) add(v);
    const name = baseName(v);
    if (name) add(paths.join(dir, name));
  }
  return out;
}

/** Opens a VHDX image, replaying its log and resolving its parent chain. */
export async function openVhdx(file: RandomAccessFile, location: Location, opts: OpenOptions, openParent: ParentOpener): Promise<VhdxDisk> {
  const subject = displayLocation(location);
  const { layout, view } = await readLayout(file, subject, Boolean(opts.writable && file.writable));
  let parent: Disk | null = null;
  if (layout.meta.hasParent) {
    const loc = layout.meta.parentLocator;
    const linkage = loc ? locatorValue(loc, 'parent_linkage') : undefined;
    if (!linkage || !isGuidText(linkage)) throw new CorruptImageError(`parent locator has no valid parent_linkage (${linkage ?? 'missing'})`, subject);
    const bare = (g: string) => g.trim().replace(/^\{|\}$/g, '').toLowerCase();
    const id = bare(linkage);
    // parent_linkage2, when set, names a second acceptable DataWriteGuid ([MS-VHDX] 2.6.2.6.1).
    const linkage2 = loc ? locatorValue(loc, 'parent_linkage2') : undefined;
    const id2 = linkage2 && isGuidText(linkage2) && !/^[{]?[0-]+[}]?$/.test(linkage2.trim()) ? bare(linkage2) : null;
    parent = await openParent(parentCandidates(loc, location), location, { ...opts, writable: false }, {
      id,
      idName: 'parent_linkage',
      // A non-VHDX parent is refused below with its own message, not as a mismatch.
      matches: async (p) => {
        if (p.format !== 'vhdx') return true;
        const got = (await p.identity()).contentId;
        return got === id || got === id2;
      },
    });
    if (parent.format !== 'vhdx') {
      const name = displayLocation(parent.location);
      await parent.close();
      throw new UnsupportedError(`parent ${name} is a ${parent.format} image; a VHDX differencing image needs a VHDX parent (Hyper-V does not allow others)`, subject);
    }
    if (parent.logicalSectorSize !== layout.meta.logicalSectorSize) {
      await parent.close();
      throw new ParentError(`parent has ${parent.logicalSectorSize}-byte sectors, this image ${layout.meta.logicalSectorSize}-byte`, subject);
    }
  }
  return new VhdxDisk(file, location, layout, view, parent, false);
}
