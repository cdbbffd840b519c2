/**
 * Writing a QCOW2 image: standard or extended L2 entries, guest data in the image file or in an external data file.
 * New clusters are appended at the end of the file (with a data file, guest cluster N lives at N * cluster size
 * there, uncounted); a cluster we own alone (COPIED) is rewritten in place; shared (refcount >= 2), compressed and
 * zero-flagged unowned clusters are copied on write. With subclusters, whole subclusters are written and marked
 * allocated; a new cluster over unallocated ones leaves the others reading through, as qemu does. Metadata changes
 * stay in memory and are committed in qemu's order, each step flushed: data, refcount increments (blocks, then table),
 * L2 tables, L1, then the frees of clusters no longer referenced. A crash at any point leaves at worst leaked
 * clusters, never a reference to an uncounted cluster.
 */
import { CorruptImageError, UsageError } from '../../util/errors.js';
import { Mutex } from '../../util/mutex.js';
import { checkRange } from '../ranges.js';
import * as hdr from './header.js';
import { ALL_SUBCLUSTERS, readEntry, SUBCLUSTERS, subclusterBits, writeEntry, type EntryFields } from './l2.js';
import { markBitmapsInUse } from './bitmaps.js';
import { rebuildRefcounts } from './rebuild.js';
import type { Qcow2Extensions } from './extensions.js';
import { Qcow2Disk } from './qcow2-disk.js';

/** L2 tables changed in memory that trigger a commit inside write(). */
const COMMIT_THRESHOLD = 64;

/** A QCOW2 image opened for writing. */
export class Qcow2WritableDisk extends Qcow2Disk {
  override readonly writable = true;
  private readonly lock = new Mutex();
  private l1Dirty = false;
  private started = false;
  /** We set the dirty bit; a clean close clears it. */
  private markedDirty = false;

  private requireOpen(): void {
    if (this.closed) throw new UsageError('image is closed', this.subject);
  }

  /** With `data_file_raw` the data file must stay a raw image of the disk: zeros are written into it too. */
  private get rawDataFile(): boolean {
    return this.dataFile !== null && (this.h.autoclear & hdr.AUTOCLEAR.DATA_FILE_RAW) !== 0n;
  }

  /**
   * Before the first change: enabled persistent bitmaps are marked in use (we do not record writes in them),
   * autoclear bits whose extensions we would not keep consistent are cleared, as the spec asks, and (version 3) the
   * dirty bit is set until a clean close: after a kill the next writable open rebuilds the refcounts, so the leaks
   * a crash can leave do not stay.
   */
  private async begin(): Promise<void> {
    if (this.started) return;
    this.started = true;
    if (this.h.version !== 3) return;
    let keep = hdr.AUTOCLEAR.DATA_FILE_RAW;
    const dir = this.layout.extensions.bitmapDirectory;
    if (dir && this.h.autoclear & hdr.AUTOCLEAR.BITMAPS) {
      const marked = await markBitmapsInUse(this.file, dir, this.h.clusterSize, this.subject);
      if (marked > 0) process.stderr.write(`vhdsync: ${this.subject}: warning: ${marked} persistent bitmap(s) marked in use (vhdsync does not record its writes in them)\n`);
      keep |= hdr.AUTOCLEAR.BITMAPS;
    }
    this.h.autoclear &= keep;
    this.h.incompatible |= hdr.INCOMPAT.DIRTY;
    this.markedDirty = true;
    await this.writeHeader();
  }

  /**
   * An image left dirty (by a writer of ours that was killed, or a lazy-refcount writer that stopped): its refcounts
   * are rebuilt from the references and the bit cleared, as qemu does on a writable open. Returns the clusters
   * whose refcount changed, or null when the image was clean.
   */
  async repairIfDirty(): Promise<number | null> {
    if (!(this.h.incompatible & hdr.INCOMPAT.DIRTY)) return null;
    return this.lock.run(async () => {
      const changed = await rebuildRefcounts(this.file, this.layout, this.dataFile !== null, this.pointHeader, this.subject);
      this.h.incompatible &= ~hdr.INCOMPAT.DIRTY;
      await this.writeHeader();
      return changed;
    });
  }

