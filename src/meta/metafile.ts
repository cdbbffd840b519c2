/**
 * Reading and writing metafiles as files: native (header + entries + trailer) and VhdBlockBackup's headerless
 * layout. Byte layouts are in docs/metafile.md; this module only sequences and bounds the I/O.
 */
import type { DiskIdentity } from '../formats/disk.js';
import { writeSizedAtomically, type PositionedWriter } from '../io/atomic.js';
import { displayLocation, type Location } from '../io/location.js';
import { bufferFile } from '../io/memory-store.js';
import type { RandomAccessFile } from '../io/store.js';
import { MetafileError } from '../util/errors.js';
import { decodeEntries, encodeEntries, encodeEntry, ListVerifier, parseTrailer, serializeTrailer, stateName, TRAILER_SIZE, type BlockState, type EntryBatch } from './entries.js';
import { DIGEST_LENGTH, SUB_DIGEST_LENGTH, type HashAlgorithm } from './hashers.js';
import { blockCountFor, entrySize, hasMagic, HEADER_SIZE, parseHeader, serializeHeader, subAlgorithmFor, subBlockSizeProblem, subSlotSize, type MetafileHeader, type SubLevel } from './header.js';
import { decodeVbbEntries, VBB_BLOCK_SIZE, VBB_DIGEST_LENGTH, vbbBlockCount } from './vbb.js';
import { crc32c } from '../util/crc32c.js';
import { allocForRead } from '../util/aligned.js';
import { toolVersion } from './version.js';

/** Name suffix of metafiles: `<image>.blocklist.bin`. */
export const METAFILE_SUFFIX = '.blocklist.bin';

/** Native lists up to this many bytes are kept in memory after verification; larger ones are read on demand. */
export const LIST_IN_MEMORY_LIMIT = 64 << 20;
/** Lists up to this size are read whole in one step where the store offers it (ByteStore.readSmall). */
const SMALL_LIST = 1 << 20;

/** Lists are verified and written in chunks of about this size. */
const IO_CHUNK = 8 << 20;
const WRITE_BATCH = 1 << 20;

/** `native`: vhdsync's self-describing layout; `vbb`: VhdBlockBackup's headerless one. */
export type MetafileLayout = 'native' | 'vbb';

/** The location of an image's metafile: `<image>.blocklist.bin` in the same store. */
export function metafileLocationFor(image: Location): Location {
  return { store: image.store, path: image.path + METAFILE_SUFFIX };
}

/** The image a metafile belongs to by name (the name without `.blocklist.bin`), or null for other names. */
export function imageLocationForMetafile(meta: Location): Location | null {
  if (!meta.path.endsWith(METAFILE_SUFFIX) || meta.path.length === METAFILE_SUFFIX.length) return null;
  return { store: meta.store, path: meta.path.slice(0, -METAFILE_SUFFIX.length) };
}

/** What is known about a metafile once opened, whatever its layout. */
export interface MetafileSummary {
  layout: MetafileLayout;
  algorithm: HashAlgorithm;
  digestLength: number;
  blockSize: number;
  /** Null for vbb files when no image told it. */
  logicalSectorSize: number | null;
  virtualSize: number;
  /** False for a vbb file read without its image: the size is then rounded up to whole blocks. */
  virtualSizeExact: boolean;
  blockCount: number;
  /** The identity recorded at hashing time; null for vbb files. */
  identity: DiskIdentity | null;
  /** A diff's metafile: its parent's identity when copy checked it (native version 2); null otherwise. */
  parentIdentity: DiskIdentity | null;
  createdMs: number | null;
  toolVersion: string | null;
  /** The second level (native version 3): sub-block digests of every block; null for older lists and vbb files. */
  sub: SubLevel | null;
}

/** Options for readMetafile. */
export interface ReadMetafileOptions {
  /** The image's virtual size: required to recognise a vbb file exactly. */
  virtualSize?: number;
  /** The image's logical sector size, recorded in the summary of vbb files. */
  logicalSectorSize?: number;
  /** Override of LIST_IN_MEMORY_LIMIT (tests use it to exercise the streaming path). */
  memoryLimit?: number;
}

