/**
 * The 512-byte VHD footer (hard disk footer): at the end of every VHD, and copied at offset 0 of
 * dynamic and differencing images. Big-endian.
 */
import { CorruptImageError } from '../../util/errors.js';
import { readU64BE, writeU64BE } from '../../util/struct.js';
import { hex32, vhdChecksum } from './checksum.js';
import type { Geometry } from './geometry.js';

export const FOOTER_SIZE = 512;
export const FOOTER_COOKIE = 'conectix';
/** Fixed images store all ones in the data offset field (no dynamic header). */
const NO_DATA_OFFSET = 0xffffffffffffffffn;
/** The spec's limit (2040 GiB, qemu's VHD_MAX_SECTORS); larger sizes in a footer are refused as corrupt. */
export const MAX_VHD_SIZE = 0xff000000 * 512;
/** Seconds between the Unix epoch and the VHD epoch (2000-01-01T00:00:00Z). */
export const VHD_EPOCH_OFFSET = 946684800;
/** Host OS codes. */
export const HOST_OS_WINDOWS = 0x5769326b; // 'Wi2k'
export const HOST_OS_MAC = 0x4d616320; // 'Mac '
/** Reserved feature bit that the spec says must always be set. */
export const FEATURE_RESERVED = 0x2;
export const FORMAT_VERSION = 0x00010000;

export type VhdDiskType = 'fixed' | 'dynamic' | 'differencing';
const TYPE_CODES: Record<VhdDiskType, number> = { fixed: 2, dynamic: 3, differencing: 4 };

/** The footer's fields. */
export interface VhdFooter {
  features: number;
  formatVersion: number;
  /** Offset of the dynamic header; null for fixed images (field all ones). */
  dataOffset: number | null;
  /** Seconds since 2000-01-01T00:00:00Z. */
  timestamp: number;
  /** Four characters, e.g. `win `, `qemu`, `vpc `. */
  creatorApp: string;
  creatorVersion: number;
  creatorHostOs: number;
  originalSize: number;
  currentSize: number;
  geometry: Geometry;
  diskType: VhdDiskType;
  /** The checksum stored in the file (recomputed by `serializeFooter`). */
  checksum: number;
  /** 16 bytes, identifies this image (a child records it as ParentUniqueId). */
  uniqueId: Buffer;
  savedState: number;
  /** False when the stored checksum is wrong (only possible with `ignoreChecksums`). */
  checksumOk: boolean;
}

/** True when `bytes` starts with the footer cookie. */
export function hasFooterCookie(bytes: Uint8Array): boolean {
  return bytes.length >= 8 && Buffer.from(bytes.buffer, bytes.byteOffset, 8).toString('latin1') === FOOTER_COOKIE;
}

/** Parses and checks a footer; `subject` names the file in errors. */
export function parseFooter(bytes: Buffer, subject: string, opts: { ignoreChecksums?: boolean } = {}): VhdFooter {
  if (bytes.length < FOOTER_SIZE) throw new CorruptImageError('VHD footer is truncated', subject);
  const b = bytes.subarray(0, FOOTER_SIZE);
  if (!hasFooterCookie(b)) throw new CorruptImageError(`no VHD footer (cookie '${FOOTER_COOKIE}' missing)`, subject);
  const stored = b.readUInt32BE(64);
  const computed = vhdChecksum(b, 64);
  const checksumOk = stored === computed;
  if (!checksumOk && !opts.ignoreChecksums) {
    throw new CorruptImageError(`VHD footer checksum is wrong (stored ${hex32(stored)}, computed ${hex32(computed)})`, subject);
  }
  const typeCode = b.readUInt32BE(60);
  const diskType = (Object.keys(TYPE_CODES) as VhdDiskType[]).find((t) => TYPE_CODES[t] === typeCode);
  if (!diskType) throw new CorruptImageError(`unsupported VHD disk type ${typeCode} (expected 2 fixed, 3 dynamic or 4 differencing)`, subject);
  const rawDataOffset = b.readBigUInt64BE(16);
  const dataOffset = rawDataOffset === NO_DATA_OFFSET ? null : readU64BE(b, 16, 'VHD footer data offset', subject);
  const currentSize = readU64BE(b, 48, 'VHD current size', subject);
  if (currentSize > MAX_VHD_SIZE) {
    throw new CorruptImageError(`VHD current size ${currentSize} exceeds the format's limit of 2040 GiB`, subject);
  }
  return {
    features: b.readUInt32BE(8),
    formatVersion: b.readUInt32BE(12),
    dataOffset,
    timestamp: b.readUInt32BE(24),
    creatorApp: b.toString('latin1', 28, 32),
    creatorVersion: b.readUInt32BE(32),
    creatorHostOs: b.readUInt32BE(36),
    // Original size is informational; a huge value there must not stop reading.
    originalSize: Number(b.readBigUInt64BE(40)),
    currentSize,
    geometry: { cylinders: b.readUInt16BE(56), heads: b[58], sectorsPerTrack: b[59] },
    diskType,
    checksum: stored,
    uniqueId: Buffer.from(b.subarray(68, 84)),
    savedState: b[84],
    checksumOk,
  };
}

/** Serializes a footer with a freshly computed checksum. */
export function serializeFooter(f: Omit<VhdFooter, 'checksum' | 'checksumOk'>): Buffer {
  const b = Buffer.alloc(FOOTER_SIZE);
  b.write(FOOTER_COOKIE, 0, 'latin1');
  b.writeUInt32BE(f.features >>> 0, 8);
  b.writeUInt32BE(f.formatVersion >>> 0, 12);
  if (f.dataOffset === null) b.writeBigUInt64BE(NO_DATA_OFFSET, 16);
  else writeU64BE(b, f.dataOffset, 16);
  b.writeUInt32BE(f.timestamp >>> 0, 24);
  b.write(f.creatorApp.padEnd(4, ' ').slice(0, 4), 28, 'latin1');
  b.writeUInt32BE(f.creatorVersion >>> 0, 32);
  b.writeUInt32BE(f.creatorHostOs >>> 0, 36);
  // Parsed from any 64-bit value into a double it can round up to 2^64: write back the largest double below, never throw.
  b.writeBigUInt64BE(BigInt(Math.min(f.originalSize, 2 ** 64 - 2048)), 40);
  writeU64BE(b, f.currentSize, 48);
  b.writeUInt16BE(f.geometry.cylinders, 56);
  b[58] = f.geometry.heads;
  b[59] = f.geometry.sectorsPerTrack;
  b.writeUInt32BE(TYPE_CODES[f.diskType], 60);
  Buffer.from(f.uniqueId).copy(b, 68, 0, 16);
  b[84] = f.savedState;
  b.writeUInt32BE(vhdChecksum(b, 64), 64);
  return b;
}

/** The current time as a VHD timestamp. */
export function vhdNow(): number {
  return Math.max(0, Math.floor(Date.now() / 1000) - VHD_EPOCH_OFFSET);
}

/** A VHD timestamp as ISO 8601 text. */
export function vhdTimeToIso(ts: number): string {
  return new Date((ts + VHD_EPOCH_OFFSET) * 1000).toISOString();
}

/** A four-byte code (creator host OS, platform code) as text when printable, else hex. */
export function fourCC(code: number): string {
  const s = Buffer.alloc(4);
  s.writeUInt32BE(code >>> 0);
  return /^[\x20-\x7e]{4}$/.test(s.toString('latin1')) ? s.toString('latin1') : hex32(code);
}
