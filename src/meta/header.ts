/**
 * The native metafile header (512 bytes at offset 0); the byte layout is specified in docs/metafile.md.
 */
import type { DiskFormat, DiskIdentity } from '../formats/disk.js';
import { crc32cWithZeroedField } from '../util/crc32c.js';
import { MetafileError } from '../util/errors.js';
import { readU64LE, writeU64LE } from '../util/struct.js';
import { isPowerOfTwo } from '../util/units.js';
import { DIGEST_LENGTH, SUB_DIGEST_LENGTH, type HashAlgorithm, type SubAlgorithm } from './hashers.js';

/** ASCII magic at offset 0 of every native metafile. */
export const MAGIC = Buffer.from('VHDSYNCB', 'ascii');
export const HEADER_SIZE = 512;
/**
 * The newest version written and read. Each file gets the lowest version that can hold it, so lists without the
 * newer sections stay readable by older vhdsync.
 */
export const FORMAT_VERSION = 3;
/** Version 2 adds the parent identity section (a diff's metafile: the target identity `copy` checked). */
const PARENT_IDENTITY_VERSION = 2;
/** Version 3 adds the second level (sub-block digests in a table after the entries); flag bit 1 then marks the parent identity. */
export const SUB_LEVEL_VERSION = 3;
const PARENT_AT = 172;
const SUB_AT = 260;
/** Sub-block size bounds (both powers of two; a sub-block is also smaller than its block). */
export const MIN_SUB_BLOCK_SIZE = 4 << 10;
export const MAX_SUB_BLOCK_SIZE = 1 << 20;
/** Block size bounds (both powers of two). */
export const MIN_BLOCK_SIZE = 4 << 10;
export const MAX_BLOCK_SIZE = 256 << 20;

const FLAG_COMPLETE = 1;
/** Version 3 only: the parent identity section is present (in version 2 the version says so). */
const FLAG_PARENT = 2;
const CONTENT_ID_MAX = 63;
const TOOL_VERSION_MAX = 31;
const CRC_OFFSET = 508;

const ALGORITHM_CODES: Array<[HashAlgorithm, number]> = [
  ['xxh128', 1],
  ['sha256', 2],
];
const SUB_ALGORITHM_CODES: Array<[SubAlgorithm, number]> = [
  ['xxh3-64', 1],
  ['sha256', 2],
];
/** The sub-block digest each block digest is paired with (a list records it; readers refuse any other pairing). */
const SUB_ALGORITHM_OF: Partial<Record<HashAlgorithm, SubAlgorithm>> = { xxh128: 'xxh3-64', sha256: 'sha256' };
const FORMAT_CODES: Array<[DiskFormat, number]> = [
  ['raw', 0],
  ['vhd', 1],
  ['vhdx', 2],
  ['qcow2', 3],
];

/** Everything the header of a native metafile records. */
export interface MetafileHeader {
  algorithm: HashAlgorithm;
  digestLength: number;
  blockSize: number;
  logicalSectorSize: number;
  virtualSize: number;
  blockCount: number;
  /** The image's identity when it was hashed (for staleness checks). */
  identity: DiskIdentity;
  /**
   * A diff's metafile only: the identity of the parent (copy's target) when copy checked its metafile, so merge
   * refuses a parent written to since. Null in every other metafile (and in version 1 files).
   */
  parentIdentity: DiskIdentity | null;
  createdMs: number;
  toolVersion: string;
  /** Set only once every entry and the trailer are written. */
  complete: boolean;
  /** The second level (version 3), or null. */
  sub: SubLevel | null;
  /** CRC-32C of the sub-digest table (0 without a second level). */
  subTableCrc: number;
}

/** The second level of a list: each block's content as sub-blocks of `size` bytes, each with a short digest. */
export interface SubLevel {
  algorithm: SubAlgorithm;
  size: number;
  digestLength: number;
}

/** Bytes one block takes in the sub-digest table: a slot per sub-block of a full block (the last block's spare slots are 0). */
export function subSlotSize(blockSize: number, sub: SubLevel): number {
  return (blockSize / sub.size) * sub.digestLength;
}

/** The sub-block digest paired with a block digest, or null when that algorithm has no second level. */
export function subAlgorithmFor(algorithm: HashAlgorithm): SubAlgorithm | null {
  return SUB_ALGORITHM_OF[algorithm] ?? null;
}

