/**
 * L2 tables (qcow2.rst, "Cluster mapping" and "Extended L2 Entries"): one entry per guest cluster, 8 bytes, or 16
 * with extended L2 (the standard entry plus a bitmap: bits 0-31 subcluster allocated, 32-63 subcluster reads zeros).
 */
import { CorruptImageError } from '../../util/errors.js';
import { entryOffset } from './l1.js';
import { decodeDescriptor, type CompressedSpan } from './compressed.js';

/** What a piece of a guest cluster is. */
export const UNALLOCATED = 0;
export const DATA = 1;
export const ZERO = 2;
export const COMPRESSED = 3;
export type PieceKind = typeof UNALLOCATED | typeof DATA | typeof ZERO | typeof COMPRESSED;

/** Subclusters per cluster with extended L2. */
export const SUBCLUSTERS = 32;
const COMPRESSED_HI = 0x40000000;
const COPIED_HI = 0x80000000;
/** Standard descriptor bits 1-8 and 56-61 are reserved (bit 0 is the zero flag). */
const RESERVED_HI = 0x3f000000;
const RESERVED_LO = 0x1fe;

/** What the mapping needs to know about the image. */
export interface L2Context {
  clusterBits: number;
  clusterSize: number;
  extended: boolean;
  /** With an external data file, offset 0 plus COPIED is a real mapping to data-file offset 0. */
  hasDataFile: boolean;
  subject: string;
}

/** Receives the pieces of a cluster in order: `host` is the first byte's host offset for DATA. */
export type PieceSink = (kind: PieceKind, length: number, host: number, span: CompressedSpan | null) => void;

/** standardEntry's answers besides a host offset (>= 0: the whole cluster is DATA at that offset). */
export const ENTRY_ZERO = -1;
export const ENTRY_UNALLOCATED = -2;
/** Compressed, or an entry mapCluster must judge (it names what is wrong). */
export const ENTRY_OTHER = -3;

/**
 * A standard (not extended) L2 entry, given as its two big-endian 32-bit halves, as one number without allocating:
 * the host offset of a data cluster, ENTRY_ZERO, ENTRY_UNALLOCATED or ENTRY_OTHER (mapCluster's decisions).
 */
export function standardEntry(hi: number, lo: number, ctx: L2Context): number {
  if (hi & COMPRESSED_HI || hi & RESERVED_HI || lo & RESERVED_LO) return ENTRY_OTHER;
  const host = entryOffset(hi, lo);
  if (host % ctx.clusterSize !== 0) return ENTRY_OTHER;
  // The zero flag wins over an offset (a preallocated zero cluster): the backing file is not consulted.
  if (lo & 1) return ENTRY_ZERO;
  return host !== 0 || (ctx.hasDataFile && (hi & COPIED_HI) !== 0) ? host : ENTRY_UNALLOCATED;
}

/** Receives a run of whole clusters: `count` entries from `first`, all `kind`, data ones contiguous from `host`. */
export type RunSink = (kind: PieceKind, first: number, count: number, host: number) => void;

/**
 * Reports whole standard entries [j, end) of `view` (an L2 table) as runs of one kind, data clusters contiguous in
 * the file as one run, and returns where it stopped: `end`, or the first entry mapCluster must judge (compressed, or
 * one to refuse). One pass without allocating: a 4 GiB image of 64 KiB clusters has 65 536 entries, decoded twice per
 * createmeta (status, then the file runs), mostly before the JIT has compiled this loop.
 */
export function scanStandard(view: DataView, j: number, end: number, ctx: L2Context, sink: RunSink): number {
  const cs = ctx.clusterSize;
  let kind = -1;
  let first = j;
  let host = 0;
  for (; j < end; j++) {
    const entry = standardEntry(view.getUint32(j * 8), view.getUint32(j * 8 + 4), ctx);
    if (entry === ENTRY_OTHER) break;
    const k = entryKind(entry);
    if (k === kind && (k !== DATA || host + (j - first) * cs === entry)) continue;
    if (kind >= 0) sink(kind as PieceKind, first, j - first, host);
    kind = k;
    first = j;
    host = entry >= 0 ? entry : 0;
  }
  if (kind >= 0) sink(kind as PieceKind, first, j - first, host);
  return j;
}

/** The piece kind of a standardEntry answer other than ENTRY_OTHER. */
export function entryKind(entry: number): PieceKind {
  return entry >= 0 ? DATA : entry === ENTRY_ZERO ? ZERO : UNALLOCATED;
}

/**
 * Maps bytes [from, to) of the guest cluster described by entry `j` of `table` (guest cluster `vcluster`),
 * reporting pieces to `sink`. Refuses entries qemu-img check calls corrupt.
 */
