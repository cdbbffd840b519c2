/**
 * The QCOW2 header (qemu docs/interop/qcow2.rst, "Header"): big-endian fields at the start of cluster 0.
 * Parsing checks every field a reader later sizes or seeks by, against qemu's limits and the file size.
 */
import { CorruptImageError, UnsupportedError } from '../../util/errors.js';

/** `QFI\xfb`. */
export const MAGIC = 0x514649fb;
/** Bytes of the version 2 header; version 3 adds fields up to 104 (and `compression_type` at 104 when longer). */
export const V2_HEADER_LENGTH = 72;
export const V3_MIN_HEADER_LENGTH = 104;
/** qemu accepts cluster sizes 512 B to 2 MiB. */
export const MIN_CLUSTER_BITS = 9;
export const MAX_CLUSTER_BITS = 21;
/** qemu's limits (QCOW_MAX_L1_SIZE, QCOW_MAX_REFTABLE_SIZE): anything larger is refused before it is read. */
export const MAX_L1_BYTES = 32 << 20;
export const MAX_REFTABLE_BYTES = 8 << 20;
export const MAX_BACKING_NAME = 1023;

/** Incompatible feature bits. */
export const INCOMPAT = { DIRTY: 1n, CORRUPT: 2n, DATA_FILE: 4n, COMPRESSION: 8n, EXTENDED_L2: 16n } as const;
const KNOWN_INCOMPAT = 0x1fn;
/** Compatible feature bits. */
export const COMPAT = { LAZY_REFCOUNTS: 1n } as const;
/** Autoclear feature bits. */
export const AUTOCLEAR = { BITMAPS: 1n, DATA_FILE_RAW: 2n } as const;

/** Compression types (byte 104). */
export const COMPRESSION_DEFLATE = 0;
export const COMPRESSION_ZSTD = 1;

/** The header fields, offsets as numbers (checked to be safe integers). */
export interface Qcow2Header {
  version: 2 | 3;
  backingFileOffset: number;
  backingFileSize: number;
  clusterBits: number;
  clusterSize: number;
  /** The virtual size as stored (not rounded). */
  size: number;
  cryptMethod: number;
  l1Size: number;
  l1TableOffset: number;
  refcountTableOffset: number;
  refcountTableClusters: number;
  nbSnapshots: number;
  snapshotsOffset: number;
  incompatible: bigint;
  compatible: bigint;
  autoclear: bigint;
  refcountOrder: number;
  headerLength: number;
  compressionType: number;
}

/** True when the first bytes of a file are a QCOW2 magic. */
export function hasMagic(b: Buffer): boolean {
  return b.length >= 4 && b.readUInt32BE(0) === MAGIC;
}

function u64(b: Buffer, at: number, field: string, subject: string): number {
  const v = b.readBigUInt64BE(at);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new CorruptImageError(`header field ${field} is ${v}, larger than any image`, subject);
  return Number(v);
}

/** Bytes each L2 entry takes: 8, or 16 with extended L2 (subclusters). */
export function l2EntrySize(h: Pick<Qcow2Header, 'incompatible'>): number {
  return h.incompatible & INCOMPAT.EXTENDED_L2 ? 16 : 8;
}

/** Entries of an L2 table (one cluster). */
export function l2Entries(h: Pick<Qcow2Header, 'incompatible' | 'clusterSize'>): number {
  return h.clusterSize / l2EntrySize(h);
}

/**
 * Parses and checks the header from the first bytes of the file (at least 112, or all of a shorter file).
 * `fileSize` bounds every table the header places.
 */
