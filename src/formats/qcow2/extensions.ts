/**
 * QCOW2 header extensions (qcow2.rst, "Header extensions"): type/length records after the header in cluster 0,
 * each padded to 8 bytes, ended by type 0. Also the backing file name, which follows them.
 */
import { CorruptImageError, UnsupportedError } from '../../util/errors.js';
import type { Qcow2Header } from './header.js';

export const EXT_END = 0;
export const EXT_BACKING_FORMAT = 0xe2792aca;
export const EXT_FEATURE_NAMES = 0x6803f857;
export const EXT_BITMAPS = 0x23852875;
export const EXT_ENCRYPTION = 0x0537be77;
export const EXT_DATA_FILE = 0x44415441;
const FEATURE_NAME_ENTRY = 48;
/** qemu's QCOW2_MAX_BITMAP_DIRECTORY_SIZE. */
export const MAX_BITMAP_DIRECTORY = 64 << 20;

/** What the extensions say. */
export interface Qcow2Extensions {
  backingFormat: string | null;
  dataFile: string | null;
  /** Feature name table entries: kind (0 incompatible, 1 compatible, 2 autoclear), bit, name. */
  featureNames: Array<{ kind: number; bit: number; name: string }>;
  hasBitmaps: boolean;
  /** The bitmaps extension's directory (qcow2.rst, "Bitmaps extension"), when present and well formed. */
  bitmapDirectory: { count: number; offset: number; size: number } | null;
  /** Types of extensions this reader does not interpret (ignorable by the spec). */
  unknown: number[];
}

/** Parses the extension area of `cluster0` (the first cluster, or the whole file when shorter). */
export function parse(cluster0: Buffer, h: Qcow2Header, subject: string): Qcow2Extensions {
  const out: Qcow2Extensions = { backingFormat: null, dataFile: null, featureNames: [], hasBitmaps: false, bitmapDirectory: null, unknown: [] };
  const seen = new Set<number>();
  const text = (b: Buffer) => b.toString('utf8').replace(/\0+$/, '');
  let at = h.headerLength;
  // As in qemu: the area ends at the backing file name (or the end of cluster 0); version 2 images have it too.
  const limit = Math.min(cluster0.length, h.backingFileOffset || h.clusterSize);
  while (at + 8 <= limit) {
    const type = cluster0.readUInt32BE(at);
    const len = cluster0.readUInt32BE(at + 4);
    if (type === EXT_END) break;
    const end = at + 8 + len;
    if (end > limit) throw new CorruptImageError(`header extension 0x${type.toString(16)} at ${at} is ${len} bytes, past the end of the extension area (${limit})`, subject);
    if (seen.has(type)) throw new CorruptImageError(`header extension 0x${type.toString(16)} appears twice`, subject);
    seen.add(type);
    const data = cluster0.subarray(at + 8, end);
    switch (type) {
      case EXT_BACKING_FORMAT:
        out.backingFormat = text(data);
        break;
      case EXT_DATA_FILE:
        out.dataFile = text(data);
        break;
      case EXT_FEATURE_NAMES:
        for (let i = 0; i + FEATURE_NAME_ENTRY <= data.length; i += FEATURE_NAME_ENTRY) {
          out.featureNames.push({ kind: data[i], bit: data[i + 1], name: text(data.subarray(i + 2, i + FEATURE_NAME_ENTRY)) });
        }
        break;
      case EXT_BITMAPS:
        out.hasBitmaps = true;
        if (data.length >= 24) {
          const size = data.readBigUInt64BE(8);
          const offset = data.readBigUInt64BE(16);
          if (size <= BigInt(MAX_BITMAP_DIRECTORY) && offset <= BigInt(Number.MAX_SAFE_INTEGER)) out.bitmapDirectory = { count: data.readUInt32BE(0), size: Number(size), offset: Number(offset) };
        }
        break;
      case EXT_ENCRYPTION:
        throw new UnsupportedError('header extension "full disk encryption header" present: encrypted images are not supported', subject);
      default:
        out.unknown.push(type);
    }
    at = end + ((8 - (len % 8)) % 8);
  }
  return out;
}

/** The backing file name stored in cluster 0, or null. */
export function backingName(cluster0: Buffer, h: Qcow2Header, subject: string): string | null {
  if (h.backingFileOffset === 0) return null;
  if (h.backingFileOffset + h.backingFileSize > cluster0.length) throw new CorruptImageError('the backing file name lies past the end of the file', subject);
  // qemu reads the name as a C string: it ends at the first NUL even when backing_file_size says more.
  return cluster0.subarray(h.backingFileOffset, h.backingFileOffset + h.backingFileSize).toString('utf8').replace(/\0.*$/s, '');
}

/** Serializes a backing-format extension (when `backingFormat` is set) and the end marker. */
export function serialize(backingFormat: string | null): Buffer {
  const parts: Buffer[] = [];
  if (backingFormat !== null) {
    const name = Buffer.from(backingFormat, 'utf8');
    const rec = Buffer.alloc(8 + Math.ceil(name.length / 8) * 8);
    rec.writeUInt32BE(EXT_BACKING_FORMAT, 0);
    rec.writeUInt32BE(name.length, 4);
    name.copy(rec, 8);
    parts.push(rec);
  }
  parts.push(Buffer.alloc(8));
  return Buffer.concat(parts);
}
