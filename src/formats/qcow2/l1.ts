/**
 * The L1 table (qcow2.rst, "Cluster mapping"): one big-endian u64 per L2 table. Bits 9-55 hold the L2 table's
 * cluster-aligned offset (0 = the whole range is unallocated), bit 63 is COPIED (refcount exactly 1), the rest reserved.
 */
import { CorruptImageError } from '../../util/errors.js';

/** Bits 0-8 and 56-62 must be zero (qemu's L1E_RESERVED_MASK). */
const RESERVED_HI = 0x7f000000;
const RESERVED_LO = 0x1ff;
/** Bit 63. */
export const COPIED_HI = 0x80000000;

/** Host offset held in bits 9-55 of an entry given as its two 32-bit halves. */
export function entryOffset(hi: number, lo: number): number {
  return (hi & 0x00ffffff) * 2 ** 32 + (lo - (lo & 0x1ff));
}

/** An active (or snapshot) L1 table with checked entries. */
export class L1Table {
  private constructor(
    readonly bytes: Buffer,
    readonly size: number,
  ) {}

  /**
   * Checks every entry: reserved bits clear, L2 tables cluster aligned, after the header cluster and inside the
   * file. `what` names the table in messages (`L1 table`, `L1 table of snapshot 2`).
   */
  static parse(bytes: Buffer, size: number, clusterSize: number, fileSize: number, subject: string, what = 'L1 table'): L1Table {
    if (bytes.length < size * 8) throw new CorruptImageError(`${what} is cut short by the end of the file`, subject);
    for (let i = 0; i < size; i++) {
      const hi = bytes.readUInt32BE(i * 8);
      const lo = bytes.readUInt32BE(i * 8 + 4);
      if (hi & RESERVED_HI || lo & RESERVED_LO) throw new CorruptImageError(`${what} entry ${i} has reserved bits set (0x${hi.toString(16).padStart(8, '0')}${lo.toString(16).padStart(8, '0')})`, subject);
      const off = entryOffset(hi, lo);
      if (off === 0) continue;
      if (off % clusterSize !== 0) throw new CorruptImageError(`${what} entry ${i} points at ${off}, not cluster aligned`, subject);
      if (off + clusterSize > fileSize) throw new CorruptImageError(`${what} entry ${i} points at an L2 table at ${off}, past the end of the file (${fileSize})`, subject);
    }
    return new L1Table(bytes, size);
  }

  /** True when entry `i` has COPIED set: its L2 table has refcount 1 and may be changed in place. */
  copied(i: number): boolean {
    return i < this.size && (this.bytes.readUInt32BE(i * 8) & COPIED_HI) !== 0;
  }

  /** Points entry `i` at an L2 table we own (COPIED set). */
  set(i: number, offset: number): void {
    this.bytes.writeBigUInt64BE(BigInt(offset) | (1n << 63n), i * 8);
  }

  /** The L2 table offset of entry `i`, 0 when unallocated (or past the table). */
  l2Offset(i: number): number {
    if (i >= this.size) return 0;
    return entryOffset(this.bytes.readUInt32BE(i * 8), this.bytes.readUInt32BE(i * 8 + 4));
  }
}