  override async close(): Promise<void> {
    try {
      if (!this.closed && this.markedDirty) {
        await this.flush();
        await this.lock.run(async () => {
          this.h.incompatible &= ~hdr.INCOMPAT.DIRTY;
          await this.writeHeader();
          this.markedDirty = false;
        });
      }
    } finally {
      await super.close();
    }
  }

  private async writeHeader(): Promise<void> {
    await this.file.write(0, hdr.serialize(this.h));
    await this.file.flush();
  }

  /** Bytes of guest cluster `vc` inside the virtual disk (the last may be partial). */
  private clusterBytes(vc: number): number {
    return Math.min(this.h.clusterSize, this.virtualSize - vc * this.h.clusterSize);
  }

  private entry(table: Buffer, j: number): EntryFields {
    return readEntry(table, j, this.h.clusterBits, this.ctx.extended);
  }

  /** The entry maps a host cluster (offset 0 is one only with a data file, with COPIED). */
  private mapped(e: EntryFields): boolean {
    return !e.span && (e.host !== 0 || (this.dataFile !== null && e.copied));
  }

  /** A host cluster we own alone: rewritable in place. */
  private owned(e: EntryFields): boolean {
    return this.mapped(e) && e.copied;
  }

  /** The L2 table of L1 index `ti`, made ours (allocated, or copied when shared) and marked dirty. */
  private async ownL2(ti: number): Promise<Buffer> {
    const l1 = this.layout.l1;
    const cs = this.h.clusterSize;
    const off = l1.l2Offset(ti);
    let table: Buffer;
    if (off !== 0 && l1.copied(ti)) {
      table = (await this.l2Table(ti))!;
    } else {
      table = off === 0 ? Buffer.alloc(cs) : Buffer.from((await this.l2Table(ti))!);
      const at = await this.layout.refcounts.allocate(1);
      if (off !== 0) this.layout.refcounts.deferFree(off, cs);
      l1.set(ti, at);
      this.l1Dirty = true;
      this.l2Cache.set(ti, table);
    }
    this.dirtyL2.add(ti);
    return table;
  }

  /** Bytes [a, b) of guest cluster `vc` as they read now, with `piece` (null = zeros) laid over at `from`. */
  private async overlay(vc: number, a: number, b: number, from: number, piece: Buffer | null, length: number): Promise<Buffer> {
    const buf = Buffer.alloc(b - a);
    if (a < from || from + length < b) await this.read(vc * this.h.clusterSize + a, b - a, buf);
    if (piece) piece.copy(buf, from - a);
    else buf.fill(0, from - a, from - a + length);
    return buf;
  }

  /** Writes `piece` (null = zeros) at byte `from` of guest cluster `vc`. */
  private async writeCluster(vc: number, from: number, piece: Buffer | null, length: number): Promise<void> {
    const cs = this.h.clusterSize;
    const ti = Math.floor(vc / this.l2PerTable);
    const j = vc % this.l2PerTable;
    const ext = this.ctx.extended;
    const n = this.clusterBytes(vc);
    const out = this.dataFile ?? this.file;
    // With subclusters the write covers whole subclusters: an unallocated one's bytes in the file are undefined.
    const sub = cs / SUBCLUSTERS;
    const a = ext ? Math.floor(from / sub) * sub : from;
    const b = ext ? Math.min(n, Math.ceil((from + length) / sub) * sub) : from + length;
    const bits = ext ? subclusterBits(a, b, cs) : 0;
    // A data cluster we own alone (in an L2 table we own alone) with the bytes already allocated: no metadata change.
    const current = this.layout.l1.copied(ti) ? await this.l2Table(ti) : null;
    const mine = current ? this.entry(current, j) : null;
    if (mine && this.owned(mine) && !mine.zero && (mine.alloc & bits) === bits) {
      await out.write(mine.host + from, piece ?? Buffer.alloc(length));
      return;
    }
    const table = await this.ownL2(ti);
    const e = this.entry(table, j);
    if (ext && this.owned(e)) {
      // Our cluster, some touched subclusters not allocated yet: fill them whole and mark them.
      await out.write(e.host + a, await this.overlay(vc, a, b, from, piece, length));
      writeEntry(table, j, e.host, false, { alloc: e.alloc | bits, zeros: e.zeros & ~bits });
      return;
    }
    // A new cluster (or, standard entries, a preallocated zero cluster of ours, reused).
    const reuse = !ext && this.owned(e);
    const host = reuse ? e.host : this.dataFile ? vc * cs : await this.layout.refcounts.allocate(1);
    const content = Buffer.alloc(cs);
    let bitmaps: { alloc: number; zeros: number } | undefined;
    if (ext && !this.mapped(e) && !e.span) {
      // Over unallocated (or zero) subclusters only the touched ones become allocated; the others still read through.
      (await this.overlay(vc, a, b, from, piece, length)).copy(content, a);
      bitmaps = { alloc: bits, zeros: e.zeros & ~bits };
    } else {
      // The whole current content (chain, compressed, shared or zeros) with the piece laid over it.
      (await this.overlay(vc, 0, n, from, piece, length)).copy(content);
      if (ext) bitmaps = e.span ? { alloc: ALL_SUBCLUSTERS, zeros: 0 } : { alloc: e.alloc | bits, zeros: e.zeros & ~bits };
    }
    await out.write(host, this.dataFile ? content.subarray(0, n) : content);
    writeEntry(table, j, host, false, bitmaps);
    if (e.span) this.layout.refcounts.deferFree(e.span.offset, e.span.length);
    else if (this.mapped(e) && !reuse && !this.dataFile) this.layout.refcounts.deferFree(e.host, cs);
  }

