/**
 * The snapshot table (qcow2.rst, "Snapshots"): `nb_snapshots` variable-length entries, each 8-byte aligned:
 * fixed 40 bytes, extra data, id string, name string.
 */
import { CorruptImageError } from '../../util/errors.js';

const FIXED = 40;
/** qemu's limits: QCOW_MAX_SNAPSHOTS and the table's total size (QCOW_MAX_SNAPSHOTS_SIZE). */
export const MAX_SNAPSHOTS = 65536;
export const MAX_TABLE_BYTES = 64 << 20;

/** One internal snapshot. */
export interface Snapshot {
  l1TableOffset: number;
  l1Size: number;
  id: string;
  name: string;
  /** Seconds since the epoch (with nanoseconds separate). */
  dateSec: number;
  dateNsec: number;
  vmClockNsec: number;
  vmStateSize: number;
  /** Virtual disk size at snapshot time (version 3 extra data), or null. */
  diskSize: number | null;
}

/** Parses `count` entries from `bytes` (the table as read, possibly cut short by the end of the file). */
export function parse(bytes: Buffer, count: number, subject: string): { snapshots: Snapshot[]; length: number } {
  const out: Snapshot[] = [];
  let at = 0;
  const need = (n: number, i: number) => {
    if (at + n > bytes.length) throw new CorruptImageError(`snapshot table entry ${i} runs past the end of the file (or qemu's ${MAX_TABLE_BYTES}-byte limit)`, subject);
  };
  for (let i = 0; i < count; i++) {
    need(FIXED, i);
    const l1TableOffset = Number(bytes.readBigUInt64BE(at));
    const l1Size = bytes.readUInt32BE(at + 8);
    const idLen = bytes.readUInt16BE(at + 12);
    const nameLen = bytes.readUInt16BE(at + 14);
    const dateSec = bytes.readUInt32BE(at + 16);
    const dateNsec = bytes.readUInt32BE(at + 20);
    const vmClockNsec = Number(bytes.readBigUInt64BE(at + 24));
    const vmStateSize = bytes.readUInt32BE(at + 32);
    const extraLen = bytes.readUInt32BE(at + 36);
    need(FIXED + extraLen + idLen + nameLen, i);
    const extra = bytes.subarray(at + FIXED, at + FIXED + extraLen);
    const diskSize = extraLen >= 16 ? Number(extra.readBigUInt64BE(8)) : null;
    const idAt = at + FIXED + extraLen;
    out.push({
      l1TableOffset,
      l1Size,
      id: bytes.toString('utf8', idAt, idAt + idLen),
      name: bytes.toString('utf8', idAt + idLen, idAt + idLen + nameLen),
      dateSec,
      dateNsec,
      vmClockNsec,
      vmStateSize: extraLen >= 8 ? Number(extra.readBigUInt64BE(0)) || vmStateSize : vmStateSize,
      diskSize,
    });
    at += FIXED + extraLen + idLen + nameLen;
    at += (8 - (at % 8)) % 8;
  }
  return { snapshots: out, length: at };
}
