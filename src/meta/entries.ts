/**
 * The entry list of a native metafile (state byte + digest per block) and the trailer that closes it
 * (CRC-32C of the list, then `LEND`); layout in docs/metafile.md.
 */
import { crc32c } from '../util/crc32c.js';
import { MetafileError } from '../util/errors.js';

/** What a block is: never read (unallocated), known or found all zero, or data. */
export type BlockState = 'unallocated' | 'zero' | 'data';

const STATE_CODES: Record<BlockState, number> = { unallocated: 0, zero: 1, data: 2 };
const STATE_NAMES: BlockState[] = ['unallocated', 'zero', 'data'];

/** The code a state is stored as. */
export function stateCode(state: BlockState): number {
  return STATE_CODES[state];
}

/** The state a stored code stands for. */
export function stateName(code: number): BlockState {
  const s = STATE_NAMES[code];
  if (!s) throw new Error(`invalid block state code ${code}`);
  return s;
}

export const TRAILER_SIZE = 8;
const TRAILER_MAGIC = Buffer.from('LEND', 'ascii');

/** Writes one entry at `offset` of `out`. */
export function encodeEntry(out: Buffer, offset: number, state: BlockState, digest: Uint8Array): void {
  out[offset] = STATE_CODES[state];
  out.set(digest, offset + 1);
}

/** Writes entries `from`..`from+count` of a group (state codes, digests back to back) at `offset` of `out`. */
export function encodeEntries(out: Buffer, offset: number, states: Uint8Array, digests: Uint8Array, from: number, count: number, digestLength: number): void {
  const src = Buffer.isBuffer(digests) ? digests : Buffer.from(digests.buffer, digests.byteOffset, digests.byteLength);
  for (let k = from, at = offset; k < from + count; k++, at += 1 + digestLength) {
    if (states[k] > 2) throw new Error(`invalid block state code ${states[k]}`);
    out[at] = states[k];
    src.copy(out, at + 1, k * digestLength, (k + 1) * digestLength);
  }
}

/** Serializes the trailer for a list whose CRC-32C is `crc`. */
export function serializeTrailer(crc: number): Buffer {
  const b = Buffer.alloc(TRAILER_SIZE);
  b.writeUInt32LE(crc >>> 0, 0);
  TRAILER_MAGIC.copy(b, 4);
  return b;
}

/** Parses the trailer and returns the list CRC it records. */
export function parseTrailer(bytes: Buffer, subject: string): number {
  if (bytes.length !== TRAILER_SIZE || !TRAILER_MAGIC.equals(bytes.subarray(4, 8))) {
    throw new MetafileError('the list trailer is missing or damaged; the metafile is corrupt (recreate it with vhdsync createmeta)', subject);
  }
  return bytes.readUInt32LE(0);
}

/**
 * Running check of the list bytes as they are read in order: CRC-32C and valid state bytes.
 * `finish` compares with the trailer's CRC.
 */
export class ListVerifier {
  private crc = 0;
  private index = 0;

  constructor(
    private readonly entrySize: number,
    private readonly subject: string,
  ) {}

  /** Feeds a chunk holding whole entries. */
  update(chunk: Buffer): void {
    this.crc = crc32c(chunk, this.crc);
    for (let off = 0; off < chunk.length; off += this.entrySize, this.index++) {
      if (chunk[off] > 2) {
        throw new MetafileError(`entry ${this.index} has an invalid state ${chunk[off]}; the metafile is corrupt (recreate it with vhdsync createmeta)`, this.subject);
      }
    }
  }

  /** Throws when the CRC computed so far differs from `stored`. */
  finish(stored: number): void {
    if ((this.crc >>> 0) !== stored) {
      throw new MetafileError(
        `list checksum mismatch (stored 0x${stored.toString(16).padStart(8, '0')}, computed 0x${(this.crc >>> 0).toString(16).padStart(8, '0')}); the metafile is corrupt (recreate it with vhdsync createmeta)`,
        this.subject,
      );
    }
  }
}

/** A run of consecutive entries as read from a metafile. */
export interface EntryBatch {
  /** Index of the first entry. */
  first: number;
  count: number;
  digestLength: number;
  /** One state code per entry (0 unallocated, 1 zero, 2 data). */
  states: Uint8Array;
  /** `count` digests back to back. */
  digests: Buffer;
}

/** Splits raw native entry bytes into an EntryBatch. */
export function decodeEntries(bytes: Buffer, first: number, digestLength: number): EntryBatch {
  const size = digestLength + 1;
  const count = bytes.length / size;
  const states = new Uint8Array(count);
  const digests = Buffer.allocUnsafe(count * digestLength);
  for (let i = 0, off = 0; i < count; i++, off += size) {
    states[i] = bytes[off];
    bytes.copy(digests, i * digestLength, off + 1, off + size);
  }
  return { first, count, digestLength, states, digests };
}
