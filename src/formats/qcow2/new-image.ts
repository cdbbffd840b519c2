/**
 * The fixed part of a new QCOW2 image (version 3, standard L2 entries, 16-bit refcounts), shared by `create.ts`
 * (a file written at once) and the one-pass stream encoder: table sizes, the refcount structures' fixed point, and
 * cluster 0 (header, backing-format extension, end marker, backing file name).
 */
import type { DiskFormat } from '../disk.js';
import { UnsupportedError, UsageError } from '../../util/errors.js';
import * as hdr from './header.js';
import * as ext from './extensions.js';
import { setEntry } from './refcount.js';

/** Refcount width of new images: 2^4 = 16 bits, as qemu-img writes. */
export const NEW_REFCOUNT_ORDER = 4;
export const NEW_REFCOUNT_BITS = 2 ** NEW_REFCOUNT_ORDER;
/** qemu-img 7.2 writes 112 (the compression type byte included). */
const NEW_HEADER_LENGTH = 112;
/** qemu's names for the formats a backing-format extension may name. */
export const QEMU_FORMAT_NAMES: Record<DiskFormat, string> = { qcow2: 'qcow2', raw: 'raw', vhd: 'vpc', vhdx: 'vhdx' };

/** Checks a cluster size and returns its cluster_bits. */
export function clusterBitsOf(cs: number, subject: string): number {
  const bits = Math.log2(cs);
  if (!Number.isInteger(bits) || bits < hdr.MIN_CLUSTER_BITS || bits > hdr.MAX_CLUSTER_BITS) {
    throw new UsageError(`QCOW2 cluster size must be a power of two from 512 bytes to 2 MiB, not ${cs}`, subject);
  }
  return bits;
}

/** Entries of the L1 table for `size` bytes (at least one, as qemu-img writes), within qemu's limit. */
export function l1SizeFor(size: number, cs: number, subject: string): number {
  const l1Size = Math.max(1, Math.ceil(size / ((cs / 8) * cs)));
  if (l1Size * 8 > hdr.MAX_L1_BYTES) throw new UsageError(`a ${size}-byte QCOW2 needs bigger clusters than ${cs} bytes (its L1 table would pass qemu's limit)`, subject);
  return l1Size;
}

/** Refcount blocks and refcount table clusters that count `others` clusters and themselves (the smallest fixed point). */
export function refcountSpace(others: number, cs: number, subject: string): { blocks: number; tableClusters: number } {
  const perBlock = (cs * 8) / NEW_REFCOUNT_BITS;
  let blocks = 1;
  let tableClusters = 1;
  for (;;) {
    const b = Math.ceil((others + blocks + tableClusters) / perBlock);
    const t = Math.ceil((b * 8) / cs);
    if (b === blocks && t === tableClusters) break;
    blocks = b;
    tableClusters = t;
  }
  if (tableClusters * cs > hdr.MAX_REFTABLE_BYTES) throw new UnsupportedError(`the refcount table would pass qemu's limit of ${hdr.MAX_REFTABLE_BYTES} bytes: use bigger clusters`, subject);
  return { blocks, tableClusters };
}

/** What cluster 0 of a new image records. */
export interface NewHeader {
  clusterBits: number;
  size: number;
  l1Size: number;
  l1TableOffset: number;
  refcountTableOffset: number;
  refcountTableClusters: number;
  /** The backing file's name as stored, and its qemu format name. */
  backing: { name: string; format: string } | null;
}

/** Cluster 0 of a new image: header, backing-format extension, end marker, backing file name. */
export function headerCluster(f: NewHeader, subject: string): Buffer {
  const cs = 2 ** f.clusterBits;
  const extensions = ext.serialize(f.backing ? f.backing.format : null);
  const nameBytes = f.backing ? Buffer.from(f.backing.name, 'utf8') : null;
  if (nameBytes && nameBytes.length > hdr.MAX_BACKING_NAME) throw new UsageError(`the backing file name is longer than ${hdr.MAX_BACKING_NAME} bytes`, subject);
  if (NEW_HEADER_LENGTH + extensions.length + (nameBytes?.length ?? 0) > cs) throw new UsageError('the backing file name does not fit in the header cluster: use bigger clusters', subject);
  const header: hdr.Qcow2Header = {
    version: 3,
    backingFileOffset: nameBytes ? NEW_HEADER_LENGTH + extensions.length : 0,
    backingFileSize: nameBytes?.length ?? 0,
    clusterBits: f.clusterBits,
    clusterSize: cs,
    size: f.size,
    cryptMethod: 0,
    l1Size: f.l1Size,
    l1TableOffset: f.l1TableOffset,
    refcountTableOffset: f.refcountTableOffset,
    refcountTableClusters: f.refcountTableClusters,
    nbSnapshots: 0,
    snapshotsOffset: 0,
    incompatible: 0n,
    compatible: 0n,
    autoclear: 0n,
    refcountOrder: NEW_REFCOUNT_ORDER,
    headerLength: NEW_HEADER_LENGTH,
    compressionType: hdr.COMPRESSION_DEFLATE,
  };
  const out = Buffer.alloc(cs);
  hdr.serialize(header).copy(out, 0);
  extensions.copy(out, NEW_HEADER_LENGTH);
  nameBytes?.copy(out, header.backingFileOffset);
  return out;
}

/** Refcount block `b` of an image whose clusters 0..total-1 all have refcount 1 (and no others). */
export function allOnesRefcountBlock(b: number, total: number, cs: number): Buffer {
  const perBlock = (cs * 8) / NEW_REFCOUNT_BITS;
  const block = Buffer.alloc(cs);
  const n = Math.min(perBlock, total - b * perBlock);
  for (let j = 0; j < n; j++) setEntry(block, j, NEW_REFCOUNT_BITS, 1);
  return block;
}

/** The refcount table pointing at `blocks` consecutive refcount blocks starting at byte `firstBlock`. */
export function refcountTable(tableClusters: number, blocks: number, firstBlock: number, cs: number): Buffer {
  const table = Buffer.alloc(tableClusters * cs);
  for (let b = 0; b < blocks; b++) table.writeBigUInt64BE(BigInt(firstBlock + b * cs), b * 8);
  return table;
}
