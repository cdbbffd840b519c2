import { createRequire } from 'node:module';
import type * as Crc32 from '@node-rs/crc32';

// Loaded with require, not import: Node's ESM import of a CommonJS package first runs its export lexer over the
// package's source, and the first such import in a process cost about 160 M instructions (callgrind), a fifth of a
// `stream` run from a VHDX; require skips the lexer.
const { crc32c: nativeCrc32c } = createRequire(import.meta.url)('@node-rs/crc32') as typeof Crc32;

/**
 * CRC-32C (Castagnoli) as VHDX uses it; Node's zlib.crc32 is the IEEE polynomial and is wrong here.
 * Pass the previous result as `initial` to continue over data read in pieces.
 */
export function crc32c(data: Uint8Array, initial = 0): number {
  return nativeCrc32c(Buffer.from(data.buffer, data.byteOffset, data.byteLength), initial) >>> 0;
}

/** CRC-32C of `data` computed as if the 4 bytes at `fieldOffset` were zero (the on-disk checksum rule). */
export function crc32cWithZeroedField(data: Buffer, fieldOffset: number): number {
  const copy = Buffer.from(data);
  copy.writeUInt32LE(0, fieldOffset);
  return crc32c(copy);
}