export function parse(b: Buffer, fileSize: number, subject: string): Qcow2Header {
  if (b.length < V2_HEADER_LENGTH) throw new CorruptImageError(`file is ${fileSize} bytes, shorter than a QCOW2 header`, subject);
  if (!hasMagic(b)) throw new CorruptImageError('not a QCOW2 image (bad magic)', subject);
  const version = b.readUInt32BE(4);
  if (version !== 2 && version !== 3) throw new UnsupportedError(`QCOW2 version ${version} is not supported (only 2 and 3)`, subject);
  const clusterBits = b.readUInt32BE(20);
  if (clusterBits < MIN_CLUSTER_BITS || clusterBits > MAX_CLUSTER_BITS) {
    throw new CorruptImageError(`header field cluster_bits is ${clusterBits}, outside ${MIN_CLUSTER_BITS}..${MAX_CLUSTER_BITS}`, subject);
  }
  const h: Qcow2Header = {
    version,
    backingFileOffset: u64(b, 8, 'backing_file_offset', subject),
    backingFileSize: b.readUInt32BE(16),
    clusterBits,
    clusterSize: 2 ** clusterBits,
    size: u64(b, 24, 'size', subject),
    cryptMethod: b.readUInt32BE(32),
    l1Size: b.readUInt32BE(36),
    l1TableOffset: u64(b, 40, 'l1_table_offset', subject),
    refcountTableOffset: u64(b, 48, 'refcount_table_offset', subject),
    refcountTableClusters: b.readUInt32BE(56),
    nbSnapshots: b.readUInt32BE(60),
    snapshotsOffset: u64(b, 64, 'snapshots_offset', subject),
    incompatible: 0n,
    compatible: 0n,
    autoclear: 0n,
    refcountOrder: 4,
    headerLength: V2_HEADER_LENGTH,
    compressionType: COMPRESSION_DEFLATE,
  };
  if (version === 3) {
    if (b.length < V3_MIN_HEADER_LENGTH) throw new CorruptImageError(`file is ${fileSize} bytes, shorter than a QCOW2 version 3 header`, subject);
    h.incompatible = b.readBigUInt64BE(72);
    h.compatible = b.readBigUInt64BE(80);
    h.autoclear = b.readBigUInt64BE(88);
    h.refcountOrder = b.readUInt32BE(96);
    h.headerLength = b.readUInt32BE(100);
    if (h.headerLength < V3_MIN_HEADER_LENGTH || h.headerLength % 8 !== 0 || h.headerLength > h.clusterSize) {
      throw new CorruptImageError(`header field header_length is ${h.headerLength}, not a multiple of 8 between 104 and the cluster size`, subject);
    }
    if (h.headerLength > V3_MIN_HEADER_LENGTH) {
      if (b.length < V3_MIN_HEADER_LENGTH + 1) throw new CorruptImageError('file ends inside the header', subject);
      h.compressionType = b[104];
    }
  }
  check(h, fileSize, subject);
  return h;
}

function hex(v: bigint): string {
  return `0x${v.toString(16)}`;
}

function check(h: Qcow2Header, fileSize: number, subject: string): void {
  const fail = (field: string, why: string) => new CorruptImageError(`header field ${field} ${why}`, subject);
  const unknown = h.incompatible & ~KNOWN_INCOMPAT;
  if (unknown) throw new UnsupportedError(`header field incompatible_features has unknown bits ${hex(unknown)}: this image needs a newer reader`, subject);
  if (h.cryptMethod !== 0) throw new UnsupportedError(`header field crypt_method is ${h.cryptMethod} (${h.cryptMethod === 1 ? 'AES' : h.cryptMethod === 2 ? 'LUKS' : 'unknown'}): encrypted images are not supported`, subject);
  if (h.refcountOrder > 6) throw fail('refcount_order', `is ${h.refcountOrder}, more than 6 (64-bit refcounts)`);
  const compressionBit = Boolean(h.incompatible & INCOMPAT.COMPRESSION);
  if (compressionBit !== (h.compressionType !== COMPRESSION_DEFLATE)) {
    throw fail('compression_type', `is ${h.compressionType} but incompatible bit 3 (compression type) is ${compressionBit ? 'set' : 'clear'}`);
  }
  if (h.compressionType > COMPRESSION_ZSTD) throw new UnsupportedError(`header field compression_type is ${h.compressionType}, unknown`, subject);
  if (h.incompatible & INCOMPAT.EXTENDED_L2 && h.clusterBits < 14) throw fail('cluster_bits', `is ${h.clusterBits}: extended L2 entries need clusters of at least 16 KiB`);
  const cs = h.clusterSize;
  const aligned = (v: number) => v % cs === 0;
  // One cluster per table entry of each level: the largest virtual size the L1 limit allows, and no more than 2^53.
  const maxSize = Math.min(Number.MAX_SAFE_INTEGER, (MAX_L1_BYTES / 8) * l2Entries(h) * cs);
  if (h.size > maxSize) throw fail('size', `is ${h.size}, more than a ${cs}-byte-cluster image can address (${maxSize})`);
  const need = Math.ceil(h.size / (l2Entries(h) * cs));
  if (h.l1Size * 8 > MAX_L1_BYTES) throw fail('l1_size', `is ${h.l1Size} entries, more than qemu's limit of ${MAX_L1_BYTES / 8}`);
  if (h.l1Size < need) throw fail('l1_size', `is ${h.l1Size}, too small for the virtual size (needs ${need})`);
  if (h.l1Size > 0 && (!aligned(h.l1TableOffset) || h.l1TableOffset === 0)) throw fail('l1_table_offset', `${h.l1TableOffset} is not a cluster-aligned offset after the header`);
  if (h.l1Size > 0 && h.l1TableOffset + h.l1Size * 8 > fileSize) throw fail('l1_table_offset', `places the L1 table at ${h.l1TableOffset}+${h.l1Size * 8}, past the end of the file (${fileSize})`);
  if (h.refcountTableClusters * cs > MAX_REFTABLE_BYTES) throw fail('refcount_table_clusters', `is ${h.refcountTableClusters}, more than qemu's limit of ${MAX_REFTABLE_BYTES} bytes`);
  if (h.refcountTableClusters === 0) throw fail('refcount_table_clusters', 'is 0');
  if (!aligned(h.refcountTableOffset) || h.refcountTableOffset === 0) throw fail('refcount_table_offset', `${h.refcountTableOffset} is not a cluster-aligned offset after the header`);
  if (h.refcountTableOffset + h.refcountTableClusters * cs > fileSize) {
    throw fail('refcount_table_offset', `places the refcount table at ${h.refcountTableOffset}+${h.refcountTableClusters * cs}, past the end of the file (${fileSize})`);
  }
  if (h.nbSnapshots > 0 && (!aligned(h.snapshotsOffset) || h.snapshotsOffset === 0 || h.snapshotsOffset >= fileSize)) {
    throw fail('snapshots_offset', `${h.snapshotsOffset} is not a cluster-aligned offset inside the file`);
  }
  if (h.backingFileOffset !== 0) {
    if (h.backingFileSize > MAX_BACKING_NAME) throw fail('backing_file_size', `is ${h.backingFileSize}, more than ${MAX_BACKING_NAME}`);
    if (h.backingFileOffset + h.backingFileSize > cs) throw fail('backing_file_offset', `places the backing file name at ${h.backingFileOffset}+${h.backingFileSize}, outside cluster 0`);
  }
}

