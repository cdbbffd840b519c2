/** The small fixed-size requests: CLOSE, FLUSH, ECHO, LOGOFF, TREE_DISCONNECT ([MS-SMB2] 2.2.7, 2.2.11, 2.2.15, 2.2.17, 2.2.28). */
import { fileTimeToMs } from './create.js';
import { HEADER_SIZE } from './header.js';

/** CLOSE's SMB2_CLOSE_FLAG_POSTQUERY_ATTRIB: the reply carries the file's attributes as of the close. */
export const CLOSE_POSTQUERY_ATTRIB = 0x0001;

/** A CLOSE request body; `postQuery` asks for the file's attributes in the reply (parseCloseResponse). */
export function serializeCloseRequest(fileId: Buffer, postQuery = false): Buffer {
  const b = Buffer.alloc(24);
  b.writeUInt16LE(24, 0);
  b.writeUInt16LE(postQuery ? CLOSE_POSTQUERY_ATTRIB : 0, 2);
  fileId.copy(b, 8);
  return b;
}

/** What a CLOSE reply says about the file when the request asked for it (POSTQUERY_ATTRIB). */
export interface CloseAttributes {
  mtimeMs: number;
  endOfFile: number;
  attributes: number;
}

/** The attributes in a CLOSE reply (whole message, header included), or null when the server sent none. */
export function parseCloseResponse(msg: Buffer): CloseAttributes | null {
  const b = msg.subarray(HEADER_SIZE);
  if (b.length < 60 || b.readUInt16LE(0) !== 60 || !(b.readUInt16LE(2) & CLOSE_POSTQUERY_ATTRIB)) return null;
  return { mtimeMs: fileTimeToMs(b.readBigUInt64LE(24)), endOfFile: Number(b.readBigUInt64LE(48)), attributes: b.readUInt32LE(56) };
}

/** A FLUSH request body. */
export function serializeFlushRequest(fileId: Buffer): Buffer {
  const b = Buffer.alloc(24);
  b.writeUInt16LE(24, 0);
  fileId.copy(b, 8);
  return b;
}

/** The 4-byte body shared by ECHO, LOGOFF and TREE_DISCONNECT requests. */
export function serializeEmptyRequest(): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt16LE(4, 0);
  return b;
}
