import { CorruptImageError } from './errors.js';

/**
 * Reads an unsigned 64-bit little-endian field as a number, refusing values a JS number cannot hold
 * exactly, so an absurd field becomes a clear error instead of a silently rounded offset.
 */
export function readU64LE(buf: Buffer, offset: number, what: string, subject?: string): number {
  return toSafe(buf.readBigUInt64LE(offset), what, subject);
}

/** Big-endian counterpart of {@link readU64LE}. */
export function readU64BE(buf: Buffer, offset: number, what: string, subject?: string): number {
  return toSafe(buf.readBigUInt64BE(offset), what, subject);
}

function toSafe(v: bigint, what: string, subject?: string): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new CorruptImageError(`${what} is out of range (${v})`, subject);
  }
  return Number(v);
}

/** Writes a non-negative safe integer as an unsigned 64-bit little-endian field. */
export function writeU64LE(buf: Buffer, value: number, offset: number): void {
  buf.writeBigUInt64LE(BigInt(value), offset);
}

/** Writes a non-negative safe integer as an unsigned 64-bit big-endian field. */
export function writeU64BE(buf: Buffer, value: number, offset: number): void {
  buf.writeBigUInt64BE(BigInt(value), offset);
}

const ZEROS = Buffer.alloc(1 << 20);
const ZERO_STEP = 64 << 10;

/** True when every byte of `buf` is zero; memcmp against a zero page, far faster than a JS loop. */
export function isAllZero(buf: Uint8Array): boolean {
  const b = Buffer.isBuffer(buf) ? buf : Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  for (let off = 0; off < b.length; off += ZEROS.length) {
    const end = Math.min(b.length, off + ZEROS.length);
    if (ZEROS.compare(b, off, end, 0, end - off) !== 0) return false;
  }
  return true;
}

/** The length of `buf` without its trailing zero bytes (memcmp against zeros a 64 KiB step at a time, from the end). */
export function lengthWithoutTrailingZeros(buf: Uint8Array): number {
  const b = Buffer.isBuffer(buf) ? buf : Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  let end = b.length;
  while (end > 0) {
    const start = Math.max(0, end - ZERO_STEP);
    if (ZEROS.compare(b, start, end, 0, end - start) !== 0) break;
    end = start;
  }
  while (end > 0 && b[end - 1] === 0) end--;
  return end;
}
