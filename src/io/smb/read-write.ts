/** SMB2 READ and WRITE requests and responses ([MS-SMB2] 2.2.19-2.2.22). */
import { IoError } from '../../util/errors.js';
import { HEADER_SIZE } from './header.js';

/** The READ request body. */
export function serializeReadRequest(fileId: Buffer, offset: number, length: number): Buffer {
  const b = Buffer.alloc(49);
  b.writeUInt16LE(49, 0);
  // Ask for the data right after the 16-byte response body, aligned like Windows clients do.
  b.writeUInt8(0x50, 2);
  b.writeUInt32LE(length, 4);
  b.writeBigUInt64LE(BigInt(offset), 8);
  fileId.copy(b, 16);
  return b;
}

/** The data a READ response carries (a view into `msg`), bounded by the message and the request. */
export function parseReadResponse(msg: Buffer, requested: number): Buffer {
  if (msg.length < HEADER_SIZE + 16 || msg.readUInt16LE(HEADER_SIZE) !== 17) throw new IoError('malformed READ response');
  const off = msg.readUInt8(HEADER_SIZE + 2);
  const len = msg.readUInt32LE(HEADER_SIZE + 4);
  if (len > requested || off + len > msg.length) throw new IoError('malformed READ response: data outside the message');
  return msg.subarray(off, off + len);
}

/** The fixed part of a WRITE request; the data follows it on the wire without being copied into it. */
export function serializeWriteRequest(fileId: Buffer, offset: number, length: number): Buffer {
  const b = Buffer.alloc(48);
  b.writeUInt16LE(49, 0);
  b.writeUInt16LE(HEADER_SIZE + 48, 2);
  b.writeUInt32LE(length, 4);
  b.writeBigUInt64LE(BigInt(offset), 8);
  fileId.copy(b, 16);
  return b;
}

/** The byte count a WRITE response reports. */
export function parseWriteResponse(msg: Buffer): number {
  if (msg.length < HEADER_SIZE + 16 || msg.readUInt16LE(HEADER_SIZE) !== 17) throw new IoError('malformed WRITE response');
  return msg.readUInt32LE(HEADER_SIZE + 4);
}