/** Entries as stored: entry `first + i`'s digest is `bytes[i * stride + digestOffset, + digestLength)`. */
export interface EntryView {
  first: number;
  count: number;
  stride: number;
  digestOffset: number;
  digestLength: number;
  bytes: Buffer;
}

/** An opened, verified metafile. Close it when done. */
export class Metafile {
  private constructor(
    readonly location: Location,
    readonly summary: MetafileSummary,
    /** The metafile's own mtime (VhdBlockBackup's staleness rule compares it with the image's). */
    readonly mtimeMs: number,
    private readonly file: RandomAccessFile | null,
    private readonly list: Buffer | null,
    /** The sub-digest table when the list is held in memory (version 3). */
    private readonly table: Buffer | null = null,
  ) {}

  /** The metafile as the user would write it, for messages. */
  get name(): string {
    return displayLocation(this.location);
  }

  /** Length in bytes of block `index` (the last block may be shorter). */
  blockLength(index: number): number {
    const s = this.summary;
    return Math.min(s.blockSize, s.virtualSize - index * s.blockSize);
  }

  /** Reads entries [first, first+count) (clamped to the list), states and digests apart. */
  async read(first: number, count: number): Promise<EntryBatch> {
    const v = await this.entryView(first, count);
    return this.summary.layout === 'native' ? decodeEntries(v.bytes, first, v.digestLength) : decodeVbbEntries(v.bytes, first);
  }

  /**
   * Entries [first, first+count) (clamped to the list) as the file stores them, not decoded: for callers that only
   * compare or pick a few digests (a list held in memory gives a view of itself; 65 536 decoded entries cost a
   * fresh megabyte and a copy per digest).
   */
  async entryView(first: number, count: number): Promise<EntryView> {
    const s = this.summary;
    if (!Number.isSafeInteger(first) || !Number.isSafeInteger(count) || first < 0 || count < 0) {
      throw new RangeError(`bad entry range ${first}+${count}`);
    }
    const n = Math.max(0, Math.min(count, s.blockCount - first));
    const native = s.layout === 'native';
    const stride = native ? entrySize(s.digestLength) : VBB_DIGEST_LENGTH;
    const start = first * stride;
    let bytes: Buffer;
    if (this.list) {
      bytes = this.list.subarray(start, start + n * stride);
    } else {
      bytes = await this.file!.read((native ? HEADER_SIZE : 0) + start, n * stride);
      if (bytes.length !== n * stride) throw new MetafileError('the metafile shrank while being read', this.name);
    }
    return { first, count: n, stride, digestOffset: native ? 1 : 0, digestLength: s.digestLength, bytes };
  }

  /**
   * The sub-digest slots of blocks [first, first+count) (clamped to the list), back to back: `subSlotSize` bytes
   * per block, ceil(length / sub-block size) digests in each (the last block's spare slots are zero). Throws for a
   * list without a second level.
   */
  async readSubs(first: number, count: number): Promise<Buffer> {
    const s = this.summary;
    if (!s.sub) throw new RangeError(`${this.name} has no sub-block digests`);
    if (!Number.isSafeInteger(first) || !Number.isSafeInteger(count) || first < 0 || count < 0) {
      throw new RangeError(`bad entry range ${first}+${count}`);
    }
    const n = Math.max(0, Math.min(count, s.blockCount - first));
    const slot = subSlotSize(s.blockSize, s.sub);
    if (this.table) return this.table.subarray(first * slot, (first + n) * slot);
    const at = HEADER_SIZE + s.blockCount * entrySize(s.digestLength) + first * slot;
    const bytes = await this.file!.read(at, n * slot);
    if (bytes.length !== n * slot) throw new MetafileError('the metafile shrank while being read', this.name);
    return bytes;
  }

