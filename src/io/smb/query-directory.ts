/** SMB2 QUERY_DIRECTORY ([MS-SMB2] 2.2.33, 2.2.34) with FileDirectoryInformation entries ([MS-FSCC] 2.4.10). */
import { IoError } from '../../util/errors.js';
import { fileTimeToMs, FILE_ATTRIBUTE_DIRECTORY } from './create.js';
import { HEADER_SIZE } from './header.js';

const FILE_DIRECTORY_INFORMATION = 1;
export const QueryDirectoryFlags = { RESTART_SCANS: 1 } as const;

/** The QUERY_DIRECTORY request body for a pattern (`*` for everything). */
export function serializeQueryDirectoryRequest(fileId: Buffer, pattern: string, outputLength: number, flags: number): Buffer {
  const name = Buffer.from(pattern, 'utf16le');
  const b = Buffer.alloc(32 + name.length);
  b.writeUInt16LE(33, 0);
  b.writeUInt8(FILE_DIRECTORY_INFORMATION, 2);
  b.writeUInt8(flags, 3);
  fileId.copy(b, 8);
  b.writeUInt16LE(HEADER_SIZE + 32, 24);
  b.writeUInt16LE(name.length, 26);
  b.writeUInt32LE(outputLength, 28);
  name.copy(b, 32);
  return b;
}

/** One directory entry. */
export interface DirectoryEntry {
  name: string;
  size: number;
  mtimeMs: number;
  isDirectory: boolean;
}

/** Parses the entries of a QUERY_DIRECTORY response, following NextEntryOffset within bounds. */
export function parseQueryDirectoryResponse(msg: Buffer): DirectoryEntry[] {
  if (msg.length < HEADER_SIZE + 8 || msg.readUInt16LE(HEADER_SIZE) !== 9) throw new IoError('malformed QUERY_DIRECTORY response');
  const off = msg.readUInt16LE(HEADER_SIZE + 2);
  const len = msg.readUInt32LE(HEADER_SIZE + 4);
  if (off + len > msg.length) throw new IoError('malformed QUERY_DIRECTORY response: data outside the message');
  const buf = msg.subarray(off, off + len);
  const out: DirectoryEntry[] = [];
  for (let p = 0; p < buf.length; ) {
    if (p + 64 > buf.length) throw new IoError('malformed QUERY_DIRECTORY entry');
    const next = buf.readUInt32LE(p);
    const nameLen = buf.readUInt32LE(p + 60);
    if (p + 64 + nameLen > buf.length) throw new IoError('malformed QUERY_DIRECTORY entry: name past the end');
    out.push({
      name: buf.toString('utf16le', p + 64, p + 64 + nameLen),
      mtimeMs: fileTimeToMs(buf.readBigUInt64LE(p + 24)),
      size: Number(buf.readBigUInt64LE(p + 40)),
      isDirectory: (buf.readUInt32LE(p + 56) & FILE_ATTRIBUTE_DIRECTORY) !== 0,
    });
    if (next === 0) break;
    p += next;
  }
  return out;
}