  /** Visits [offset, offset+length) cluster by cluster. */
  private async forClusters(offset: number, length: number, fn: (vc: number, from: number, n: number, done: number) => Promise<void>): Promise<void> {
    const cs = this.h.clusterSize;
    for (let done = 0; done < length; ) {
      const pos = offset + done;
      const vc = Math.floor(pos / cs);
      const from = pos - vc * cs;
      const n = Math.min(cs - from, length - done);
      await fn(vc, from, n, done);
      done += n;
    }
  }

  override async write(offset: number, data: Uint8Array): Promise<void> {
    checkRange(this, offset, data.byteLength);
    if (data.byteLength === 0) return;
    const buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    return this.lock.run(async () => {
      this.requireOpen();
      await this.begin();
      await this.forClusters(offset, buf.length, (vc, from, n, done) => this.writeCluster(vc, from, buf.subarray(done, done + n), n));
      if (this.dirtyL2.size >= COMMIT_THRESHOLD) await this.commit();
    });
  }

  /** True when guest cluster `vc` already reads as zeros from this image's own tables (standard entries). */
  private async readsZero(vc: number): Promise<boolean> {
    const table = await this.l2Table(Math.floor(vc / this.l2PerTable));
    const e = table ? this.entry(table, vc % this.l2PerTable) : null;
    if (e?.zero) return true;
    const unallocated = !e || (!e.span && !this.mapped(e));
    return unallocated && (!this.parent || vc * this.h.clusterSize >= this.parent.virtualSize);
  }

  override async writeZeroes(offset: number, length: number): Promise<void> {
    checkRange(this, offset, length);
    if (length === 0) return;
    return this.lock.run(async () => {
      this.requireOpen();
      await this.begin();
      await this.forClusters(offset, length, async (vc, from, n) => {
        if (this.rawDataFile) return this.writeCluster(vc, from, null, n);
        if (this.ctx.extended) return this.zeroSubclusters(vc, from, n);
        if (await this.readsZero(vc)) return;
        const whole = from === 0 && n === this.clusterBytes(vc);
        // Version 2 has no zero flag: zeros are data there, as in qemu.
        if (!whole || this.h.version === 2) return this.writeCluster(vc, from, null, n);
        const table = await this.ownL2(Math.floor(vc / this.l2PerTable));
        const j = vc % this.l2PerTable;
        const e = this.entry(table, j);
        // A cluster we own stays allocated under the zero flag (reused by the next write); others are released.
        const keep = this.owned(e);
        writeEntry(table, j, keep ? e.host : null, true);
        this.release(e, keep);
      });
      if (this.dirtyL2.size >= COMMIT_THRESHOLD) await this.commit();
    });
  }

