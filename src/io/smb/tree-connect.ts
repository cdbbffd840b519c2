/** SMB2 TREE_CONNECT request and response ([MS-SMB2] 2.2.9, 2.2.10). */
import { IoError } from '../../util/errors.js';
import { HEADER_SIZE } from './header.js';

export const ShareFlags = { ENCRYPT_DATA: 0x8000 } as const;

/** The TREE_CONNECT request body for `\\server\share`. */
export function serializeTreeConnectRequest(uncPath: string): Buffer {
  const path = Buffer.from(uncPath, 'utf16le');
  const b = Buffer.alloc(8 + path.length);
  b.writeUInt16LE(9, 0);
  b.writeUInt16LE(HEADER_SIZE + 8, 4);
  b.writeUInt16LE(path.length, 6);
  path.copy(b, 8);
  return b;
}

/** The TREE_CONNECT response: share type and flags. */
export function parseTreeConnectResponse(msg: Buffer): { shareType: number; shareFlags: number; maximalAccess: number } {
  if (msg.length < HEADER_SIZE + 16 || msg.readUInt16LE(HEADER_SIZE) !== 16) throw new IoError('malformed TREE_CONNECT response');
  return {
    shareType: msg.readUInt8(HEADER_SIZE + 2),
    shareFlags: msg.readUInt32LE(HEADER_SIZE + 4),
    maximalAccess: msg.readUInt32LE(HEADER_SIZE + 12),
  };
}
