/**
 * The 1024-byte dynamic disk header (`cxsparse`) of dynamic and differencing VHDs. Big-endian;
 * Parent Unicode Name is UTF-16BE.
 */
import { CorruptImageError } from '../../util/errors.js';
import { readU64BE, writeU64BE } from '../../util/struct.js';
import { hex32, vhdChecksum } from './checksum.js';
import {
  LOCATOR_COUNT,
  LOCATOR_ENTRY_SIZE,
  parseLocatorEntry,
  serializeLocatorEntry,
  type LocatorEntry,
} from './parent-locator.js';

export const DYNAMIC_HEADER_SIZE = 1024;
export const DYNAMIC_HEADER_COOKIE = 'cxsparse';
export const HEADER_VERSION = 0x00010000;
const NAME_OFFSET = 64;
const NAME_BYTES = 512;
const LOCATORS_OFFSET = 576;

/** The dynamic header's fields. */
export interface DynamicHeader {
  tableOffset: number;
  headerVersion: number;
  maxTableEntries: number;
  blockSize: number;
  checksum: number;
  parentUniqueId: Buffer;
  parentTimestamp: number;
  parentUnicodeName: string;
  /** Always 8 entries; unused ones have an empty platform code. */
  locators: LocatorEntry[];
  checksumOk: boolean;
}

/** Parses and checks a dynamic header (cookie and checksum; sizes are bounded by the caller, who knows the file). */
export function parseDynamicHeader(bytes: Buffer, subject: string, opts: { ignoreChecksums?: boolean } = {}): DynamicHeader {
  if (bytes.length < DYNAMIC_HEADER_SIZE) throw new CorruptImageError('VHD dynamic header is truncated', subject);
  const b = bytes.subarray(0, DYNAMIC_HEADER_SIZE);
  if (b.toString('latin1', 0, 8) !== DYNAMIC_HEADER_COOKIE) {
    throw new CorruptImageError(`no VHD dynamic header (cookie '${DYNAMIC_HEADER_COOKIE}' missing)`, subject);
  }
  const stored = b.readUInt32BE(36);
  const computed = vhdChecksum(b, 36);
  const checksumOk = stored === computed;
  if (!checksumOk && !opts.ignoreChecksums) {
    throw new CorruptImageError(`VHD dynamic header checksum is wrong (stored ${hex32(stored)}, computed ${hex32(computed)})`, subject);
  }
  const locators: LocatorEntry[] = [];
  for (let i = 0; i < LOCATOR_COUNT; i++) {
    const at = LOCATORS_OFFSET + i * LOCATOR_ENTRY_SIZE;
    locators.push(parseLocatorEntry(b.subarray(at, at + LOCATOR_ENTRY_SIZE), subject));
  }
  return {
    tableOffset: readU64BE(b, 16, 'VHD BAT offset', subject),
    headerVersion: b.readUInt32BE(24),
    maxTableEntries: b.readUInt32BE(28),
    blockSize: b.readUInt32BE(32),
    checksum: stored,
    parentUniqueId: Buffer.from(b.subarray(40, 56)),
    parentTimestamp: b.readUInt32BE(56),
    parentUnicodeName: decodeUtf16BE(b.subarray(NAME_OFFSET, NAME_OFFSET + NAME_BYTES)),
    locators,
    checksumOk,
  };
}

/** Serializes a dynamic header with a freshly computed checksum. */
export function serializeDynamicHeader(h: Omit<DynamicHeader, 'checksum' | 'checksumOk'>): Buffer {
  const b = Buffer.alloc(DYNAMIC_HEADER_SIZE);
  b.write(DYNAMIC_HEADER_COOKIE, 0, 'latin1');
  b.writeBigUInt64BE(0xffffffffffffffffn, 8); // data offset: unused, all ones per the spec
  writeU64BE(b, h.tableOffset, 16);
  b.writeUInt32BE(h.headerVersion >>> 0, 24);
  b.writeUInt32BE(h.maxTableEntries >>> 0, 28);
  b.writeUInt32BE(h.blockSize >>> 0, 32);
  Buffer.from(h.parentUniqueId).copy(b, 40, 0, 16);
  b.writeUInt32BE(h.parentTimestamp >>> 0, 56);
  const name = encodeUtf16BE(h.parentUnicodeName);
  if (name.length > NAME_BYTES) throw new RangeError(`parent name longer than ${NAME_BYTES / 2} UTF-16 units`);
  name.copy(b, NAME_OFFSET);
  if (h.locators.length > LOCATOR_COUNT) throw new RangeError(`at most ${LOCATOR_COUNT} parent locators`);
  h.locators.forEach((e, i) => serializeLocatorEntry(e).copy(b, LOCATORS_OFFSET + i * LOCATOR_ENTRY_SIZE));
  b.writeUInt32BE(vhdChecksum(b, 36), 36);
  return b;
}

/** Decodes NUL-terminated UTF-16BE text. */
function decodeUtf16BE(b: Buffer): string {
  const copy = Buffer.from(b.subarray(0, b.length & ~1));
  copy.swap16();
  return copy.toString('utf16le').replace(/\0.*$/s, '');
}

/** Encodes text as UTF-16BE without terminator. */
function encodeUtf16BE(s: string): Buffer {
  return Buffer.from(s, 'utf16le').swap16();
}
