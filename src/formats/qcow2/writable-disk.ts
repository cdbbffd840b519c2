/**
 * Writing a QCOW2 image (standard L2 entries, no external data file). New clusters are appended at the end of the
 * file; a cluster we own alone (COPIED) is rewritten in place; shared (refcount >= 2), compressed and zero-flagged
 * unowned clusters are copied on write. Metadata changes stay in memory and are committed in qemu's order, each step
 * flushed: data, refcount increments (blocks, then table), L2 tables, L1, then the frees of clusters no longer
 * referenced. A crash at any point leaves at worst leaked clusters, never a reference to an uncounted cluster.
 */
import { CorruptImageError, UnsupportedError, UsageError } from '../../util/errors.js';
import { Mutex } from '../../util/mutex.js';
import { checkRange } from '../ranges.js';
import * as hdr from './header.js';
import { readEntry, writeEntry } from './l2.js';
import { Qcow2Disk } from './qcow2-disk.js';

/** L2 tables changed in memory that trigger a commit inside write(). */
const COMMIT_THRESHOLD = 64;

/** A QCOW2 image opened for writing. */
export class Qcow2WritableDisk extends Qcow2Disk {
  override readonly writable = true;
  private readonly lock = new Mutex();
  private l1Dirty = false;
  private started = false;

  private requireOpen(): void {
    if (this.closed) throw new UsageError('image is closed', this.subject);
  }

  /** Before the first change: clear autoclear bits (their extensions would no longer be consistent), as the spec asks. */
  private async begin(): Promise<void> {
    if (this.started) return;
    this.started = true;
    if (this.h.version === 3 && this.h.autoclear !== 0n) {
      this.h.autoclear = 0n;
      await this.writeHeader();
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

  /** Writes `piece` (null = zeros) at byte `from` of guest cluster `vc`. */
  private async writeCluster(vc: number, from: number, piece: Buffer | null, length: number): Promise<void> {
    const cs = this.h.clusterSize;
    const ti = Math.floor(vc / this.l2PerTable);
    const j = vc % this.l2PerTable;
    // A data cluster we own alone (in an L2 table we own alone) is rewritten in place: no metadata changes.
    const current = this.layout.l1.copied(ti) ? await this.l2Table(ti) : null;
    const mine = current ? readEntry(current, j, this.h.clusterBits) : null;
    if (mine && !mine.span && mine.host !== 0 && mine.copied && !mine.zero) {
      await this.file.write(mine.host + from, piece ?? Buffer.alloc(length));
      return;
    }
    const table = await this.ownL2(ti);
    const e = readEntry(table, j, this.h.clusterBits);
    // A whole new cluster: the current content (chain, compressed, shared or zeros) with the piece laid over it.
    const whole = from === 0 && length === this.clusterBytes(vc);
    const content = Buffer.alloc(cs);
    if (!whole && !e.zero) await this.read(vc * cs, this.clusterBytes(vc), content.subarray(0, this.clusterBytes(vc)));
    if (piece) piece.copy(content, from);
    else content.fill(0, from, from + length);
    // A preallocated zero cluster we own is reused in place.
    const reuse = !e.span && e.host !== 0 && e.copied;
    const host = reuse ? e.host : await this.layout.refcounts.allocate(1);
    await this.file.write(host, content);
    writeEntry(table, j, host, false);
    if (e.span) this.layout.refcounts.deferFree(e.span.offset, e.span.length);
    else if (e.host !== 0 && !reuse) this.layout.refcounts.deferFree(e.host, cs);
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

  /** True when guest cluster `vc` already reads as zeros from this image's own tables. */
  private async readsZero(vc: number): Promise<boolean> {
    const table = await this.l2Table(Math.floor(vc / this.l2PerTable));
    const e = table ? readEntry(table, vc % this.l2PerTable, this.h.clusterBits) : null;
    if (e?.zero) return true;
    const unallocated = !e || (!e.span && e.host === 0);
    return unallocated && (!this.parent || vc * this.h.clusterSize >= this.parent.virtualSize);
  }

  override async writeZeroes(offset: number, length: number): Promise<void> {
    checkRange(this, offset, length);
    if (length === 0) return;
    return this.lock.run(async () => {
      this.requireOpen();
      await this.begin();
      await this.forClusters(offset, length, async (vc, from, n) => {
        if (await this.readsZero(vc)) return;
        const whole = from === 0 && n === this.clusterBytes(vc);
        // Version 2 has no zero flag: zeros are data there, as in qemu.
        if (!whole || this.h.version === 2) return this.writeCluster(vc, from, null, n);
        const table = await this.ownL2(Math.floor(vc / this.l2PerTable));
        const j = vc % this.l2PerTable;
        const e = readEntry(table, j, this.h.clusterBits);
        // A cluster we own stays allocated under the zero flag (reused by the next write); others are released.
        const keep = !e.span && e.host !== 0 && e.copied;
        writeEntry(table, j, keep ? e.host : 0, true);
        if (e.span) this.layout.refcounts.deferFree(e.span.offset, e.span.length);
        else if (e.host !== 0 && !keep) this.layout.refcounts.deferFree(e.host, this.h.clusterSize);
      });
      if (this.dirtyL2.size >= COMMIT_THRESHOLD) await this.commit();
    });
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
      await this.file.flush();
    });
  }
}

/** Refuses writable opens of images this writer must not or cannot change, naming why. */
export function checkWritable(h: hdr.Qcow2Header, hasBitmaps: boolean, subject: string): void {
  if (h.incompatible & hdr.INCOMPAT.CORRUPT) throw new CorruptImageError('the image is marked corrupt (incompatible bit 1): it is never written (repair it with qemu-img check -r all)', subject);
  if (h.incompatible & hdr.INCOMPAT.DIRTY) throw new UnsupportedError('the image is dirty (lazy refcounts not written back by a writer that stopped): run qemu-img check -r all on it before writing', subject);
  if (h.incompatible & hdr.INCOMPAT.DATA_FILE) throw new UnsupportedError('writing QCOW2 images with an external data file is not supported', subject);
  // Clearing the bitmaps autoclear bit would leave the bitmaps' clusters counted but unreferenced (leaks).
  if (hasBitmaps) throw new UnsupportedError('writing QCOW2 images with persistent bitmaps is not supported (remove them with qemu-img bitmap --remove first)', subject);
  if (h.incompatible & hdr.INCOMPAT.EXTENDED_L2) throw new UnsupportedError('writing QCOW2 images with extended L2 entries (subclusters) is not supported', subject);
}