  /**
   * Copies a native list's body (entries, then the sub-digest table) to `out` at HEADER_SIZE, byte for byte, and
   * returns their CRCs. A list read on demand is checked against the CRCs stored in it as it is copied, so a file
   * changed since it was opened is refused rather than copied.
   */
  async copyBody(out: PositionedWriter): Promise<{ listCrc: number; tableCrc: number }> {
    const s = this.summary;
    if (s.layout !== 'native') throw new Error('only native lists have a body to copy');
    const listBytes = s.blockCount * entrySize(s.digestLength);
    const tableBytes = s.sub ? s.blockCount * subSlotSize(s.blockSize, s.sub) : 0;
    const copy = async (from: number, length: number, held: Buffer | null): Promise<number> => {
      let crc = 0;
      for (let off = 0; off < length; off += IO_CHUNK) {
        const len = Math.min(IO_CHUNK, length - off);
        const part = held ? held.subarray(off, off + len) : await this.file!.read(HEADER_SIZE + from + off, len);
        if (part.length !== len) throw new MetafileError('the metafile shrank while being copied', this.name);
        crc = crc32c(part, crc);
        await out.write(HEADER_SIZE + from + off, part);
      }
      return crc >>> 0;
    };
    const listCrc = await copy(0, listBytes, this.list);
    const tableCrc = await copy(listBytes, tableBytes, tableBytes ? this.table : null);
    if (!this.list) {
      const stored = parseTrailer(await this.file!.read(HEADER_SIZE + listBytes + tableBytes, TRAILER_SIZE), this.name);
      const head = parseHeader(await this.file!.read(0, HEADER_SIZE), this.name);
      if (stored >>> 0 !== listCrc || (s.sub && head.subTableCrc >>> 0 !== tableCrc)) {
        throw new MetafileError('changed while being copied; run the command again', this.name);
      }
    }
    return { listCrc, tableCrc };
  }

  /** How many sub-digests block `index` has (its length over the sub-block size, rounded up); 0 without a second level. */
  subCount(index: number): number {
    const sub = this.summary.sub;
    return sub ? Math.ceil(this.blockLength(index) / sub.size) : 0;
  }

  /**
   * Every entry in order as records writeMetafile accepts, read in batches (for example to re-stamp a list with
   * a new identity after a merge: `writeMetafile(to, { ...fields, identity }, meta.records())`).
   */
  async *records(batchSize = 1 << 16): AsyncGenerator<BlockRecord> {
    const sub = this.summary.sub;
    const slot = sub ? subSlotSize(this.summary.blockSize, sub) : 0;
    for (let first = 0; first < this.summary.blockCount; first += batchSize) {
      const b = await this.read(first, batchSize);
      const subs = sub ? await this.readSubs(first, b.count) : null;
      for (let i = 0; i < b.count; i++) {
        const index = first + i;
        const record: BlockRecord = { index, state: stateName(b.states[i]), digest: b.digests.subarray(i * b.digestLength, (i + 1) * b.digestLength) };
        if (subs) record.subDigests = subs.subarray(i * slot, i * slot + this.subCount(index) * sub!.digestLength);
        yield record;
      }
    }
  }

  /** Releases the file handle (if the list was not held in memory). */
  async close(): Promise<void> {
    await this.file?.close();
  }

