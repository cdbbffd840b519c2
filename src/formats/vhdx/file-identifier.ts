/** The VHDX file type identifier: the first 64 KiB of every VHDX file ([MS-VHDX] 2.2.1). */
import { CorruptImageError } from '../../util/errors.js';

/** Size of the file identifier structure. */
export const FILE_IDENTIFIER_SIZE = 64 * 1024;
const SIGNATURE = Buffer.from('vhdxfile', 'latin1');
const CREATOR_OFFSET = 8;
const CREATOR_BYTES = 512;

/** What the identifier holds: only the creator is informative. */
export interface FileIdentifier {
  creator: string;
}

/** True when `bytes` starts with the VHDX signature. */
export function hasSignature(bytes: Buffer): boolean {
  return bytes.length >= 8 && bytes.subarray(0, 8).equals(SIGNATURE);
}

/** Parses the identifier; the creator is UTF-16LE up to its first NUL. */
export function parse(bytes: Buffer, subject?: string): FileIdentifier {
  if (!hasSignature(bytes)) throw new CorruptImageError('not a VHDX file (no vhdxfile signature)', subject);
  const raw = bytes.subarray(CREATOR_OFFSET, Math.min(bytes.length, CREATOR_OFFSET + CREATOR_BYTES));
  let end = 0;
  while (end + 1 < raw.length && (raw[end] !== 0 || raw[end + 1] !== 0)) end += 2;
  return { creator: raw.subarray(0, end).toString('utf16le') };
}

/** Serializes the identifier into its 64 KiB area. */
export function serialize(id: FileIdentifier): Buffer {
  const buf = Buffer.alloc(FILE_IDENTIFIER_SIZE);
  SIGNATURE.copy(buf, 0);
  const creator = Buffer.from(id.creator, 'utf16le').subarray(0, CREATOR_BYTES - 2);
  creator.copy(buf, CREATOR_OFFSET);
  return buf;
}
