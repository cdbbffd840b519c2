import { crc32c as nativeCrc32c } from '@node-rs/crc32';

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