  /** Opens and verifies a metafile; see readMetafile. */
  static async open(location: Location, options: ReadMetafileOptions | Promise<ReadMetafileOptions> = {}): Promise<Metafile> {
    const name = displayLocation(location);
    // Options still being worked out (the image's sizes, while it opens) are needed only once the file is read.
    options = Promise.resolve(options);
    options.catch(() => {});
    // A store that reads a small file in a single step (SMB: one round trip instead of five) gives a small list whole
    // with its size and mtime, and no stat goes first; a larger list is read through a handle like any other.
    const small = location.store.readSmall ? await location.store.readSmall(location.path, SMALL_LIST) : null;
    const st = small ? { size: small.size, mtimeMs: small.mtimeMs, isDirectory: false } : await location.store.stat(location.path);
    if (!st) throw missingMetafile(location);
    if (st.isDirectory) throw new MetafileError('is a directory, not a metafile', name);
    const file = small && small.bytes.length === small.size ? bufferFile(location.store.display(location.path), small.bytes) : await location.store.open(location.path, 'read');
    let keepOpen = false;
    try {
      const size = await file.size();
      const head = await file.read(0, Math.min(size, HEADER_SIZE));
      const opts = await options;
      const limit = opts.memoryLimit ?? LIST_IN_MEMORY_LIMIT;
      if (hasMagic(head)) {
        const { summary, list, table } = await openNative(file, size, head, name, limit);
        keepOpen = list === null;
        return new Metafile(location, summary, st.mtimeMs, keepOpen ? file : null, list, table);
      }
      const blockCount = vbbBlockCount(size, opts.virtualSize, name);
      const summary: MetafileSummary = {
        layout: 'vbb',
        algorithm: 'sha1-16',
        digestLength: VBB_DIGEST_LENGTH,
        blockSize: VBB_BLOCK_SIZE,
        logicalSectorSize: opts.logicalSectorSize ?? null,
        virtualSize: opts.virtualSize ?? blockCount * VBB_BLOCK_SIZE,
        virtualSizeExact: opts.virtualSize !== undefined,
        blockCount,
        identity: null,
        parentIdentity: null,
        createdMs: null,
        toolVersion: null,
        sub: null,
      };
      const list = size <= limit ? await file.read(0, size) : null;
      keepOpen = list === null;
      return new Metafile(location, summary, st.mtimeMs, keepOpen ? file : null, list);
    } finally {
      if (!keepOpen) await file.close();
    }
  }
}

function missingMetafile(location: Location): MetafileError {
  const image = imageLocationForMetafile(location);
  const fix = image ? `run vhdsync createmeta ${displayLocation(image)}` : 'run vhdsync createmeta on its image';
  return new MetafileError(`no metafile (${fix})`, displayLocation(location));
}

/** The exact length of a native metafile with header `h`. */
function nativeLength(h: MetafileHeader): number {
  return HEADER_SIZE + h.blockCount * entrySize(h.digestLength) + (h.sub ? h.blockCount * subSlotSize(h.blockSize, h.sub) : 0) + TRAILER_SIZE;
}

/**
 * The exact length of the native metafile whose first 512 bytes are `head` (checked as a reader checks them), for
 * readers that must bound a read before making it; MetafileError when `head` is not a native header.
 */
export function nativeMetafileLength(head: Buffer, subject: string): { length: number; virtualSize: number } {
  const h = parseHeader(head, subject);
  return { length: nativeLength(h), virtualSize: h.virtualSize };
}

