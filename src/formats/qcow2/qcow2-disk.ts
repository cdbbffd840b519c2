/**
 * A QCOW2 image as a Disk: guest ranges are mapped through the active L1 and the L2 tables into pieces (data in
 * the image or its external data file, zeros, compressed clusters, or unallocated = the backing file's content).
 * Writing lives in the subclass of `writable-disk.ts`.
 */
import type { Disk, DiskIdentity, DiskInfo, Extent, FileRun } from '../disk.js';
import { identityStat } from '../disk.js';
import { displayLocation, type Location } from '../../io/location.js';
import type { RandomAccessFile } from '../../io/store.js';
import { CorruptImageError, UsageError } from '../../util/errors.js';
import { evictOneClean } from '../../util/cache.js';
import { checkRange, pushExtent } from '../ranges.js';
import * as hdr from './header.js';
import { COMPRESSED, DATA, UNALLOCATED, ZERO, mapCluster, scanStandard, type L2Context, type PieceKind } from './l2.js';
import { decompress, type CompressedSpan } from './compressed.js';
import type { Qcow2Layout } from './layout.js';

/** Bytes of L2 tables kept in memory (at least a few tables whatever the cluster size). */
const L2_CACHE_BYTES = 32 << 20;
/** The most segments of one request kept for the requests inside it that follow (a few hundred KiB). */
const KEPT_SEGMENTS = 4096;

/** A run of guest bytes with one mapping. */
interface Segment {
  kind: PieceKind;
  offset: number;
  length: number;
  /** DATA: host offset of the first byte. */
  host: number;
  /** COMPRESSED: where the cluster's compressed bytes are, and where this segment starts inside the cluster. */
  span: CompressedSpan | null;
  inCluster: number;
}

/** A QCOW2 image (version 2 or 3), possibly over a backing chain. */
export class Qcow2Disk implements Disk {
  readonly format = 'qcow2' as const;
  readonly type: 'dynamic' | 'differencing';
  readonly virtualSize: number;
  readonly logicalSectorSize = 512;
  readonly physicalSectorSize = 512;
  readonly blockSize: number;
  readonly writable: boolean = false;
  protected readonly h: hdr.Qcow2Header;
  protected readonly ctx: L2Context;
  protected readonly l2PerTable: number;
  protected readonly l2Cache = new Map<number, Buffer>();
  /** L2 tables changed in memory and not yet written: never evicted. */
  protected readonly dirtyL2 = new Set<number>();
  private readonly l2CacheMax: number;
  protected readonly subject: string;
  /**
   * Read-only images: the segments of the last request that had few, so requests inside it map no entry again
   * (createmeta asks status of a 1 GiB window, then the file runs of each 16 MiB group in it: 65 536 entries twice
   * for a 4 GiB image of 64 KiB clusters, the second time mostly before the JIT had compiled the loop).
   */
  private kept: { offset: number; end: number; list: Segment[] } | null = null;
  /** The last cluster decompressed (guest cluster index and bytes): partial reads of one cluster inflate it once. */
  private lastInflated: { vcluster: number; data: Promise<Buffer> } | null = null;
  protected closed = false;

  constructor(
    readonly file: RandomAccessFile,
    readonly location: Location,
    protected readonly layout: Qcow2Layout,
    readonly parent: Disk | null,
    /** The external data file, or null when guest data lives in the image file. */
    protected readonly dataFile: RandomAccessFile | null,
  ) {
    const h = layout.header;
    this.h = h;
    this.subject = displayLocation(location);
    // qemu works in 512-byte sectors and floors a size that is not a multiple of 512.
    this.virtualSize = Math.floor(h.size / 512) * 512;
    this.blockSize = h.clusterSize;
    this.type = parent ? 'differencing' : 'dynamic';
    this.ctx = {
      clusterBits: h.clusterBits,
      clusterSize: h.clusterSize,
      extended: Boolean(h.incompatible & hdr.INCOMPAT.EXTENDED_L2),
      hasDataFile: dataFile !== null,
      subject: this.subject,
    };
    this.l2PerTable = hdr.l2Entries(h);
    this.l2CacheMax = Math.max(8, Math.floor(L2_CACHE_BYTES / h.clusterSize));
  }

