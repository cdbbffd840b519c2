/**
 * The VHDX metadata log ([MS-VHDX] 2.3): a circular buffer of entries, each a header sector with
 * descriptors ('desc' for a 4 KiB data sector, 'zero' for a zeroed range) followed by data sectors.
 * Data sectors carry 4084 bytes; the first 8 and last 4 bytes of each logged sector live in its descriptor.
 */
import { crc32cWithZeroedField } from '../../util/crc32c.js';

/** Log sectors and logged file sectors are 4 KiB. */
export const LOG_SECTOR = 4096;
const HEADER_SIZE = 64;
const DESCRIPTOR_SIZE = 32;
const ENTRY_SIG = Buffer.from('loge', 'latin1');
const DATA_DESC_SIG = Buffer.from('desc', 'latin1');
const ZERO_DESC_SIG = Buffer.from('zero', 'latin1');
const DATA_SIG = Buffer.from('data', 'latin1');

/** One change an entry records: a 4 KiB sector image or a zeroed range. */
export type LogChange = { kind: 'data'; fileOffset: number; data: Buffer } | { kind: 'zero'; fileOffset: number; length: number };

/** One valid log entry. */
export interface LogEntry {
  /** Byte offset of the entry inside the log. */
  position: number;
  length: number;
  sequenceNumber: bigint;
  tail: number;
  flushedFileOffset: number;
  lastFileOffset: number;
  changes: LogChange[];
}

/** What a writer supplies for one entry. */
export interface NewLogEntry {
  sequenceNumber: bigint;
  tail: number;
  logGuid: Buffer;
  flushedFileOffset: number;
  lastFileOffset: number;
  changes: LogChange[];
}

/** Sectors the header and `count` descriptors occupy (the header takes two descriptor slots). */
export function descriptorSectors(count: number): number {
  return Math.ceil((HEADER_SIZE + count * DESCRIPTOR_SIZE) / LOG_SECTOR);
}

/** The size of an entry holding `dataSectors` sector images and `zeros` zero ranges. */
export function entryLength(dataSectors: number, zeros = 0): number {
  return (descriptorSectors(dataSectors + zeros) + dataSectors) * LOG_SECTOR;
}

/** Reads `length` bytes at `pos` of a circular log, wrapping at its end. */
function circular(log: Buffer, pos: number, length: number): Buffer {
  if (pos + length <= log.length) return log.subarray(pos, pos + length);
  const first = log.length - pos;
  return Buffer.concat([log.subarray(pos), log.subarray(0, length - first)]);
}

/**
 * Parses the entry at `position`, or returns null when it is not a complete, valid entry of this
 * log (wrong signature, GUID or checksum, torn data sectors, inconsistent counts).
 */
export function parseEntryAt(log: Buffer, position: number, logGuid: Buffer): LogEntry | null {
  const head = circular(log, position, LOG_SECTOR);
  if (!head.subarray(0, 4).equals(ENTRY_SIG)) return null;
  const length = head.readUInt32LE(8);
  const tail = head.readUInt32LE(12);
  const seq = head.readBigUInt64LE(16);
  const count = head.readUInt32LE(24);
  if (length === 0 || length % LOG_SECTOR !== 0 || length > log.length) return null;
  if (tail % LOG_SECTOR !== 0 || tail >= log.length || seq === 0n) return null;
  if (!head.subarray(32, 48).equals(logGuid)) return null;
  const descSectors = descriptorSectors(count);
  if (descSectors * LOG_SECTOR > length) return null;
  const entry = circular(log, position, length);
  if (entry.readUInt32LE(4) !== crc32cWithZeroedField(entry, 4)) return null;
  const flushed = entry.readBigUInt64LE(48);
  const last = entry.readBigUInt64LE(56);
  if (flushed > BigInt(Number.MAX_SAFE_INTEGER) || last > BigInt(Number.MAX_SAFE_INTEGER)) return null;
  const changes: LogChange[] = [];
  let dataSector = descSectors;
  for (let i = 0; i < count; i++) {
    const d = entry.subarray(HEADER_SIZE + i * DESCRIPTOR_SIZE, HEADER_SIZE + (i + 1) * DESCRIPTOR_SIZE);
    const fileOffset = d.readBigUInt64LE(16);
    if (d.readBigUInt64LE(24) !== seq || fileOffset % BigInt(LOG_SECTOR) !== 0n || fileOffset > BigInt(Number.MAX_SAFE_INTEGER)) return null;
    if (d.subarray(0, 4).equals(ZERO_DESC_SIG)) {
      const zl = d.readBigUInt64LE(8);
      if (zl === 0n || zl % BigInt(LOG_SECTOR) !== 0n || fileOffset + zl > BigInt(Number.MAX_SAFE_INTEGER)) return null;
      changes.push({ kind: 'zero', fileOffset: Number(fileOffset), length: Number(zl) });
    } else if (d.subarray(0, 4).equals(DATA_DESC_SIG)) {
      if ((dataSector + 1) * LOG_SECTOR > length) return null;
      const s = entry.subarray(dataSector * LOG_SECTOR, (dataSector + 1) * LOG_SECTOR);
      dataSector++;
      const sSeq = (BigInt(s.readUInt32LE(4)) << 32n) | BigInt(s.readUInt32LE(4092));
      if (!s.subarray(0, 4).equals(DATA_SIG) || sSeq !== seq) return null;
      const data = Buffer.alloc(LOG_SECTOR);
      d.copy(data, 0, 8, 16);
      s.copy(data, 8, 8, 4092);
      d.copy(data, 4092, 4, 8);
      changes.push({ kind: 'data', fileOffset: Number(fileOffset), data });
    } else {
      return null;
    }
  }
  return { position, length, sequenceNumber: seq, tail, flushedFileOffset: Number(flushed), lastFileOffset: Number(last), changes };
}

