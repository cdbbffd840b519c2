/**
 * Rebuilding refcounts from the references, as qemu does when it opens a dirty image for writing: every cluster's
 * refcount becomes the number of references qemu-img check counts (header, refcount table and blocks, each L1 and,
 * per L1, its L2 tables and their data and compressed clusters, the snapshot table, bitmap directory, tables and
 * data). Leaks left by a writer that stopped disappear; refcounts a lazy-refcount writer never wrote appear.
 */
import type { RandomAccessFile } from '../../io/store.js';
import { CorruptImageError } from '../../util/errors.js';
import { entryOffset } from './l1.js';
import { readEntry } from './l2.js';
import type { Qcow2Layout } from './layout.js';
import * as hdr from './header.js';

/** Reference counts per host cluster of the image file; memory is bounded by the file's size in clusters. */
async function countReferences(file: RandomAccessFile, layout: Qcow2Layout, hasDataFile: boolean, subject: string): Promise<Uint32Array> {
  const h = layout.header;
  const cs = h.clusterSize;
  const clusters = Math.ceil(layout.fileSize / cs);
  const refs = new Uint32Array(clusters);
  const add = (offset: number, length: number, what: string) => {
    if (length <= 0) return;
    const first = Math.floor(offset / cs);
    const last = Math.floor((offset + length - 1) / cs);
    if (last >= clusters) throw new CorruptImageError(`${what} at ${offset}+${length} lies past the end of the file: refcounts cannot be rebuilt`, subject);
    for (let c = first; c <= last; c++) refs[c]++;
  };
  add(0, cs, 'the header');
  add(h.refcountTableOffset, h.refcountTableClusters * cs, 'the refcount table');
  for (let i = 0; i < layout.refcounts.tableEntries; i++) {
    const off = layout.refcounts.blockOffset(i);
    if (off) add(off, cs, `refcount block ${i}`);
  }
  const extended = Boolean(h.incompatible & hdr.INCOMPAT.EXTENDED_L2);
  const perTable = hdr.l2Entries(h);
  const size = extended ? 16 : 8;
  const l1s = [{ offset: h.l1TableOffset, size: h.l1Size, bytes: layout.l1.bytes }];
  for (const s of layout.snapshots) l1s.push({ offset: s.l1TableOffset, size: s.l1Size, bytes: await file.read(s.l1TableOffset, s.l1Size * 8) });
  for (const l1 of l1s) {
    add(l1.offset, l1.size * 8, 'an L1 table');
    for (let i = 0; i < l1.size; i++) {
      const l2 = entryOffset(l1.bytes.readUInt32BE(i * 8), l1.bytes.readUInt32BE(i * 8 + 4));
      if (l2 === 0) continue;
      add(l2, cs, `the L2 table of L1 entry ${i}`);
      const table = await file.read(l2, cs);
      for (let j = 0; j < perTable; j++) {
        if (table.readUInt32BE(j * size) === 0 && table.readUInt32BE(j * size + 4) === 0) continue;
        const e = readEntry(table, j, h.clusterBits, extended);
        if (e.span) add(e.span.offset, e.span.length, 'a compressed cluster');
        else if (e.host !== 0 && !hasDataFile) add(e.host, cs, 'a data cluster');
      }
    }
  }
  if (layout.snapshots.length) add(h.snapshotsOffset, layout.snapshotTableLength, 'the snapshot table');
  await countBitmaps(file, layout, add);
  return refs;
}

/** The bitmap directory, each bitmap's table and the data clusters its entries point at. */
async function countBitmaps(file: RandomAccessFile, layout: Qcow2Layout, add: (offset: number, length: number, what: string) => void): Promise<void> {
  const dir = layout.extensions.bitmapDirectory;
  if (!dir || !(layout.header.autoclear & hdr.AUTOCLEAR.BITMAPS)) return;
  add(dir.offset, dir.size, 'the bitmap directory');
  const bytes = await file.read(dir.offset, dir.size);
  for (let i = 0, at = 0; i < dir.count && at + 24 <= bytes.length; i++) {
    const tableOffset = Number(bytes.readBigUInt64BE(at) & 0x00fffffffffffe00n);
    const tableSize = bytes.readUInt32BE(at + 8);
    add(tableOffset, tableSize * 8, `the table of bitmap ${i}`);
    const table = await file.read(tableOffset, tableSize * 8);
    for (let k = 0; k + 8 <= table.length; k += 8) {
      const off = Number(table.readBigUInt64BE(k) & 0x00fffffffffffe00n);
      if (off) add(off, layout.header.clusterSize, `a data cluster of bitmap ${i}`);
    }
    at += Math.ceil((24 + bytes.readUInt32BE(at + 20) + bytes.readUInt16BE(at + 18)) / 8) * 8;
  }
}

/**
 * Sets every refcount to its cluster's reference count, committing block by block (a crash part way leaves the
 * dirty bit set, so the next writable open starts over). Returns how many clusters changed.
 */
export async function rebuildRefcounts(file: RandomAccessFile, layout: Qcow2Layout, hasDataFile: boolean, pointHeader: (offset: number, clusters: number) => Promise<void>, subject: string): Promise<number> {
  const refs = await countReferences(file, layout, hasDataFile, subject);
  const rc = layout.refcounts;
  let changed = 0;
  // Only clusters inside the file: anything the rebuild itself appends (a refcount block, a bigger table) counts itself.
  for (let b = 0; b * rc.entriesPerBlock < refs.length; b++) {
    for (let c = b * rc.entriesPerBlock; c < Math.min(refs.length, (b + 1) * rc.entriesPerBlock); c++) {
      const have = await rc.get(c);
      if (have === refs[c]) continue;
      await rc.add(c, refs[c] - have);
      changed++;
    }
    if (rc.pending) await rc.commitIncrements(pointHeader);
  }
  await rc.commitFrees(pointHeader);
  return changed;
}