  protected async l2Table(index: number): Promise<Buffer | null> {
    const cached = this.l2Cache.get(index);
    if (cached) return cached;
    const off = this.layout.l1.l2Offset(index);
    if (off === 0) return null;
    const table = await this.file.read(off, this.h.clusterSize);
    if (table.length < this.h.clusterSize) throw new CorruptImageError(`L2 table at ${off} is cut short by the end of the file`, this.subject);
    const raced = this.l2Cache.get(index);
    if (raced) return raced;
    if (this.l2Cache.size >= this.l2CacheMax) evictOneClean(this.l2Cache, this.dirtyL2);
    this.l2Cache.set(index, table);
    return table;
  }

  /** The guest range [offset, offset+length) as segments, merging neighbours of one kind (and contiguous data). */
  private async segments(offset: number, length: number): Promise<Segment[]> {
    const cs = this.h.clusterSize;
    const end = offset + length;
    const kept = this.kept;
    if (kept && offset >= kept.offset && end <= kept.end) return clipSegments(kept.list, offset, end);
    const out: Segment[] = [];
    let pos = offset;
    while (pos < end) {
      const vcluster = Math.floor(pos / cs);
      const tableIndex = Math.floor(vcluster / this.l2PerTable);
      const tableEnd = Math.min(end, (tableIndex + 1) * this.l2PerTable * cs);
      const table = await this.l2Table(tableIndex);
      if (!table) {
        this.add(out, UNALLOCATED, pos, tableEnd - pos, 0, null, 0);
        pos = tableEnd;
        continue;
      }
      this.mapTable(table, pos, tableEnd, out);
      pos = tableEnd;
    }
    // A writable image's tables change under the list; callers only read the segments, never change them.
    if (!this.writable && out.length <= KEPT_SEGMENTS) this.kept = { offset, end, list: out };
    return out;
  }

  /**
   * Appends the segments of guest bytes [pos, end), all described by L2 table `table`: runs of whole standard entries
   * in one pass (scanStandard), anything else (extended L2, compressed, partial clusters) cluster by cluster.
   */
  private mapTable(table: Buffer, pos: number, end: number, out: Segment[]): void {
    const cs = this.h.clusterSize;
    const base = Math.floor(pos / cs / this.l2PerTable) * this.l2PerTable;
    const view = new DataView(table.buffer, table.byteOffset, table.length);
    const addRun = (kind: PieceKind, first: number, count: number, host: number) => this.add(out, kind, (base + first) * cs, count * cs, host, null, 0);
    while (pos < end) {
      const vc = Math.floor(pos / cs);
      const from = pos - vc * cs;
      const to = Math.min(cs, end - vc * cs);
      if (!this.ctx.extended && from === 0 && to === cs) {
        // Whole clusters up to the last whole one in range, or to the first entry the per-cluster code must judge.
        const stop = scanStandard(view, vc - base, Math.floor(end / cs) - base, this.ctx, addRun);
        pos = (base + stop) * cs;
        if (stop > vc - base) continue;
      }
      let at = pos;
      mapCluster(table, vc % this.l2PerTable, vc, from, to, this.ctx, (kind, n, host, span) => {
        this.add(out, kind, at, n, host, span, at - vc * cs);
        at += n;
      });
      pos = vc * cs + to;
    }
  }

  private add(out: Segment[], kind: PieceKind, offset: number, length: number, host: number, span: CompressedSpan | null, inCluster: number): void {
    const last = out[out.length - 1];
    if (last && last.kind === kind && kind !== COMPRESSED && (kind !== DATA || last.host + last.length === host)) {
      last.length += length;
      return;
    }
    out.push({ kind, offset, length, host, span, inCluster });
  }

  private async readParent(pos: number, dst: Buffer): Promise<void> {
    const p = this.parent;
    const n = p ? Math.max(0, Math.min(dst.length, p.virtualSize - pos)) : 0;
    if (n > 0) await p!.read(pos, n, dst.subarray(0, n));
    dst.fill(0, n);
  }

  private async readData(seg: Segment, dst: Buffer): Promise<void> {
    const f = this.dataFile ?? this.file;
    const got = await f.read(seg.host, seg.length, dst);
    if (got.length === seg.length) return;
    // The last cluster may be cut short by the end of the file (its tail reads as zeros, as in qemu); a cluster that
    // starts past the end is a broken mapping.
    const cs = this.h.clusterSize;
    const size = await f.size();
    if (Math.floor(seg.host / cs) * cs >= size || Math.ceil(size / cs) * cs < seg.host + seg.length) {
      throw new CorruptImageError(`guest offset ${seg.offset} maps to ${seg.host}+${seg.length}, past the end of the ${this.dataFile ? 'data file' : 'file'} (${size} bytes)`, this.subject);
    }
    dst.fill(0, got.length);
  }