/**
 * Finds the active sequence ([MS-VHDX] 2.3.3): among runs of valid entries with consecutive
 * sequence numbers, the one whose head has the highest sequence number, taken from the head's tail
 * to the head. Returns null when the log holds no valid sequence.
 */
export function findActiveSequence(log: Buffer, logGuid: Buffer): LogEntry[] | null {
  const cache = new Map<number, LogEntry | null>();
  const at = (pos: number) => {
    if (!cache.has(pos)) cache.set(pos, parseEntryAt(log, pos, logGuid));
    return cache.get(pos)!;
  };
  let best: LogEntry[] | null = null;
  // An entry met inside an earlier run starts only a suffix of that run, with the same head: skipping
  // such starts keeps the search linear even for a crafted log full of entries.
  const inner = new Set<number>();
  for (let start = 0; start < log.length; start += LOG_SECTOR) {
    if (inner.has(start)) continue;
    const first = at(start);
    if (!first) continue;
    const run = [first];
    let used = first.length;
    for (;;) {
      const prev = run[run.length - 1];
      const next = at((prev.position + prev.length) % log.length);
      if (!next || next.sequenceNumber !== prev.sequenceNumber + 1n || used + next.length > log.length) break;
      run.push(next);
      inner.add(next.position);
      used += next.length;
    }
    const head = run[run.length - 1];
    const tailIdx = run.findIndex((e) => e.position === head.tail);
    if (tailIdx < 0) continue;
    if (!best || head.sequenceNumber > best[best.length - 1].sequenceNumber) best = run.slice(tailIdx);
  }
  return best;
}

/** Serializes an entry: header and descriptors, then the data sectors, with the checksum over all of it. */
export function serializeEntry(e: NewLogEntry): Buffer {
  const data = e.changes.filter((c): c is Extract<LogChange, { kind: 'data' }> => c.kind === 'data');
  const descSectors = descriptorSectors(e.changes.length);
  const length = (descSectors + data.length) * LOG_SECTOR;
  const buf = Buffer.alloc(length);
  ENTRY_SIG.copy(buf, 0);
  buf.writeUInt32LE(length, 8);
  buf.writeUInt32LE(e.tail, 12);
  buf.writeBigUInt64LE(e.sequenceNumber, 16);
  buf.writeUInt32LE(e.changes.length, 24);
  e.logGuid.copy(buf, 32);
  buf.writeBigUInt64LE(BigInt(e.flushedFileOffset), 48);
  buf.writeBigUInt64LE(BigInt(e.lastFileOffset), 56);
  let sector = descSectors;
  e.changes.forEach((c, i) => {
    const d = buf.subarray(HEADER_SIZE + i * DESCRIPTOR_SIZE);
    d.writeBigUInt64LE(BigInt(c.fileOffset), 16);
    d.writeBigUInt64LE(e.sequenceNumber, 24);
    if (c.kind === 'zero') {
      ZERO_DESC_SIG.copy(d, 0);
      d.writeBigUInt64LE(BigInt(c.length), 8);
      return;
    }
    DATA_DESC_SIG.copy(d, 0);
    c.data.copy(d, 4, 4092, 4096);
    c.data.copy(d, 8, 0, 8);
    const s = buf.subarray(sector * LOG_SECTOR, (sector + 1) * LOG_SECTOR);
    sector++;
    DATA_SIG.copy(s, 0);
    s.writeUInt32LE(Number(e.sequenceNumber >> 32n), 4);
    c.data.copy(s, 8, 8, 4092);
    s.writeUInt32LE(Number(e.sequenceNumber & 0xffffffffn), 4092);
  });
  buf.writeUInt32LE(crc32cWithZeroedField(buf, 4), 4);
  return buf;
}

/** Writes `bytes` into a circular log image at `pos`, wrapping at its end; returns the pieces as (log offset, bytes). */
export function placeInLog(logLength: number, pos: number, bytes: Buffer): Array<[number, Buffer]> {
  if (pos + bytes.length <= logLength) return [[pos, bytes]];
  const first = logLength - pos;
  return [
    [pos, bytes.subarray(0, first)],
    [0, bytes.subarray(first)],
  ];
}
