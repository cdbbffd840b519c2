/** SMB2 CREATE request and response ([MS-SMB2] 2.2.13, 2.2.14): opening, creating and probing files. */
import { IoError } from '../../util/errors.js';
import { HEADER_SIZE } from './header.js';

export const Access = {
  READ_DATA: 0x1,
  WRITE_DATA: 0x2,
  APPEND_DATA: 0x4,
  READ_EA: 0x8,
  WRITE_EA: 0x10,
  READ_ATTRIBUTES: 0x80,
  WRITE_ATTRIBUTES: 0x100,
  DELETE: 0x10000,
  READ_CONTROL: 0x20000,
  SYNCHRONIZE: 0x100000,
} as const;
export const ShareAccess = { READ: 1, WRITE: 2, DELETE: 4, ALL: 7 } as const;
export const Disposition = { SUPERSEDE: 0, OPEN: 1, CREATE: 2, OPEN_IF: 3, OVERWRITE: 4, OVERWRITE_IF: 5 } as const;
export const CreateOptions = { DIRECTORY_FILE: 0x1, WRITE_THROUGH: 0x2, NON_DIRECTORY_FILE: 0x40, DELETE_ON_CLOSE: 0x1000 } as const;
export const FILE_ATTRIBUTE_DIRECTORY = 0x10;
const FILE_ATTRIBUTE_NORMAL = 0x80;
const IMPERSONATION = 2;

/** What to open and how. `name` is share-relative with backslashes, empty for the share's root. */
export interface CreateRequest {
  name: string;
  access: number;
  shareAccess: number;
  disposition: number;
  options: number;
}

/** The CREATE request body (no create contexts, no oplock). */
export function serializeCreateRequest(r: CreateRequest): Buffer {
  const name = Buffer.from(r.name, 'utf16le');
  // An empty name still needs one byte of buffer ([MS-SMB2] 2.2.13).
  const b = Buffer.alloc(56 + Math.max(name.length, 1));
  b.writeUInt16LE(57, 0);
  b.writeUInt32LE(IMPERSONATION, 4);
  b.writeUInt32LE(r.access >>> 0, 24);
  b.writeUInt32LE(r.options & CreateOptions.DIRECTORY_FILE ? 0 : FILE_ATTRIBUTE_NORMAL, 28);
  b.writeUInt32LE(r.shareAccess, 32);
  b.writeUInt32LE(r.disposition, 36);
  b.writeUInt32LE(r.options >>> 0, 40);
  b.writeUInt16LE(HEADER_SIZE + 56, 44);
  b.writeUInt16LE(name.length, 46);
  name.copy(b, 56);
  return b;
}

/** Converts a FILETIME (100 ns ticks since 1601) to Unix milliseconds. */
export function fileTimeToMs(ft: bigint): number {
  return Number(ft / 10000n) - 11644473600000;
}

/** The opened handle and the attributes CREATE returns with it. */
export interface CreateResponse {
  fileId: Buffer;
  createAction: number;
  /** CreationTime and ChangeTime as sent (FILETIME, 100 ns ticks; 0 when the server does not say). */
  creationTime: bigint;
  changeTime: bigint;
  mtimeMs: number;
  endOfFile: number;
  attributes: number;
}

/** Parses a CREATE response. */
export function parseCreateResponse(msg: Buffer): CreateResponse {
  if (msg.length < HEADER_SIZE + 88 || msg.readUInt16LE(HEADER_SIZE) !== 89) throw new IoError('malformed CREATE response');
  const b = msg.subarray(HEADER_SIZE);
  return {
    createAction: b.readUInt32LE(4),
    creationTime: b.readBigUInt64LE(8),
    changeTime: b.readBigUInt64LE(32),
    mtimeMs: fileTimeToMs(b.readBigUInt64LE(24)),
    endOfFile: Number(b.readBigUInt64LE(48)),
    attributes: b.readUInt32LE(56),
    fileId: Buffer.from(b.subarray(64, 80)),
  };
}