async function openNative(
  file: RandomAccessFile,
  size: number,
  head: Buffer,
  name: string,
  memoryLimit: number,
): Promise<{ summary: MetafileSummary; list: Buffer | null; table: Buffer | null }> {
  const h = parseHeader(head, name);
  if (!h.complete) {
    throw new MetafileError('incomplete: the program writing it was interrupted (recreate it with vhdsync createmeta)', name);
  }
  const stride = entrySize(h.digestLength);
  const listBytes = h.blockCount * stride;
  const tableBytes = h.sub ? h.blockCount * subSlotSize(h.blockSize, h.sub) : 0;
  const expected = nativeLength(h);
  if (size < expected) {
    throw new MetafileError(`truncated: ${size} bytes, a list of ${h.blockCount} blocks needs ${expected} (recreate it with vhdsync createmeta)`, name);
  }
  if (size > expected) {
    throw new MetafileError(`has ${size - expected} trailing bytes after a list of ${h.blockCount} blocks; the metafile is corrupt (recreate it with vhdsync createmeta)`, name);
  }
  // Bounded by the file's real length above, so these allocations are sized by data that exists.
  const verifier = new ListVerifier(stride, name);
  const inMemory = listBytes + tableBytes <= memoryLimit;
  const keep = inMemory ? allocForRead(listBytes) : null;
  const chunk = Math.max(stride, Math.floor(IO_CHUNK / stride) * stride);
  for (let off = 0; off < listBytes; off += chunk) {
    const len = Math.min(chunk, listBytes - off);
    const part = await file.read(HEADER_SIZE + off, len, keep ? keep.subarray(off, off + len) : undefined);
    if (part.length !== len) throw new MetafileError('truncated while being read', name);
    verifier.update(part);
  }
  const trailer = await file.read(HEADER_SIZE + listBytes + tableBytes, TRAILER_SIZE);
  verifier.finish(parseTrailer(trailer, name));
  // The sub-digest table has its own CRC in the header (it is written beside the entries, not after them).
  const table = inMemory && tableBytes ? allocForRead(tableBytes) : null;
  let tableCrc = 0;
  for (let off = 0; off < tableBytes; off += IO_CHUNK) {
    const len = Math.min(IO_CHUNK, tableBytes - off);
    const part = await file.read(HEADER_SIZE + listBytes + off, len, table ? table.subarray(off, off + len) : undefined);
    if (part.length !== len) throw new MetafileError('truncated while being read', name);
    tableCrc = crc32c(part, tableCrc);
  }
  if ((tableCrc >>> 0) !== h.subTableCrc) {
    throw new MetafileError(
      `sub-digest table checksum mismatch (stored 0x${h.subTableCrc.toString(16).padStart(8, '0')}, computed 0x${(tableCrc >>> 0).toString(16).padStart(8, '0')}); the metafile is corrupt (recreate it with vhdsync createmeta)`,
      name,
    );
  }
  const summary: MetafileSummary = {
    layout: 'native',
    algorithm: h.algorithm,
    digestLength: h.digestLength,
    blockSize: h.blockSize,
    logicalSectorSize: h.logicalSectorSize,
    virtualSize: h.virtualSize,
    virtualSizeExact: true,
    blockCount: h.blockCount,
    identity: h.identity,
    parentIdentity: h.parentIdentity,
    createdMs: h.createdMs,
    toolVersion: h.toolVersion,
    sub: h.sub,
  };
  return { summary, list: keep, table };
}

/**
 * Opens and verifies a metafile (native, or vbb recognised by its length), refusing anything corrupt or truncated.
 * `opts` may still be pending (the image opening meanwhile): the read starts at once and waits for them after it.
 */
export function readMetafile(location: Location, opts: ReadMetafileOptions | Promise<ReadMetafileOptions> = {}): Promise<Metafile> {
  return Metafile.open(location, opts);
}

/** What a new metafile describes; the entries come separately. */
export interface NewMetafile {
  layout: MetafileLayout;
  algorithm: HashAlgorithm;
  blockSize: number;
  logicalSectorSize: number;
  virtualSize: number;
  identity: DiskIdentity;
  /** Recorded only in a diff's metafile (see MetafileSummary.parentIdentity); makes the file version 2. */
  parentIdentity?: DiskIdentity | null;
  /** Native only: the size of the second level's sub-blocks (its digest goes with `algorithm`); 0 or absent for none. */
  subBlockSize?: number;
  createdMs?: number;
  toolVersion?: string;
}

/** One entry to write. */
export interface BlockRecord {
  index: number;
  state: BlockState;
  digest: Uint8Array;
  /** With a second level: the block's sub-digests back to back (ceil(length / sub-block size) of them). */
  subDigests?: Uint8Array;
}

/**
 * Consecutive entries to write in one step: each block's state code, the digests back to back, and with a second
 * level each block's sub-digests in a slot of the list's slot size (a short last block's spare bytes 0).
 */
export interface RecordGroup {
  first: number;
  count: number;
  states: Uint8Array;
  digests: Uint8Array;
  subDigests: Uint8Array | null;
}

