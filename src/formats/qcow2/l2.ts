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

/**
 * Maps bytes [from, to) of the guest cluster described by entry `j` of `table` (guest cluster `vcluster`),
 * reporting pieces to `sink`. Refuses entries qemu-img check calls corrupt.
 */
export function mapCluster(table: Buffer, j: number, vcluster: number, from: number, to: number, ctx: L2Context, sink: PieceSink): void {
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
  if (!ctx.extended) {
    // The zero flag wins over an offset (a preallocated zero cluster): the backing file is not consulted.
    if (lo & 1) sink(ZERO, to - from, 0, null);
    else if (mapped) sink(DATA, to - from, host + from, null);
    else sink(UNALLOCATED, to - from, 0, null);
    return;
  }
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

/** The fields of one standard (8-byte) entry, for writers. */
export interface EntryFields {
  /** Compressed cluster: where its bytes are (host is 0). */
  span: CompressedSpan | null;
  host: number;
  zero: boolean;
  copied: boolean;
}

/** Reads entry `j` of a standard L2 table. */
export function readEntry(table: Buffer, j: number, clusterBits: number): EntryFields {
  const hi = table.readUInt32BE(j * 8);
  const lo = table.readUInt32BE(j * 8 + 4);
  if (hi & COMPRESSED_HI) return { span: decodeDescriptor(hi, lo, clusterBits), host: 0, zero: false, copied: false };
  return { span: null, host: entryOffset(hi, lo), zero: (lo & 1) === 1, copied: (hi & COPIED_HI) !== 0 };
}

/** Writes entry `j` of a standard L2 table: a host cluster (COPIED when we own it alone) and the zero flag. */
export function writeEntry(table: Buffer, j: number, host: number, zero: boolean): void {
  table.writeBigUInt64BE((host ? BigInt(host) | (1n << 63n) : 0n) | (zero ? 1n : 0n), j * 8);
}