  /** Drops this entry's old reference once the new entry is durable (nothing for data-file clusters, never counted). */
  private release(e: EntryFields, kept: boolean): void {
    if (e.span) this.layout.refcounts.deferFree(e.span.offset, e.span.length);
    else if (this.mapped(e) && !kept && !this.dataFile) this.layout.refcounts.deferFree(e.host, this.h.clusterSize);
  }

  /** Extended L2: whole subclusters get their zero bit (allocation cleared); bytes of partial ones are written as zeros. */
  private async zeroSubclusters(vc: number, from: number, n: number): Promise<void> {
    const cs = this.h.clusterSize;
    const sub = cs / SUBCLUSTERS;
    const size = this.clusterBytes(vc);
    const end = from + n;
    // The last cluster's last subcluster may reach past the disk's end: it counts as covered when the range reaches the end.
    const reach = end === size ? cs : end;
    const first = Math.ceil(from / sub) * sub;
    const last = Math.floor(reach / sub) * sub;
    if (first >= last) return this.writeCluster(vc, from, null, n);
    if (from < first) await this.writeCluster(vc, from, null, first - from);
    if (last < end) await this.writeCluster(vc, last, null, end - last);
    const inner = subclusterBits(first, last, cs);
    const ti = Math.floor(vc / this.l2PerTable);
    const j = vc % this.l2PerTable;
    const current = await this.l2Table(ti);
    if (current && (this.entry(current, j).zeros & inner) === inner) return;
    const table = await this.ownL2(ti);
    const e = this.entry(table, j);
    const alloc = (e.alloc & ~inner) >>> 0;
    const zeros = (e.zeros | inner) >>> 0;
    if (e.span || (this.mapped(e) && !this.owned(e) && alloc !== 0)) {
      // Compressed or shared with bytes still in use: the rest must be kept, in a cluster of ours.
      if (!e.span || inner !== ALL_SUBCLUSTERS) return this.writeCluster(vc, first, null, Math.min(last, size) - first);
    }
    const keep = this.owned(e);
    writeEntry(table, j, keep ? e.host : null, false, { alloc: keep ? alloc : 0, zeros });
    this.release(e, keep);
  }

  private readonly pointHeader = async (offset: number, clusters: number): Promise<void> => {
    this.h.refcountTableOffset = offset;
    this.h.refcountTableClusters = clusters;
    await this.writeHeader();
  };

  /** Commits metadata in qemu's order (see the top of this file). */
  private async commit(): Promise<void> {
    const rc = this.layout.refcounts;
    if (this.dirtyL2.size === 0 && !this.l1Dirty && !rc.pending) return;
    await this.dataFile?.flush();
    await this.file.flush();
    await rc.commitIncrements(this.pointHeader);
    for (const ti of [...this.dirtyL2].sort((a, b) => a - b)) {
      await this.file.write(this.layout.l1.l2Offset(ti), this.l2Cache.get(ti)!);
    }
    if (this.dirtyL2.size) await this.file.flush();
    this.dirtyL2.clear();
    if (this.l1Dirty) {
      await this.file.write(this.h.l1TableOffset, this.layout.l1.bytes.subarray(0, this.h.l1Size * 8));
      await this.file.flush();
      this.l1Dirty = false;
    }
    await rc.commitFrees(this.pointHeader);
  }

  override async flush(): Promise<void> {
    if (this.closed) return;
    return this.lock.run(async () => {
      await this.commit();
      await this.dataFile?.flush();
      await this.file.flush();
    });
  }
}

/** Refuses writable opens of images this writer must not or cannot change, naming why. */
export function checkWritable(h: hdr.Qcow2Header, ext: Qcow2Extensions, subject: string): void {
  if (h.incompatible & hdr.INCOMPAT.CORRUPT) throw new CorruptImageError('the image is marked corrupt (incompatible bit 1): it is never written (repair it with qemu-img check -r all)', subject);
  // Without the directory the bitmaps could neither be marked in use nor dropped without leaking their clusters.
  if (ext.hasBitmaps && !ext.bitmapDirectory && h.autoclear & hdr.AUTOCLEAR.BITMAPS) throw new CorruptImageError('the bitmaps extension is malformed: the image is not written', subject);
}