/** Names of the feature bits set in a header, for `info`. */
export function featureNames(h: Qcow2Header): { incompatible: string[]; compatible: string[]; autoclear: string[] } {
  const names = (v: bigint, known: Record<string, bigint>) => {
    const out = Object.entries(known).filter(([, bit]) => v & bit).map(([n]) => n.toLowerCase());
    const rest = Object.values(known).reduce((acc, bit) => acc & ~bit, v);
    if (rest) out.push(`unknown ${hex(rest)}`);
    return out;
  };
  return {
    incompatible: names(h.incompatible, { dirty: INCOMPAT.DIRTY, corrupt: INCOMPAT.CORRUPT, external_data_file: INCOMPAT.DATA_FILE, compression_type: INCOMPAT.COMPRESSION, extended_l2: INCOMPAT.EXTENDED_L2 }),
    compatible: names(h.compatible, { lazy_refcounts: COMPAT.LAZY_REFCOUNTS }),
    autoclear: names(h.autoclear, { bitmaps: AUTOCLEAR.BITMAPS, data_file_raw: AUTOCLEAR.DATA_FILE_RAW }),
  };
}

/** Serializes the header fields (version 3 layout, `header_length` bytes; version 2 writes the first 72). */
export function serialize(h: Qcow2Header): Buffer {
  const b = Buffer.alloc(h.version === 3 ? h.headerLength : V2_HEADER_LENGTH);
  b.writeUInt32BE(MAGIC, 0);
  b.writeUInt32BE(h.version, 4);
  b.writeBigUInt64BE(BigInt(h.backingFileOffset), 8);
  b.writeUInt32BE(h.backingFileSize, 16);
  b.writeUInt32BE(h.clusterBits, 20);
  b.writeBigUInt64BE(BigInt(h.size), 24);
  b.writeUInt32BE(h.cryptMethod, 32);
  b.writeUInt32BE(h.l1Size, 36);
  b.writeBigUInt64BE(BigInt(h.l1TableOffset), 40);
  b.writeBigUInt64BE(BigInt(h.refcountTableOffset), 48);
  b.writeUInt32BE(h.refcountTableClusters, 56);
  b.writeUInt32BE(h.nbSnapshots, 60);
  b.writeBigUInt64BE(BigInt(h.snapshotsOffset), 64);
  if (h.version === 3) {
    b.writeBigUInt64BE(h.incompatible, 72);
    b.writeBigUInt64BE(h.compatible, 80);
    b.writeBigUInt64BE(h.autoclear, 88);
    b.writeUInt32BE(h.refcountOrder, 96);
    b.writeUInt32BE(h.headerLength, 100);
    if (h.headerLength > V3_MIN_HEADER_LENGTH) b[104] = h.compressionType;
  }
  return b;
}