export function mapCluster(table: Buffer, j: number, vcluster: number, from: number, to: number, ctx: L2Context, sink: PieceSink): void {
  const entry = ctx.extended ? ENTRY_OTHER : standardEntry(table.readUInt32BE(j * 8), table.readUInt32BE(j * 8 + 4), ctx);
  if (entry !== ENTRY_OTHER) {
    sink(entryKind(entry), to - from, entry >= 0 ? entry + from : 0, null);
    return;
  }
  // Extended, compressed, or an entry to refuse.
  const size = ctx.extended ? 16 : 8;
  const hi = table.readUInt32BE(j * size);
  const lo = table.readUInt32BE(j * size + 4);
  const where = () => `L2 entry of guest offset ${vcluster * ctx.clusterSize}`;
  const corrupt = (why: string) => new CorruptImageError(`${where()} ${why}`, ctx.subject);
  const allocBits = ctx.extended ? table.readUInt32BE(j * size + 12) : 0;
  const zeroBits = ctx.extended ? table.readUInt32BE(j * size + 8) : 0;
  if (hi & COMPRESSED_HI) {
    if (allocBits || zeroBits) throw corrupt('is compressed but has a non-zero subcluster bitmap');
    sink(COMPRESSED, to - from, 0, decodeDescriptor(hi, lo, ctx.clusterBits));
    return;
  }
  if (hi & RESERVED_HI || lo & RESERVED_LO) throw corrupt(`has reserved bits set (0x${hi.toString(16).padStart(8, '0')}${lo.toString(16).padStart(8, '0')})`);
  const host = entryOffset(hi, lo);
  if (host % ctx.clusterSize !== 0) throw corrupt(`points at ${host}, not cluster aligned`);
  const mapped = host !== 0 || (ctx.hasDataFile && (hi & COPIED_HI) !== 0);
  if (allocBits & zeroBits) throw corrupt('marks a subcluster both allocated and zero');
  if (!mapped && allocBits) throw corrupt('is unallocated but has subclusters marked allocated');
  const sub = ctx.clusterSize / SUBCLUSTERS;
  for (let pos = from; pos < to; ) {
    const s = Math.floor(pos / sub);
    const bit = (1 << s) >>> 0;
    const end = Math.min(to, (s + 1) * sub);
    if (allocBits & bit) sink(DATA, end - pos, host + pos, null);
    else if (zeroBits & bit) sink(ZERO, end - pos, 0, null);
    else sink(UNALLOCATED, end - pos, 0, null);
    pos = end;
  }
}

/** The fields of one entry (standard, or extended with its subcluster bitmaps), for writers. */
export interface EntryFields {
  /** Compressed cluster: where its bytes are (host is 0). */
  span: CompressedSpan | null;
  host: number;
  /** The standard zero flag (never set in extended mode, where the bitmap says it). */
  zero: boolean;
  copied: boolean;
  /** Extended L2: subclusters allocated, and subclusters that read as zeros (bit i = subcluster i); 0 otherwise. */
  alloc: number;
  zeros: number;
}

/** All 32 subclusters. */
export const ALL_SUBCLUSTERS = 0xffffffff;

/** Reads entry `j` of an L2 table. */
export function readEntry(table: Buffer, j: number, clusterBits: number, extended = false): EntryFields {
  const size = extended ? 16 : 8;
  const hi = table.readUInt32BE(j * size);
  const lo = table.readUInt32BE(j * size + 4);
  const alloc = extended ? table.readUInt32BE(j * size + 12) : 0;
  const zeros = extended ? table.readUInt32BE(j * size + 8) : 0;
  if (hi & COMPRESSED_HI) return { span: decodeDescriptor(hi, lo, clusterBits), host: 0, zero: false, copied: false, alloc, zeros };
  return { span: null, host: entryOffset(hi, lo), zero: !extended && (lo & 1) === 1, copied: (hi & COPIED_HI) !== 0, alloc, zeros };
}

/**
 * Writes entry `j`: `host` a cluster we own alone (COPIED; with an external data file offset 0 is a real mapping)
 * or null for none, the standard zero flag, and in extended mode the subcluster bitmaps.
 */
export function writeEntry(table: Buffer, j: number, host: number | null, zero: boolean, bitmaps?: { alloc: number; zeros: number }): void {
  const size = bitmaps ? 16 : 8;
  table.writeBigUInt64BE((host !== null ? BigInt(host) | (1n << 63n) : 0n) | (zero && !bitmaps ? 1n : 0n), j * size);
  if (bitmaps) {
    table.writeUInt32BE(bitmaps.zeros >>> 0, j * size + 8);
    table.writeUInt32BE(bitmaps.alloc >>> 0, j * size + 12);
  }
}

/** The subclusters that bytes [from, to) of a cluster touch (`whole`: only those they cover entirely). */
export function subclusterBits(from: number, to: number, clusterSize: number, whole = false): number {
  const sub = clusterSize / SUBCLUSTERS;
  const first = whole ? Math.ceil(from / sub) : Math.floor(from / sub);
  const end = whole ? Math.floor(to / sub) : Math.ceil(to / sub);
  let bits = 0;
  for (let i = first; i < end; i++) bits |= 1 << i;
  return bits >>> 0;
}
