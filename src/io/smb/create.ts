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
  /**
   * Ask for the file's on-disk identity (the QFid create context, [MS-SMB2] 2.2.13.2.9): a reopen can then tell the
   * same file from a replacement whose size and times were all kept.
   */
  queryDiskId?: boolean;
}

/** The QFid create context's name ([MS-SMB2] 2.2.13.2: SMB2_CREATE_QUERY_ON_DISK_ID). */
const QFID = Buffer.from('QFid', 'latin1');
/** A create context's fixed part: Next, NameOffset, NameLength, Reserved, DataOffset, DataLength. */
const CONTEXT_HEADER = 16;
/** The QFid response's data: DiskFileId (8 bytes), VolumeId (8) and Reserved (16) ([MS-SMB2] 2.2.14.2.9). */
const QFID_DATA = 32;
/** DiskFileId's length at the start of QFID_DATA. */
const DISK_FILE_ID = 8;

const align8 = (n: number) => (n + 7) & ~7;

/** The CREATE request body (no oplock; the QFid context when asked for). */
export function serializeCreateRequest(r: CreateRequest): Buffer {
  const name = Buffer.from(r.name, 'utf16le');
  // An empty name still needs one byte of buffer ([MS-SMB2] 2.2.13). A context starts 8-byte aligned after it.
  const nameBytes = Math.max(name.length, 1);
  const contextAt = r.queryDiskId ? 56 + align8(nameBytes) : 0;
  const b = Buffer.alloc(r.queryDiskId ? contextAt + CONTEXT_HEADER + align8(QFID.length) : 56 + nameBytes);
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
  if (r.queryDiskId) {
    b.writeUInt32LE(HEADER_SIZE + contextAt, 48);
    b.writeUInt32LE(b.length - contextAt, 52);
    b.writeUInt16LE(CONTEXT_HEADER, contextAt + 4);
    b.writeUInt16LE(QFID.length, contextAt + 6);
    QFID.copy(b, contextAt + CONTEXT_HEADER);
  }
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
  /**
   * The file's id on its volume (QFid's DiskFileId, the first 8 of its 32 bytes; hex) when asked for and sent; null
   * otherwise. The VolumeId after it is left out: Samba sends the file system's st_dev there, which a reboot of the
   * server can change (btrfs subvolumes, device-mapper) for the same file. Samba puts st_dev into the DiskFileId too
   * for a file on another device than the share's root (an image in a subvolume under the shared one): such a file
   * still reads as changed after a reboot that renumbers its device (a run that fails, never a wrong read).
   */
  diskId: string | null;
}

/**
 * The QFid response context's DiskFileId among the CREATE response's contexts (offsets from the SMB2 header), as hex;
 * null when the server sent none. Contexts that do not lie inside the message are a malformed response.
 */
function diskIdOf(msg: Buffer, offset: number, length: number): string | null {
  if (length === 0) return null;
  if (offset < HEADER_SIZE + 88 || offset % 8 || offset + length > msg.length) throw new IoError('malformed CREATE response (create contexts)');
  const all = msg.subarray(offset, offset + length);
  for (let at = 0; ; ) {
    if (at + CONTEXT_HEADER > all.length) throw new IoError('malformed CREATE response (create contexts)');
    const next = all.readUInt32LE(at);
    const nameOffset = all.readUInt16LE(at + 4);
    const nameLength = all.readUInt16LE(at + 6);
    const dataOffset = all.readUInt16LE(at + 10);
    const dataLength = all.readUInt32LE(at + 12);
    const end = next ? next : all.length - at;
    if (nameOffset + nameLength > end || (dataLength && dataOffset + dataLength > end) || (next && (next % 8 || at + next > all.length))) {
      throw new IoError('malformed CREATE response (create contexts)');
    }
    if (all.subarray(at + nameOffset, at + nameOffset + nameLength).equals(QFID) && dataLength >= QFID_DATA) {
      return all.subarray(at + dataOffset, at + dataOffset + DISK_FILE_ID).toString('hex');
    }
    if (!next) return null;
    at += next;
  }
}

/** Parses a CREATE response. */
export function parseCreateResponse(msg: Buffer): CreateResponse {
  if (msg.length < HEADER_SIZE + 88 || msg.readUInt16LE(HEADER_SIZE) !== 89) throw new IoError('malformed CREATE response');
  const b = msg.subarray(HEADER_SIZE);
  return {
    diskId: diskIdOf(msg, b.readUInt32LE(80), b.readUInt32LE(84)),
    createAction: b.readUInt32LE(4),
    creationTime: b.readBigUInt64LE(8),
    changeTime: b.readBigUInt64LE(32),
    mtimeMs: fileTimeToMs(b.readBigUInt64LE(24)),
    endOfFile: Number(b.readBigUInt64LE(48)),
    attributes: b.readUInt32LE(56),
    fileId: Buffer.from(b.subarray(64, 80)),
  };
}
