/**
 * Everything an open reads before the first guest byte: header, extensions, active L1, refcount table and snapshot
 * table, each bounded by qemu's limits and the file size, and checked not to overlap each other.
 */
import type { RandomAccessFile } from '../../io/store.js';
import { CorruptImageError } from '../../util/errors.js';
import * as hdr from './header.js';
import * as ext from './extensions.js';
import * as snap from './snapshot.js';
import { L1Table } from './l1.js';
import { Refcounts } from './refcount.js';

/** The parsed fixed structures of an image. */
export interface Qcow2Layout {
  header: hdr.Qcow2Header;
  extensions: ext.Qcow2Extensions;
  backingName: string | null;
  l1: L1Table;
  refcounts: Refcounts;
  snapshots: snap.Snapshot[];
  /** Bytes of the snapshot table (0 without snapshots). */
  snapshotTableLength: number;
  fileSize: number;
}

/** Reads and checks an image's fixed structures. */
export async function readLayout(file: RandomAccessFile, subject: string): Promise<Qcow2Layout> {
  const fileSize = await file.size();
  const header = hdr.parse(await file.read(0, Math.min(fileSize, 512)), fileSize, subject);
  const cs = header.clusterSize;
  const cluster0 = await file.read(0, Math.min(fileSize, cs));
  const extensions = ext.parse(cluster0, header, subject);
  const backingName = ext.backingName(cluster0, header, subject);
  if (header.incompatible & hdr.INCOMPAT.DATA_FILE && extensions.dataFile === null) {
    throw new CorruptImageError('incompatible bit 2 (external data file) is set but no data file name extension is present', subject);
  }
  const l1 = L1Table.parse(await file.read(header.l1TableOffset, header.l1Size * 8), header.l1Size, cs, fileSize, subject);
  const refTable = await file.read(header.refcountTableOffset, header.refcountTableClusters * cs);
  const refcounts = new Refcounts(file, refTable, header.refcountTableOffset, cs, 2 ** header.refcountOrder, fileSize, subject);
  const areas: Array<{ what: string; from: number; to: number }> = [
    { what: 'the header cluster', from: 0, to: cs },
    { what: 'the refcount table', from: header.refcountTableOffset, to: header.refcountTableOffset + header.refcountTableClusters * cs },
  ];
  if (header.l1Size > 0) areas.push({ what: 'the active L1 table', from: header.l1TableOffset, to: header.l1TableOffset + header.l1Size * 8 });
  const snapshots = await readSnapshots(file, header, fileSize, subject);
  if (snapshots.list.length) {
    areas.push({ what: 'the snapshot table', from: header.snapshotsOffset, to: header.snapshotsOffset + snapshots.tableLength });
    snapshots.list.forEach((s, i) => {
      if (s.l1Size > 0) areas.push({ what: `the L1 table of snapshot ${snapshotName(s, i)}`, from: s.l1TableOffset, to: s.l1TableOffset + s.l1Size * 8 });
    });
  }
  checkOverlaps(areas, cs, subject);
  return { header, extensions, backingName, l1, refcounts, snapshots: snapshots.list, snapshotTableLength: snapshots.tableLength, fileSize };
}

async function readSnapshots(file: RandomAccessFile, h: hdr.Qcow2Header, fileSize: number, subject: string): Promise<{ list: snap.Snapshot[]; tableLength: number }> {
  if (h.nbSnapshots === 0) return { list: [], tableLength: 0 };
  if (h.nbSnapshots > snap.MAX_SNAPSHOTS) throw new CorruptImageError(`header field nb_snapshots is ${h.nbSnapshots}, more than qemu's limit of ${snap.MAX_SNAPSHOTS}`, subject);
  const bytes = await file.read(h.snapshotsOffset, Math.min(snap.MAX_TABLE_BYTES, fileSize - h.snapshotsOffset));
  const { snapshots, length } = snap.parse(bytes, h.nbSnapshots, subject);
  snapshots.forEach((s, i) => {
    const name = `snapshot ${snapshotName(s, i)}`;
    if (s.l1Size * 8 > hdr.MAX_L1_BYTES) throw new CorruptImageError(`L1 table of ${name} has ${s.l1Size} entries, more than qemu's limit`, subject);
    if (s.l1Size > 0 && (s.l1TableOffset % h.clusterSize !== 0 || s.l1TableOffset === 0 || s.l1TableOffset + s.l1Size * 8 > fileSize)) {
      throw new CorruptImageError(`L1 table of ${name} at ${s.l1TableOffset} is not a cluster-aligned table inside the file`, subject);
    }
  });
  return { list: snapshots, tableLength: length };
}

/** A snapshot as messages name it: its id when short and printable (ids come from the file), else its index. */
function snapshotName(s: snap.Snapshot, i: number): string {
  return /^[\x20-\x7e]{1,32}$/.test(s.id) ? s.id : `#${i}`;
}

/** Refuses metadata areas that share clusters (they are allocated in whole clusters), naming both. */
function checkOverlaps(areas: Array<{ what: string; from: number; to: number }>, cs: number, subject: string): void {
  const spans = areas.map((a) => ({ what: a.what, first: Math.floor(a.from / cs), end: Math.ceil(a.to / cs) })).sort((a, b) => a.first - b.first);
  let reach = spans[0];
  for (const s of spans.slice(1)) {
    if (s.first < reach.end) throw new CorruptImageError(`${s.what} overlaps ${reach.what}`, subject);
    if (s.end > reach.end) reach = s;
  }
}
