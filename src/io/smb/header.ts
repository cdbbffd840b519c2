/** The 64-byte SMB2 packet header ([MS-SMB2] 2.2.1), sync and async forms. */
import { IoError } from '../../util/errors.js';

export const HEADER_SIZE = 64;
const PROTOCOL_ID = 0x424d53fe; // 0xFE 'S' 'M' 'B' read little-endian

/** SMB2 command codes. */
export const Command = {
  NEGOTIATE: 0,
  SESSION_SETUP: 1,
  LOGOFF: 2,
  TREE_CONNECT: 3,
  TREE_DISCONNECT: 4,
  CREATE: 5,
  CLOSE: 6,
  FLUSH: 7,
  READ: 8,
  WRITE: 9,
  ECHO: 13,
  QUERY_DIRECTORY: 14,
  QUERY_INFO: 16,
  SET_INFO: 17,
  OPLOCK_BREAK: 18,
} as const;

/** Header flags. */
export const HeaderFlags = { SERVER_TO_REDIR: 0x1, ASYNC: 0x2, RELATED: 0x4, SIGNED: 0x8 } as const;

/** The fields of a header; `asyncId` replaces `treeId` in async responses. */
export interface Header {
  creditCharge: number;
  /** NT status in responses; ChannelSequence/Reserved in requests (zero here). */
  status: number;
  command: number;
  credits: number;
  flags: number;
  nextCommand: number;
  messageId: number;
  treeId: number;
  asyncId: bigint;
  sessionId: bigint;
  signature: Buffer;
}

/** Writes a request header into a fresh 64-byte buffer (signature zero; signing fills it later). */
export function serializeHeader(h: Omit<Header, 'asyncId' | 'signature' | 'status' | 'nextCommand'>): Buffer {
  const b = Buffer.alloc(HEADER_SIZE);
  b.writeUInt32LE(PROTOCOL_ID, 0);
  b.writeUInt16LE(HEADER_SIZE, 4);
  b.writeUInt16LE(h.creditCharge, 6);
  b.writeUInt16LE(h.command, 12);
  b.writeUInt16LE(h.credits, 14);
  b.writeUInt32LE(h.flags >>> 0, 16);
  b.writeBigUInt64LE(BigInt(h.messageId), 24);
  b.writeUInt32LE(h.treeId >>> 0, 36);
  b.writeBigUInt64LE(h.sessionId, 40);
  return b;
}

/** Parses the header at the start of `b`, checking the protocol id and size. */
export function parseHeader(b: Buffer): Header {
  if (b.length < HEADER_SIZE || b.readUInt32LE(0) !== PROTOCOL_ID || b.readUInt16LE(4) !== HEADER_SIZE) {
    throw new IoError('malformed SMB2 message from server (bad header)');
  }
  const flags = b.readUInt32LE(16);
  const async = (flags & HeaderFlags.ASYNC) !== 0;
  const mid = b.readBigUInt64LE(24);
  return {
    creditCharge: b.readUInt16LE(6),
    status: b.readUInt32LE(8),
    command: b.readUInt16LE(12),
    credits: b.readUInt16LE(14),
    flags,
    nextCommand: b.readUInt32LE(20),
    // Message ids beyond 2^53 never occur here (they count requests); the oplock-break id maps to -1.
    messageId: mid === 0xffffffffffffffffn ? -1 : Number(mid),
    treeId: async ? 0 : b.readUInt32LE(36),
    asyncId: async ? b.readBigUInt64LE(32) : 0n,
    sessionId: b.readBigUInt64LE(40),
    signature: b.subarray(48, 64),
  };
}