/** Checks a sub-block size against its block and sector sizes; returns the problem or null. */
export function subBlockSizeProblem(size: number, blockSize: number, logicalSectorSize: number): string | null {
  if (!isPowerOfTwo(size) || size < MIN_SUB_BLOCK_SIZE || size > MAX_SUB_BLOCK_SIZE) return `sub-block size ${size} is not a power of two between 4 KiB and 1 MiB`;
  if (size >= blockSize) return `sub-block size ${size} is not smaller than the block size ${blockSize}`;
  if (size % logicalSectorSize !== 0) return `sub-block size ${size} is not a multiple of the logical sector size ${logicalSectorSize}`;
  return null;
}

/** Number of blocks of `blockSize` covering `virtualSize` bytes (the last may be partial). */
export function blockCountFor(virtualSize: number, blockSize: number): number {
  return Math.ceil(virtualSize / blockSize);
}

/** Bytes of one entry: state byte + digest. */
export function entrySize(digestLength: number): number {
  return 1 + digestLength;
}

/** Checks a block size a user asked for or a file recorded; returns the problem or null. */
export function blockSizeProblem(blockSize: number, logicalSectorSize: number): string | null {
  if (!isPowerOfTwo(blockSize) || blockSize < MIN_BLOCK_SIZE || blockSize > MAX_BLOCK_SIZE) {
    return `block size ${blockSize} is not a power of two between 4 KiB and 256 MiB`;
  }
  if (blockSize % logicalSectorSize !== 0) {
    return `block size ${blockSize} is not a multiple of the logical sector size ${logicalSectorSize}`;
  }
  return null;
}

/** True when `bytes` starts with the native magic. */
export function hasMagic(bytes: Uint8Array): boolean {
  return bytes.length >= MAGIC.length && MAGIC.equals(Buffer.from(bytes.buffer, bytes.byteOffset, MAGIC.length));
}

/** Serializes a header (512 bytes, checksum filled in). */
export function serializeHeader(h: MetafileHeader): Buffer {
  const b = Buffer.alloc(HEADER_SIZE);
  MAGIC.copy(b, 0);
  const version = h.sub ? SUB_LEVEL_VERSION : h.parentIdentity ? PARENT_IDENTITY_VERSION : 1;
  b.writeUInt32LE(version, 8);
  b.writeUInt32LE(HEADER_SIZE, 12);
  b.writeUInt8(codeOf(ALGORITHM_CODES, h.algorithm, 'hash algorithm'), 16);
  b.writeUInt8(h.digestLength, 17);
  b.writeUInt8((h.complete ? FLAG_COMPLETE : 0) | (version >= SUB_LEVEL_VERSION && h.parentIdentity ? FLAG_PARENT : 0), 18);
  b.writeUInt8(codeOf(FORMAT_CODES, h.identity.format, 'image format'), 19);
  b.writeUInt32LE(h.blockSize, 20);
  b.writeUInt32LE(h.logicalSectorSize, 24);
  writeU64LE(b, h.virtualSize, 32);
  writeU64LE(b, h.blockCount, 40);
  writeU64LE(b, h.identity.fileSize, 48);
  b.writeDoubleLE(h.identity.mtimeMs, 56);
  b.writeUInt32LE(h.identity.timestamp >>> 0, 64);
  writeText(b, 68, h.identity.contentId, CONTENT_ID_MAX, 'content id');
  writeU64LE(b, Math.max(0, Math.floor(h.createdMs)), 132);
  writeText(b, 140, h.toolVersion.slice(0, TOOL_VERSION_MAX), TOOL_VERSION_MAX, 'tool version');
  if (h.parentIdentity) writeIdentity(b, PARENT_AT, h.parentIdentity);
  if (h.sub) {
    b.writeUInt32LE(h.sub.size, SUB_AT);
    b.writeUInt8(codeOf(SUB_ALGORITHM_CODES, h.sub.algorithm, 'sub-block algorithm'), SUB_AT + 4);
    b.writeUInt8(h.sub.digestLength, SUB_AT + 5);
    b.writeUInt32LE(h.subTableCrc >>> 0, SUB_AT + 8);
  }
  b.writeUInt32LE(crc32cWithZeroedField(b, CRC_OFFSET), CRC_OFFSET);
  return b;
}

