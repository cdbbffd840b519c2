/**
 * XAPI's "chunked" protocol (vhd-tool's chunked.ml; not HTTP chunked encoding): frames of a 12-byte little-endian
 * header {offset: u64, length: u32} then `length` bytes, ended by a header of offset 0 and length 0.
 */
export const FRAME_HEADER = 12;
/** A frame's length field is 32 bits; ours stay far below. */
export const MAX_FRAME = 0xffffffff;

/** A frame header. */
export function frameHeader(offset: number, length: number): Buffer {
  const b = Buffer.alloc(FRAME_HEADER);
  b.writeBigUInt64LE(BigInt(offset), 0);
  b.writeUInt32LE(length, 8);
  return b;
}

/** Parses a frame header. */
export function parseFrameHeader(b: Buffer): { offset: number; length: number } {
  const offset = b.readBigUInt64LE(0);
  return { offset: offset > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(offset), length: b.readUInt32LE(8) };
}
