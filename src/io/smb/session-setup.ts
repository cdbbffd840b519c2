/** SMB2 SESSION_SETUP request and response ([MS-SMB2] 2.2.5, 2.2.6). */
import { IoError } from '../../util/errors.js';
import { HEADER_SIZE } from './header.js';

export const SessionFlags = { IS_GUEST: 0x1, IS_NULL: 0x2, ENCRYPT_DATA: 0x4 } as const;

/** The SESSION_SETUP request body carrying one security token. */
export function serializeSessionSetupRequest(securityMode: number, token: Buffer): Buffer {
  const b = Buffer.alloc(24 + token.length);
  b.writeUInt16LE(25, 0);
  b.writeUInt8(securityMode, 3);
  b.writeUInt16LE(HEADER_SIZE + 24, 12);
  b.writeUInt16LE(token.length, 14);
  token.copy(b, 24);
  return b;
}

/** The SESSION_SETUP response: flags and the server's security token. */
export function parseSessionSetupResponse(msg: Buffer): { sessionFlags: number; token: Buffer } {
  if (msg.length < HEADER_SIZE + 8 || msg.readUInt16LE(HEADER_SIZE) !== 9) throw new IoError('malformed SESSION_SETUP response');
  const off = msg.readUInt16LE(HEADER_SIZE + 4);
  const len = msg.readUInt16LE(HEADER_SIZE + 6);
  if (len > 0 && off + len > msg.length) throw new IoError('malformed SESSION_SETUP response: token outside the message');
  return { sessionFlags: msg.readUInt16LE(HEADER_SIZE + 2), token: Buffer.from(msg.subarray(off, off + len)) };
}