/** The header (not yet complete) of a new list, its fields checked. */
export function headerFor(meta: NewMetafile): MetafileHeader {
  const blockCount = blockCountFor(meta.virtualSize, meta.blockSize);
  const digestLength = DIGEST_LENGTH[meta.algorithm];
  if (meta.layout === 'vbb' && (meta.algorithm !== 'sha1-16' || meta.blockSize !== VBB_BLOCK_SIZE)) {
    throw new Error('vbb metafiles are SHA-1-16 at 2 MiB blocks');
  }
  if (meta.layout === 'native' && meta.algorithm === 'sha1-16') throw new Error('native metafiles do not use sha1-16');
  const sub = meta.subBlockSize ? subLevelFor(meta) : null;
  return {
    algorithm: meta.algorithm,
    digestLength,
    blockSize: meta.blockSize,
    logicalSectorSize: meta.logicalSectorSize,
    virtualSize: meta.virtualSize,
    blockCount,
    identity: meta.identity,
    parentIdentity: meta.parentIdentity ?? null,
    createdMs: meta.createdMs ?? Date.now(),
    toolVersion: meta.toolVersion ?? toolVersion(),
    complete: false,
    sub,
    subTableCrc: 0,
  };
}

/**
 * Writes a metafile atomically (temp name, flush, rename; an existing one is replaced only when the new one is
 * complete). `blocks` must yield every block in order; entries are streamed, so memory stays flat, but for a list
 * a share takes in one step (writeSizedAtomically: up to 4 MiB, laid out in memory, two round trips instead of four).
 */
export async function writeMetafile(
  location: Location,
  meta: NewMetafile,
  blocks: AsyncIterable<BlockRecord | RecordGroup> | Iterable<BlockRecord | RecordGroup>,
): Promise<void> {
  const header = headerFor(meta);
  const { blockCount, digestLength, sub } = header;
  const slot = sub ? subSlotSize(meta.blockSize, sub) : 0;
  const native = meta.layout === 'native';
  const stride = native ? entrySize(digestLength) : VBB_DIGEST_LENGTH;
  const size = native ? nativeLength(header) : blockCount * stride;
  await writeSizedAtomically(
    location,
    size,
    async (file) => {
      if (native) await file.write(0, serializeHeader(header));
      const batch = Buffer.alloc(Math.max(stride, Math.floor(WRITE_BATCH / stride) * stride));
      let pos = native ? HEADER_SIZE : 0;
      let used = 0;
      let crc = 0;
      let next = 0;
      // The sub-digest table goes after the entries, written beside them in the same pass with its own CRC.
      const table = sub ? Buffer.alloc(Math.max(slot, Math.floor(WRITE_BATCH / slot) * slot)) : null;
      let tablePos = HEADER_SIZE + blockCount * stride;
      let tableUsed = 0;
      let tableCrc = 0;
      const flushTable = async () => {
        const part = table!.subarray(0, tableUsed);
        tableCrc = crc32c(part, tableCrc);
        await file.write(tablePos, part);
        tablePos += tableUsed;
        tableUsed = 0;
        table!.fill(0);
      };
      const flushBatch = async () => {
        const part = batch.subarray(0, used);
        crc = crc32c(part, crc);
        await file.write(pos, part);
        pos += used;
        used = 0;
      };
      // A group's entries and slots are copied in runs as large as the batches allow.
      const writeGroup = async (g: RecordGroup) => {
        if (g.first !== next || g.count < 1 || next + g.count > blockCount) throw new Error(`metafile entries out of order: got ${g.first}+${g.count}, expected ${next} of ${blockCount}`);
        if (g.digests.length !== g.count * digestLength) throw new Error(`group of ${g.count} blocks with ${g.digests.length} bytes of digests, expected ${g.count * digestLength}`);
        if (table && g.subDigests?.length !== g.count * slot) throw new Error(`group of ${g.count} blocks with ${g.subDigests?.length ?? 0} bytes of sub-digests, expected ${g.count * slot}`);
        if (table && g.first + g.count === blockCount) {
          // A short last block's spare slots are 0, as the block-by-block path leaves them.
          const filled = Math.ceil((meta.virtualSize - (blockCount - 1) * meta.blockSize) / sub!.size) * sub!.digestLength;
          if (!g.subDigests!.subarray((g.count - 1) * slot + filled, g.count * slot).every((x) => x === 0)) throw new Error(`block ${blockCount - 1}: sub-digests past its ${filled} bytes`);
        }
        for (let k = 0; k < g.count; ) {
          const n = Math.min(g.count - k, Math.floor((batch.length - used) / stride));
          if (native) encodeEntries(batch, used, g.states, g.digests, k, n, digestLength);
          else batch.set(g.digests.subarray(k * digestLength, (k + n) * digestLength), used);
          used += n * stride;
          k += n;
          if (used + stride > batch.length) await flushBatch();
        }
        for (let k = 0; table && k < g.count; ) {
          const n = Math.min(g.count - k, Math.floor((table.length - tableUsed) / slot));
          table.set(g.subDigests!.subarray(k * slot, (k + n) * slot), tableUsed);
          tableUsed += n * slot;
          k += n;
          if (tableUsed + slot > table.length) await flushTable();
        }
        next += g.count;
      };
      for await (const b of blocks) {
        if ('states' in b && 'first' in b) {
          await writeGroup(b);
          continue;
        }
        if (b.index !== next || next >= blockCount) throw new Error(`metafile entries out of order: got ${b.index}, expected ${next} of ${blockCount}`);
        if (b.digest.length !== digestLength) throw new Error(`digest of ${b.digest.length} bytes, expected ${digestLength}`);
        if (native) encodeEntry(batch, used, b.state, b.digest);
        else batch.set(b.digest, used);
        if (table) {
          const want = Math.ceil(Math.min(meta.blockSize, meta.virtualSize - b.index * meta.blockSize) / sub!.size) * sub!.digestLength;
          if (b.subDigests?.length !== want) throw new Error(`block ${b.index}: ${b.subDigests?.length ?? 0} bytes of sub-digests, expected ${want}`);
          table.set(b.subDigests, tableUsed);
          tableUsed += slot;
          if (tableUsed + slot > table.length) await flushTable();
        }
        used += stride;
        next++;
        if (used + stride > batch.length) await flushBatch();
      }
      if (next !== blockCount) throw new Error(`metafile entries ended at ${next} of ${blockCount}`);
      if (used) await flushBatch();
      if (tableUsed) await flushTable();
      if (native) await finishNative(file, header, tablePos, crc, tableCrc);
    },
    { overwrite: true },
  );
}

