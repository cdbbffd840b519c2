/**
 * Refcounts (qcow2.rst, "Host cluster management"): a table of u64 entries (bits 9-63 = refcount block offset,
 * 0 = block not allocated) pointing at one-cluster blocks of `refcount_bits`-wide big-endian counters, packed
 * least-significant bit first below 8 bits.
 */
import { CorruptImageError, UnsupportedError } from '../../util/errors.js';
import { MAX_REFTABLE_BYTES } from './header.js';
import { evictOneClean } from '../../util/cache.js';
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

/**
 * An image's refcounts, read and (when writable) updated. Allocation is append-only: new clusters come from the end
 * of the file, so a cluster freed in this session is never reused before its frees are durable. Updates stay in
 * memory until commitIncrements() (before anything references the new clusters) and commitFrees() (after the
 * references are gone), which is qemu's ordering.
 */
export class Refcounts {
  readonly entriesPerBlock: number;
  private readonly blocks = new Map<number, Buffer>();
  private readonly dirty = new Set<number>();
  private tableDirty = false;
  /** The table's clusters before it moved in this commit cycle (freed once the header points at the new one). */
  private moved = false;
  private pendingFree: Array<[number, number]> = [];
  /** First cluster past everything allocated. */
  private end: number;

  constructor(
    private readonly file: RandomAccessFile,
    private table: Buffer,
    private tableOffset: number,
    private readonly clusterSize: number,
    readonly bits: number,
    private fileSize: number,
    private readonly subject: string,
  ) {
    this.entriesPerBlock = (clusterSize * 8) / bits;
    this.end = Math.ceil(fileSize / clusterSize);
  }

  /** Entries of the refcount table. */
  get tableEntries(): number {
    return this.table.length / 8;
  }

  /** Where the table is and how many clusters it takes (for the header). */
  get tableLocation(): { offset: number; clusters: number } {
    return { offset: this.tableOffset, clusters: this.table.length / this.clusterSize };
  }

  /** Offset of refcount block `i`, 0 when not allocated; checked to be aligned and inside the file. */
  blockOffset(i: number): number {
    if (i >= this.tableEntries) return 0;
    const hi = this.table.readUInt32BE(i * 8);
    const lo = this.table.readUInt32BE(i * 8 + 4);
    if (lo & 0x1ff) throw new CorruptImageError(`refcount table entry ${i} has reserved bits set`, this.subject);
    const off = hi * 2 ** 32 + lo;
    if (off === 0) return 0;
    if (off % this.clusterSize !== 0 || (off + this.clusterSize > this.fileSize && !this.blocks.has(i))) {
      throw new CorruptImageError(`refcount table entry ${i} points at ${off}, not a cluster inside the file (${this.fileSize} bytes)`, this.subject);
    }
    return off;
  }

  private async loadBlock(i: number): Promise<Buffer | null> {
    let block = this.blocks.get(i);
    if (block) return block;
    const off = this.blockOffset(i);
    if (off === 0) return null;
    block = await this.file.read(off, this.clusterSize);
    const raced = this.blocks.get(i);
    if (raced) return raced;
    // Clean blocks may be dropped; blocks with unwritten changes stay.
    if (this.blocks.size >= MAX_CACHED_BLOCKS) evictOneClean(this.blocks, this.dirty);
    this.blocks.set(i, block);
    return block;
  }

  /** The refcount of host cluster `cluster` (0 when its block is not allocated). */
  async get(cluster: number): Promise<number> {
    const block = await this.loadBlock(Math.floor(cluster / this.entriesPerBlock));
    return block ? getEntry(block, cluster % this.entriesPerBlock, this.bits) : 0;
  }

  /** Adds `delta` to a cluster's refcount, allocating its refcount block (and a bigger table) when needed. */
  async add(cluster: number, delta: number): Promise<void> {
    const i = Math.floor(cluster / this.entriesPerBlock);
    let block = await this.loadBlock(i);
    if (!block) {
      if (delta < 0) throw new CorruptImageError(`cluster ${cluster} is referenced but has refcount 0`, this.subject);
      block = await this.newBlock(i);
    }
    const j = cluster % this.entriesPerBlock;
    const v = getEntry(block, j, this.bits) + delta;
    if (v < 0) throw new CorruptImageError(`cluster ${cluster} is referenced but has refcount 0`, this.subject);
    if (this.bits < 53 && v >= 2 ** this.bits) throw new UnsupportedError(`refcount of cluster ${cluster} would overflow ${this.bits} bits`, this.subject);
    setEntry(block, j, this.bits, v);
    this.dirty.add(i);
  }