  protected inflate(vcluster: number, span: CompressedSpan): Promise<Buffer> {
    if (this.lastInflated?.vcluster === vcluster) return this.lastInflated.data;
    const data = (async () => {
      const raw = await this.file.read(span.offset, span.length);
      if (raw.length === 0 && span.length > 0) throw new CorruptImageError(`compressed cluster of guest offset ${vcluster * this.h.clusterSize} lies past the end of the file`, this.subject);
      // The last sectors may run past the end of the file: qemu reads them as zeros.
      const full = raw.length === span.length ? raw : Buffer.concat([raw, Buffer.alloc(span.length - raw.length)]);
      return decompress(full, this.h.clusterSize, this.h.compressionType, `compressed cluster of guest offset ${vcluster * this.h.clusterSize}`, this.subject);
    })();
    this.lastInflated = { vcluster, data };
    data.catch(() => {
      if (this.lastInflated?.data === data) this.lastInflated = null;
    });
    return data;
  }

  async read(offset: number, length: number, into?: Buffer): Promise<Buffer> {
    checkRange(this, offset, length);
    const out = into ?? Buffer.allocUnsafe(length);
    for (const seg of await this.segments(offset, length)) {
      const dst = out.subarray(seg.offset - offset, seg.offset - offset + seg.length);
      if (seg.kind === DATA) await this.readData(seg, dst);
      else if (seg.kind === ZERO) dst.fill(0);
      else if (seg.kind === UNALLOCATED) await this.readParent(seg.offset, dst);
      else {
        const cluster = await this.inflate(Math.floor(seg.offset / this.h.clusterSize), seg.span!);
        cluster.copy(dst, 0, seg.inCluster, seg.inCluster + seg.length);
      }
    }
    return out;
  }

  async status(offset: number, length: number): Promise<Extent[]> {
    checkRange(this, offset, length);
    const out: Extent[] = [];
    for (const seg of await this.segments(offset, length)) {
      const { offset: pos, length: n } = seg;
      if (seg.kind === DATA || seg.kind === COMPRESSED) pushExtent(out, { offset: pos, length: n, state: 'data', depth: 0 });
      else if (seg.kind === ZERO) pushExtent(out, { offset: pos, length: n, state: 'zero', depth: 0 });
      else if (!this.parent) pushExtent(out, { offset: pos, length: n, state: 'unallocated', depth: 0 });
      else {
        const inParent = Math.max(0, Math.min(n, this.parent.virtualSize - pos));
        if (inParent > 0) for (const x of await this.parent.status(pos, inParent)) pushExtent(out, { ...x, depth: x.depth + 1 });
        // Past a shorter backing file nobody decides: qemu-img map reports depth 0 there.
        if (inParent < n) pushExtent(out, { offset: pos + inParent, length: n - inParent, state: 'unallocated', depth: 0 });
      }
    }
    return out;
  }

  /**
   * Where [offset, offset+length) lies in local files (data clusters of this image, zeros, the backing chain's runs),
   * for the direct hashing path; null for writable images, other stores, external data files, compressed clusters
   * and clusters cut short by the end of the file.
   */
  async mapFile(offset: number, length: number): Promise<FileRun[] | null> {
    checkRange(this, offset, length);
    if (this.writable || this.dataFile || this.location.store.kind !== 'local') return null;
    const out: FileRun[] = [];
    for (const seg of await this.segments(offset, length)) {
      if (seg.kind === COMPRESSED) return null;
      if (seg.kind === DATA) {
        if (seg.host + seg.length > this.layout.fileSize) return null;
        out.push({ length: seg.length, path: this.location.path, fileOffset: seg.host });
      } else if (seg.kind === ZERO || !this.parent) {
        out.push({ length: seg.length, path: null, fileOffset: 0 });
      } else {
        const avail = Math.max(0, Math.min(seg.length, this.parent.virtualSize - seg.offset));
        const runs = avail > 0 ? await this.parent.mapFile?.(seg.offset, avail) : [];
        if (!runs) return null;
        out.push(...runs);
        if (avail < seg.length) out.push({ length: seg.length - avail, path: null, fileOffset: 0 });
      }
    }
    return out;
  }

