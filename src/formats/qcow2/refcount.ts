/**
 * Refcounts (qcow2.rst, "Host cluster management"): a table of u64 entries (bits 9-63 = refcount block offset,
 * 0 = block not allocated) pointing at one-cluster blocks of `refcount_bits`-wide big-endian counters, packed
 * least-significant bit first below 8 bits.
 */
import { CorruptImageError } from '../../util/errors.js';
import type { RandomAccessFile } from '../../io/store.js';

/** Refcount blocks kept in memory. */
const MAX_CACHED_BLOCKS = 64;

/** Reads the counter `index` of a refcount block with `bits`-wide entries. */
export function getEntry(block: Buffer, index: number, bits: number): number {
  if (bits >= 8) {
    const at = index * (bits / 8);
    switch (bits) {
      case 8:
        return block[at];
      case 16:
        return block.readUInt16BE(at);
      case 32:
        return block.readUInt32BE(at);
      default:
        return Number(block.readBigUInt64BE(at));
    }
  }
  const perByte = 8 / bits;
  const shift = (index % perByte) * bits;
  return (block[Math.floor(index / perByte)] >> shift) & ((1 << bits) - 1);
}

/** Sets counter `index` of a block; `value` must fit in `bits`. */
export function setEntry(block: Buffer, index: number, bits: number, value: number): void {
  if (value < 0 || (bits < 53 && value >= 2 ** bits)) throw new RangeError(`refcount ${value} does not fit in ${bits} bits`);
  if (bits >= 8) {
    const at = index * (bits / 8);
    switch (bits) {
      case 8:
        block[at] = value;
        return;
      case 16:
        block.writeUInt16BE(value, at);
        return;
      case 32:
        block.writeUInt32BE(value, at);
        return;
      default:
        block.writeBigUInt64BE(BigInt(value), at);
        return;
    }
  }
  const perByte = 8 / bits;
  const shift = (index % perByte) * bits;
  const mask = ((1 << bits) - 1) << shift;
  const i = Math.floor(index / perByte);
  block[i] = (block[i] & ~mask) | (value << shift);
}

/** Read access to an image's refcounts. */
export class Refcounts {
  readonly entriesPerBlock: number;
  private readonly blocks = new Map<number, Buffer>();

  constructor(
    private readonly file: RandomAccessFile,
    private readonly table: Buffer,
    private readonly clusterSize: number,
    readonly bits: number,
    private readonly fileSize: number,
    private readonly subject: string,
  ) {
    this.entriesPerBlock = (clusterSize * 8) / bits;
  }

  /** Entries of the refcount table. */
  get tableEntries(): number {
    return this.table.length / 8;
  }

  /** Offset of refcount block `i`, 0 when not allocated; checked to be aligned and inside the file. */
  blockOffset(i: number): number {
    if (i >= this.tableEntries) return 0;
    const hi = this.table.readUInt32BE(i * 8);
    const lo = this.table.readUInt32BE(i * 8 + 4);
    if (lo & 0x1ff) throw new CorruptImageError(`refcount table entry ${i} has reserved bits set`, this.subject);
    const off = hi * 2 ** 32 + lo;
    if (off === 0) return 0;
    if (off % this.clusterSize !== 0 || off + this.clusterSize > this.fileSize) {
      throw new CorruptImageError(`refcount table entry ${i} points at ${off}, not a cluster inside the file (${this.fileSize} bytes)`, this.subject);
    }
    return off;
  }

  /** The refcount of host cluster `cluster` (0 when its block is not allocated). */
  async get(cluster: number): Promise<number> {
    const i = Math.floor(cluster / this.entriesPerBlock);
    let block = this.blocks.get(i);
    if (!block) {
      const off = this.blockOffset(i);
      if (off === 0) return 0;
      block = await this.file.read(off, this.clusterSize);
      if (this.blocks.size >= MAX_CACHED_BLOCKS) this.blocks.delete(this.blocks.keys().next().value!);
      this.blocks.set(i, block);
    }
    return getEntry(block, cluster % this.entriesPerBlock, this.bits);
  }
}