  private async newBlock(i: number): Promise<Buffer> {
    if (i >= this.tableEntries) {
      await this.growTable(i + 1);
      // Counting the new table's own clusters may have created this very block.
      const made = this.blocks.get(i);
      if (made) return made;
    }
    const at = this.end++;
    const block = Buffer.alloc(this.clusterSize);
    this.blocks.set(i, block);
    this.dirty.add(i);
    this.table.writeBigUInt64BE(BigInt(at * this.clusterSize), i * 8);
    this.tableDirty = true;
    this.fileSize = Math.max(this.fileSize, (at + 1) * this.clusterSize);
    await this.add(at, 1);
    return block;
  }

  private async growTable(entries: number): Promise<void> {
    const clusters = Math.ceil((Math.max(entries, this.tableEntries * 2) * 8) / this.clusterSize);
    if (clusters * this.clusterSize > MAX_REFTABLE_BYTES) throw new UnsupportedError(`the refcount table would exceed qemu's limit of ${MAX_REFTABLE_BYTES} bytes`, this.subject);
    const old = this.tableLocation;
    const table = Buffer.alloc(clusters * this.clusterSize);
    this.table.copy(table);
    const first = this.end;
    this.end += clusters;
    this.table = table;
    this.tableOffset = first * this.clusterSize;
    this.tableDirty = true;
    this.moved = true;
    this.fileSize = Math.max(this.fileSize, this.end * this.clusterSize);
    for (let c = first; c < first + clusters; c++) await this.add(c, 1);
    this.deferFree(old.offset, old.clusters * this.clusterSize);
  }

  /** Reserves `n` consecutive clusters at the end of the file with refcount 1; returns the first one's offset. */
  async allocate(n: number): Promise<number> {
    const first = this.end;
    this.end += n;
    this.fileSize = Math.max(this.fileSize, this.end * this.clusterSize);
    for (let c = first; c < first + n; c++) await this.add(c, 1);
    return first * this.clusterSize;
  }

  /** Drops one reference from every cluster bytes [offset, offset+length) touch, once commitFrees() runs. */
  deferFree(offset: number, length: number): void {
    const first = Math.floor(offset / this.clusterSize);
    const last = Math.floor((offset + length - 1) / this.clusterSize);
    for (let c = first; c <= last; c++) this.pendingFree.push([c, -1]);
  }

  /** True when increments or frees wait to be written. */
  get pending(): boolean {
    return this.dirty.size > 0 || this.tableDirty || this.pendingFree.length > 0;
  }

  private async writeBlocks(): Promise<void> {
    for (const i of [...this.dirty].sort((a, b) => a - b)) await this.file.write(this.blockOffset(i), this.blocks.get(i)!);
    this.dirty.clear();
  }

  /**
   * Makes increments durable before anything references the new clusters: blocks, then the table (in place, or at
   * its new place followed by `pointHeader`), each step flushed.
   */
  async commitIncrements(pointHeader: (offset: number, clusters: number) => Promise<void>): Promise<void> {
    if (this.dirty.size === 0 && !this.tableDirty) return;
    await this.writeBlocks();
    await this.file.flush();
    if (!this.tableDirty) return;
    await this.file.write(this.tableOffset, this.table);
    await this.file.flush();
    if (this.moved) {
      const loc = this.tableLocation;
      await pointHeader(loc.offset, loc.clusters);
      this.moved = false;
    }
    this.tableDirty = false;
  }

  /** Applies the frees deferred until the references were gone, and makes them durable. */
  async commitFrees(pointHeader: (offset: number, clusters: number) => Promise<void>): Promise<void> {
    if (this.pendingFree.length === 0) return;
    const frees = this.pendingFree;
    this.pendingFree = [];
    for (const [c, d] of frees) await this.add(c, d);
    await this.commitIncrements(pointHeader);
  }
}