  async write(_offset: number, _data: Uint8Array): Promise<void> {
    throw new UsageError('image is opened read-only', this.subject);
  }

  async writeZeroes(_offset: number, _length: number): Promise<void> {
    throw new UsageError('image is opened read-only', this.subject);
  }

  async flush(): Promise<void> {}

  async close(): Promise<void> {
    if (this.closed) return;
    try {
      await this.flush();
    } finally {
      this.closed = true;
      await this.closeFiles();
    }
  }

  private async closeFiles(): Promise<void> {
    try {
      await this.file.close();
      await this.dataFile?.close();
    } finally {
      await this.parent?.close();
    }
  }

  async identity(): Promise<DiskIdentity> {
    const st = await identityStat(this.file, this.location);
    // QCOW2 records no content id: size and mtime tell a change (of the image file; an external data file too).
    return { format: 'qcow2', contentId: '', timestamp: 0, fileSize: st?.size ?? (await this.file.size()), mtimeMs: st?.mtimeMs ?? 0 };
  }

  async info(): Promise<DiskInfo> {
    const h = this.h;
    const { extensions: ext, snapshots, refcounts } = this.layout;
    const info: DiskInfo = {
      file: this.subject,
      format: 'qcow2',
      type: this.type,
      virtualSize: this.virtualSize,
      fileSize: await this.file.size(),
      version: h.version,
      headerLength: h.headerLength,
      clusterSize: h.clusterSize,
      clusterBits: h.clusterBits,
      backingFile: this.layout.backingName,
      backingFormat: ext.backingFormat,
      cryptMethod: h.cryptMethod,
      compressionType: h.compressionType === hdr.COMPRESSION_ZSTD ? 'zstd' : 'deflate',
      refcountBits: refcounts.bits,
      refcountTableOffset: h.refcountTableOffset,
      refcountTableClusters: h.refcountTableClusters,
      refcountTableEntries: refcounts.tableEntries,
      l1Size: h.l1Size,
      l1TableOffset: h.l1TableOffset,
      l2Entries: this.l2PerTable,
      extendedL2: this.ctx.extended,
      dataFile: ext.dataFile,
      dirty: Boolean(h.incompatible & hdr.INCOMPAT.DIRTY),
      corrupt: Boolean(h.incompatible & hdr.INCOMPAT.CORRUPT),
      lazyRefcounts: Boolean(h.compatible & hdr.COMPAT.LAZY_REFCOUNTS),
      features: { ...hdr.featureNames(h), incompatibleBits: `0x${h.incompatible.toString(16)}`, compatibleBits: `0x${h.compatible.toString(16)}`, autoclearBits: `0x${h.autoclear.toString(16)}` },
      nbSnapshots: snapshots.length,
      snapshots: snapshots.map((s) => `${s.id} ${JSON.stringify(s.name)} ${new Date(s.dateSec * 1000).toISOString()} vm-state ${s.vmStateSize} l1-size ${s.l1Size}${s.diskSize !== null ? ` disk-size ${s.diskSize}` : ''}`),
    };
    if (this.parent) info.parent = displayLocation(this.parent.location);
    return info;
  }
}

/**
 * The part of `list` (the segments of a range covering [from, to), in order) inside [from, to): what segments() of
 * that range gives, since neighbours merge only when of one kind and contiguous. Cut segments are copies.
 */
function clipSegments(list: Segment[], from: number, to: number): Segment[] {
  let lo = 0;
  let hi = list.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (list[mid].offset + list[mid].length <= from) lo = mid + 1;
    else hi = mid;
  }
  const out: Segment[] = [];
  for (let i = lo; i < list.length && list[i].offset < to; i++) {
    const seg = list[i];
    const cut = Math.max(0, from - seg.offset);
    const length = Math.min(seg.offset + seg.length, to) - seg.offset - cut;
    if (cut === 0 && length === seg.length) out.push(seg);
    else out.push({ ...seg, offset: seg.offset + cut, length, host: seg.kind === DATA ? seg.host + cut : seg.host, inCluster: seg.inCluster + cut });
  }
  return out;
}
