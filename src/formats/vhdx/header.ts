/** The VHDX header ([MS-VHDX] 2.2.2): two 4 KiB copies at 64 KiB and 128 KiB, CRC-32C over 4 KiB. */
import { CorruptImageError } from '../../util/errors.js';
import { crc32cWithZeroedField } from '../../util/crc32c.js';
import { ZERO_GUID } from '../../util/guid.js';

/** File offsets of the two header copies. */
export const HEADER_OFFSETS = [64 * 1024, 128 * 1024] as const;
/** Bytes covered by the header checksum. */
export const HEADER_SIZE = 4096;
const SIGNATURE = Buffer.from('head', 'latin1');
const MIB = 1 << 20;

/** One header copy. */
export interface VhdxHeader {
  sequenceNumber: bigint;
  fileWriteGuid: Buffer;
  dataWriteGuid: Buffer;
  /** All zero when the log is empty. */
  logGuid: Buffer;
  logVersion: number;
  version: number;
  logLength: number;
  logOffset: number;
}

/** Parses one header copy; returns a reason string instead of throwing, since the other copy may be good. */
export function parse(bytes: Buffer): VhdxHeader | string {
  if (bytes.length < HEADER_SIZE) return 'header is truncated';
  const b = bytes.subarray(0, HEADER_SIZE);
  if (!b.subarray(0, 4).equals(SIGNATURE)) return 'header signature is not "head"';
  if (b.readUInt32LE(4) !== crc32cWithZeroedField(b, 4)) return 'header checksum mismatch';
  const h: VhdxHeader = {
    sequenceNumber: b.readBigUInt64LE(8),
    fileWriteGuid: Buffer.from(b.subarray(16, 32)),
    dataWriteGuid: Buffer.from(b.subarray(32, 48)),
    logGuid: Buffer.from(b.subarray(48, 64)),
    logVersion: b.readUInt16LE(64),
    version: b.readUInt16LE(66),
    logLength: b.readUInt32LE(68),
    logOffset: Number(b.readBigUInt64LE(72)),
  };
  if (h.version !== 1) return `unsupported header version ${h.version}`;
  if (h.logVersion !== 0) return `unsupported log version ${h.logVersion}`;
  // Offsets must be 1 MiB aligned and the log at least 1 MiB; a value beyond 2^53 fails the alignment test too.
  if (h.logLength % MIB !== 0 || h.logLength === 0) return `log length ${h.logLength} is not a positive multiple of 1 MiB`;
  if (!Number.isSafeInteger(h.logOffset) || h.logOffset % MIB !== 0 || h.logOffset < MIB) return `log offset ${h.logOffset} is not 1 MiB aligned after the header area`;
  return h;
}

/** Serializes a header copy with its checksum. */
export function serialize(h: VhdxHeader): Buffer {
  // A header at the largest sequence number cannot be superseded by a newer one: refuse to update it.
  if (h.sequenceNumber > 0xffffffffffffffffn) throw new CorruptImageError('VHDX header sequence number is at its 64-bit maximum and cannot be updated');
  const b = Buffer.alloc(HEADER_SIZE);
  SIGNATURE.copy(b, 0);
  b.writeBigUInt64LE(h.sequenceNumber, 8);
  h.fileWriteGuid.copy(b, 16);
  h.dataWriteGuid.copy(b, 32);
  h.logGuid.copy(b, 48);
  b.writeUInt16LE(h.logVersion, 64);
  b.writeUInt16LE(h.version, 66);
  b.writeUInt32LE(h.logLength, 68);
  b.writeBigUInt64LE(BigInt(h.logOffset), 72);
  b.writeUInt32LE(crc32cWithZeroedField(b, 4), 4);
  return b;
}

/** The current header: the valid copy with the higher sequence number (identical copies with equal numbers are fine). */
export function pickCurrent(copies: Array<VhdxHeader | string>, subject?: string): { header: VhdxHeader; slot: number } {
  const [a, b] = copies;
  if (typeof a === 'string' && typeof b === 'string') {
    throw new CorruptImageError(`both VHDX headers are invalid (${a}; ${b})`, subject);
  }
  if (typeof a === 'string') return { header: b as VhdxHeader, slot: 1 };
  if (typeof b === 'string') return { header: a, slot: 0 };
  return b.sequenceNumber > a.sequenceNumber ? { header: b, slot: 1 } : { header: a, slot: 0 };
}

/** True when the header says the log holds entries to replay. */
export function logIsActive(h: VhdxHeader): boolean {
  return !h.logGuid.equals(ZERO_GUID);
}