/**
 * Ends a native list whose header (incomplete) and body are written: the trailer at `trailerPos`, then the header with
 * the complete flag. The file is a temp one that only writeAtomically's flush and rename publish, so nothing is
 * flushed here: until that flush, a crash leaves a temp file the next run removes, whatever subset of it was written.
 */
export async function finishNative(file: PositionedWriter, header: MetafileHeader, trailerPos: number, listCrc: number, tableCrc: number): Promise<void> {
  await file.write(trailerPos, serializeTrailer(listCrc));
  await file.write(0, serializeHeader({ ...header, complete: true, subTableCrc: tableCrc >>> 0 }));
}

/** The second level a new native list asks for, checked. */
function subLevelFor(meta: NewMetafile): SubLevel {
  const algorithm = subAlgorithmFor(meta.algorithm);
  if (meta.layout !== 'native' || !algorithm) throw new Error(`${meta.layout} ${meta.algorithm} lists have no second level`);
  const problem = subBlockSizeProblem(meta.subBlockSize!, meta.blockSize, meta.logicalSectorSize);
  if (problem) throw new Error(problem);
  return { algorithm, size: meta.subBlockSize!, digestLength: SUB_DIGEST_LENGTH[algorithm] };
}

/**
 * What a list's records need to be written again as the same list (layout, digests, geometry, second level), for
 * callers that re-stamp it with another identity: `writeMetafile(to, { ...writableFields(m), identity }, m.records())`.
 */
export function writableFields(list: Metafile): Omit<NewMetafile, 'identity'> {
  const s = list.summary;
  return {
    layout: s.layout,
    algorithm: s.algorithm,
    blockSize: s.blockSize,
    logicalSectorSize: s.logicalSectorSize ?? 512,
    virtualSize: s.virtualSize,
    subBlockSize: s.sub?.size ?? 0,
  };
}
