/**
 * SMB2 compounding ([MS-SMB2] 3.2.4.1.4, 3.2.5.1.3, 3.3.5.2.7): several messages in one transport frame, each
 * header's NextCommand giving the 8-byte aligned offset of the next. In a chain of related requests every
 * request but the first carries SMB2_FLAGS_RELATED_OPERATIONS and names the file the previous one opened with
 * the FileId of all ones, so CREATE + QUERY_INFO + CLOSE cost one round trip instead of three.
 */
import { IoError } from '../../util/errors.js';
import { HEADER_SIZE, parseHeader, type Header } from './header.js';
import { Status } from './status.js';

/** The FileId a related request uses for "the file the previous request in the chain opened or used". */
export const RELATED_FILE_ID: Buffer = Buffer.alloc(16, 0xff);

const NEXT_COMMAND_AT = 20;
const ALIGN = 8;
/** A frame would hold no more than this many messages (a bound, so a hostile frame cannot make us loop long). */
const MAX_CHAIN = 256;

const pad = (n: number) => (ALIGN - (n % ALIGN)) % ALIGN;

/**
 * Lays `messages` (each: header, then body parts) out as one chain, in place: every message but the last gets
 * the zero padding that aligns the next one and its header's NextCommand; the last keeps NextCommand 0. Returns
 * each message's parts, padding included, because a signature covers its message's padding ([MS-SMB2] 3.1.4.1).
 */
export function chainMessages(messages: Buffer[][]): Buffer[][] {
  return messages.map((parts, i) => {
    if (parts[0].length < HEADER_SIZE) throw new Error('chainMessages: a message needs its 64-byte header first');
    if (i === messages.length - 1) {
      parts[0].writeUInt32LE(0, NEXT_COMMAND_AT);
      return parts;
    }
    const length = parts.reduce((n, p) => n + p.length, 0);
    const gap = pad(length);
    parts[0].writeUInt32LE(length + gap, NEXT_COMMAND_AT);
    return gap ? [...parts, Buffer.alloc(gap)] : parts;
  });
}

/** One message of a received chain: its header and its bytes (padding to the next message included). */
export interface ChainedMessage {
  header: Header;
  msg: Buffer;
}

/**
 * Splits a frame into its messages. A NextCommand that points before the end of the current header, past the
 * frame, or to an unaligned offset makes the whole frame malformed (the connection is then dropped: [MS-SMB2]
 * 3.2.5.1.3 says to disconnect on a misaligned chain).
 */
export function splitChain(frame: Buffer): ChainedMessage[] {
  const out: ChainedMessage[] = [];
  for (let off = 0; off < frame.length; ) {
    const rest = frame.subarray(off);
    const header = parseHeader(rest);
    const next = header.nextCommand;
    if (next !== 0 && (next < HEADER_SIZE || next > rest.length || next % ALIGN !== 0)) throw new IoError('malformed compound message from server');
    if (out.length === MAX_CHAIN) throw new IoError('malformed compound message from server (too many messages)');
    out.push({ header, msg: next ? rest.subarray(0, next) : rest });
    if (!next) break;
    off += next;
  }
  return out;
}

/** How a chain of CREATE, requests on the opened file and CLOSE ended, judged from its replies' statuses. */
export interface ChainOutcome {
  /** Index of the reply whose status fails the chain (0: the CREATE), or -1 when every one is acceptable. */
  failed: number;
  /** Whether the file the CREATE opened is still open on the server: a CLOSE of its real FileId must follow. */
  open: boolean;
}

/**
 * Judges a chain's replies: `statuses[0]` is the CREATE's, then one per request in `ok` (its acceptable statuses),
 * then the CLOSE's. A server fails the requests after a failed one with the same status ([MS-SMB2] 3.3.5.2.7.2:
 * Windows after any failure, Samba after a failed CREATE only), so the first unacceptable status is the cause and
 * later ones are its echo. The file stays open when the CREATE succeeded and the CLOSE did not.
 */
export function chainOutcome(statuses: number[], ok: number[][]): ChainOutcome {
  let failed = statuses[0] === Status.SUCCESS ? -1 : 0;
  for (let i = 0; failed < 0 && i < ok.length; i++) if (!ok[i].includes(statuses[i + 1])) failed = i + 1;
  return { failed, open: statuses[0] === Status.SUCCESS && statuses[ok.length + 1] !== Status.SUCCESS };
}