/**
 * Parses and checks a header. `subject` names the metafile in errors. The block count is checked against the
 * virtual size here; the caller checks it against the file length before reading entries.
 */
export function parseHeader(bytes: Buffer, subject: string): MetafileHeader {
  const bad = (why: string) => new MetafileError(`${why}; the metafile is corrupt (recreate it with vhdsync createmeta)`, subject);
  if (bytes.length < HEADER_SIZE) throw bad(`truncated header (${bytes.length} of ${HEADER_SIZE} bytes)`);
  if (!hasMagic(bytes)) throw new MetafileError('not a vhdsync metafile (no VHDSYNCB magic)', subject);
  const version = bytes.readUInt32LE(8);
  if (version > FORMAT_VERSION) {
    throw new MetafileError(`metafile version ${version} was written by a newer vhdsync (this one reads version ${FORMAT_VERSION})`, subject);
  }
  const stored = bytes.readUInt32LE(CRC_OFFSET);
  const computed = crc32cWithZeroedField(bytes.subarray(0, HEADER_SIZE), CRC_OFFSET);
  if (stored !== computed) throw bad(`header checksum mismatch (stored ${hex(stored)}, computed ${hex(computed)})`);
  if (version < 1) throw bad(`unknown metafile version ${version}`);
  if (bytes.readUInt32LE(12) !== HEADER_SIZE) throw bad(`header size ${bytes.readUInt32LE(12)} is not ${HEADER_SIZE}`);
  const algorithm = nameOf(ALGORITHM_CODES, bytes.readUInt8(16));
  if (!algorithm) throw bad(`unknown hash algorithm code ${bytes.readUInt8(16)}`);
  const digestLength = bytes.readUInt8(17);
  if (digestLength !== DIGEST_LENGTH[algorithm]) throw bad(`digest length ${digestLength} does not fit ${algorithm}`);
  const flags = bytes.readUInt8(18);
  const knownFlags = version >= SUB_LEVEL_VERSION ? FLAG_COMPLETE | FLAG_PARENT : FLAG_COMPLETE;
  if (flags & ~knownFlags) throw bad(`unknown flags 0x${flags.toString(16)}`);
  const format = nameOf(FORMAT_CODES, bytes.readUInt8(19));
  if (!format) throw bad(`unknown image format code ${bytes.readUInt8(19)}`);
  const blockSize = bytes.readUInt32LE(20);
  const logicalSectorSize = bytes.readUInt32LE(24);
  if (!isPowerOfTwo(logicalSectorSize) || logicalSectorSize < 512 || logicalSectorSize > 4096) {
    throw bad(`logical sector size ${logicalSectorSize} is not 512..4096`);
  }
  const sizeProblem = blockSizeProblem(blockSize, logicalSectorSize);
  if (sizeProblem) throw bad(sizeProblem);
  const virtualSize = readU64LE(bytes, 32, 'virtual size', subject);
  const blockCount = readU64LE(bytes, 40, 'block count', subject);
  if (blockCount !== blockCountFor(virtualSize, blockSize)) {
    throw bad(`block count ${blockCount} does not match virtual size ${virtualSize} / block size ${blockSize}`);
  }
  const fileSize = readU64LE(bytes, 48, 'image file size', subject);
  const mtimeMs = bytes.readDoubleLE(56);
  if (!Number.isFinite(mtimeMs) || mtimeMs < 0) throw bad(`invalid image mtime ${mtimeMs}`);
  const contentId = readText(bytes, 68, CONTENT_ID_MAX, 'content id', bad);
  const createdMs = readU64LE(bytes, 132, 'creation time', subject);
  const toolVersion = readText(bytes, 140, TOOL_VERSION_MAX, 'tool version', bad);
  const hasParent = version >= SUB_LEVEL_VERSION ? (flags & FLAG_PARENT) !== 0 : version >= PARENT_IDENTITY_VERSION;
  const sub = version >= SUB_LEVEL_VERSION ? readSubLevel(bytes, algorithm, blockSize, logicalSectorSize, bad) : null;
  return {
    algorithm,
    digestLength,
    blockSize,
    logicalSectorSize,
    virtualSize,
    blockCount,
    identity: { format, contentId, timestamp: bytes.readUInt32LE(64), fileSize, mtimeMs },
    parentIdentity: hasParent ? readIdentity(bytes, PARENT_AT, subject, bad) : null,
    createdMs,
    toolVersion,
    complete: (flags & FLAG_COMPLETE) !== 0,
    sub,
    subTableCrc: sub ? bytes.readUInt32LE(SUB_AT + 8) : 0,
  };
}

