/**
 * SMB2 QUERY_INFO and SET_INFO ([MS-SMB2] 2.2.37-2.2.40) with the file information classes used here
 * ([MS-FSCC] 2.4): standard (size), end of file, rename, disposition (delete).
 */
import { IoError } from '../../util/errors.js';
import { HEADER_SIZE } from './header.js';

const INFO_FILE = 1;
export const FileInfoClass = { RENAME: 10, DISPOSITION: 13, END_OF_FILE: 20, STANDARD: 5 } as const;

/** The QUERY_INFO request body for a file information class. */
export function serializeQueryInfoRequest(fileId: Buffer, infoClass: number, outputLength: number): Buffer {
  const b = Buffer.alloc(41);
  b.writeUInt16LE(41, 0);
  b.writeUInt8(INFO_FILE, 2);
  b.writeUInt8(infoClass, 3);
  b.writeUInt32LE(outputLength, 4);
  b.writeUInt16LE(HEADER_SIZE + 40, 8);
  fileId.copy(b, 24);
  return b;
}

/** The information buffer of a QUERY_INFO response. */
export function parseQueryInfoResponse(msg: Buffer): Buffer {
  if (msg.length < HEADER_SIZE + 8 || msg.readUInt16LE(HEADER_SIZE) !== 9) throw new IoError('malformed QUERY_INFO response');
  const off = msg.readUInt16LE(HEADER_SIZE + 2);
  const len = msg.readUInt32LE(HEADER_SIZE + 4);
  if (off + len > msg.length) throw new IoError('malformed QUERY_INFO response: data outside the message');
  return msg.subarray(off, off + len);
}

/** FileStandardInformation: the end-of-file position and whether the handle is a directory. */
export function parseStandardInfo(b: Buffer): { endOfFile: number; directory: boolean } {
  if (b.length < 22) throw new IoError('malformed FileStandardInformation');
  return { endOfFile: Number(b.readBigUInt64LE(8)), directory: b[21] !== 0 };
}

/** The SET_INFO request body for a file information class. */
export function serializeSetInfoRequest(fileId: Buffer, infoClass: number, info: Buffer): Buffer {
  const b = Buffer.alloc(32 + info.length);
  b.writeUInt16LE(33, 0);
  b.writeUInt8(INFO_FILE, 2);
  b.writeUInt8(infoClass, 3);
  b.writeUInt32LE(info.length, 4);
  b.writeUInt16LE(HEADER_SIZE + 32, 8);
  fileId.copy(b, 16);
  info.copy(b, 32);
  return b;
}

/** FileEndOfFileInformation. */
export function endOfFileInfo(size: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(size));
  return b;
}

/** FileRenameInformation (SMB2 form): the new share-relative name with backslashes. */
export function renameInfo(newName: string, replace: boolean): Buffer {
  const name = Buffer.from(newName, 'utf16le');
  const b = Buffer.alloc(20 + name.length);
  b.writeUInt8(replace ? 1 : 0, 0);
  b.writeUInt32LE(name.length, 16);
  name.copy(b, 20);
  return b;
}

/** FileDispositionInformation: delete when the last handle closes. */
export function dispositionInfo(deletePending: boolean): Buffer {
  return Buffer.from([deletePending ? 1 : 0]);
}