/**
 * The second level's fields (offsets relative to SUB_AT): sub-block size (u32), sub-digest algorithm (1), its
 * length (1), 2 reserved, CRC-32C of the sub-digest table (u32).
 */
function readSubLevel(b: Buffer, algorithm: HashAlgorithm, blockSize: number, logicalSectorSize: number, bad: (why: string) => Error): SubLevel {
  const size = b.readUInt32LE(SUB_AT);
  const problem = subBlockSizeProblem(size, blockSize, logicalSectorSize);
  if (problem) throw bad(problem);
  const subAlgorithm = nameOf(SUB_ALGORITHM_CODES, b.readUInt8(SUB_AT + 4));
  if (!subAlgorithm) throw bad(`unknown sub-block algorithm code ${b.readUInt8(SUB_AT + 4)}`);
  if (subAlgorithm !== SUB_ALGORITHM_OF[algorithm]) throw bad(`sub-block algorithm ${subAlgorithm} does not go with ${algorithm}`);
  const digestLength = b.readUInt8(SUB_AT + 5);
  if (digestLength !== SUB_DIGEST_LENGTH[subAlgorithm]) throw bad(`sub-digest length ${digestLength} does not fit ${subAlgorithm}`);
  return { algorithm: subAlgorithm, size, digestLength };
}

/**
 * The parent identity section of version 2 (offsets relative to `at`): format code (1), content id length and
 * text (1 + 63), 3 reserved, file size (u64), mtime (f64), VHD timestamp (u32).
 */
function writeIdentity(b: Buffer, at: number, id: DiskIdentity): void {
  b.writeUInt8(codeOf(FORMAT_CODES, id.format, 'parent image format'), at);
  writeText(b, at + 1, id.contentId, CONTENT_ID_MAX, 'parent content id');
  writeU64LE(b, id.fileSize, at + 68);
  b.writeDoubleLE(id.mtimeMs, at + 76);
  b.writeUInt32LE(id.timestamp >>> 0, at + 84);
}

function readIdentity(b: Buffer, at: number, subject: string, bad: (why: string) => Error): DiskIdentity {
  const format = nameOf(FORMAT_CODES, b.readUInt8(at));
  if (!format) throw bad(`unknown parent image format code ${b.readUInt8(at)}`);
  const contentId = readText(b, at + 1, CONTENT_ID_MAX, 'parent content id', bad);
  const fileSize = readU64LE(b, at + 68, 'parent file size', subject);
  const mtimeMs = b.readDoubleLE(at + 76);
  if (!Number.isFinite(mtimeMs) || mtimeMs < 0) throw bad(`invalid parent mtime ${mtimeMs}`);
  return { format, contentId, timestamp: b.readUInt32LE(at + 84), fileSize, mtimeMs };
}

function writeText(b: Buffer, offset: number, text: string, max: number, what: string): void {
  const bytes = Buffer.from(text, 'utf8');
  if (bytes.length > max) throw new MetafileError(`${what} '${text}' is longer than ${max} bytes`);
  b.writeUInt8(bytes.length, offset);
  bytes.copy(b, offset + 1);
}

function readText(b: Buffer, offset: number, max: number, what: string, bad: (why: string) => Error): string {
  const len = b.readUInt8(offset);
  if (len > max) throw bad(`${what} length ${len} exceeds ${max}`);
  return b.toString('utf8', offset + 1, offset + 1 + len);
}

function codeOf<T>(table: Array<[T, number]>, name: T, what: string): number {
  const e = table.find(([n]) => n === name);
  if (!e) throw new MetafileError(`${what} '${String(name)}' cannot be recorded in a native metafile`);
  return e[1];
}

function nameOf<T>(table: Array<[T, number]>, code: number): T | undefined {
  return table.find(([, c]) => c === code)?.[0];
}

function hex(n: number): string {
  return `0x${n.toString(16).padStart(8, '0')}`;
}
