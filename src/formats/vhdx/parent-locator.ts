/** The VHDX parent locator metadata item ([MS-VHDX] 2.6.2.6): UTF-16LE key/value pairs. */
import { CorruptImageError, UnsupportedError } from '../../util/errors.js';
import { formatGuidLE, parseGuidLE } from '../../util/guid.js';

/** The only locator type the spec defines, for VHDX parents. */
export const VHDX_LOCATOR_TYPE = 'b04aefb7-d19e-4a81-b789-25b8e9445913';
const HEADER_SIZE = 20;
const ENTRY_SIZE = 12;

/** Keys the spec defines, in the order a reader tries paths. */
export const PATH_KEYS = ['relative_path', 'volume_path', 'absolute_win32_path'] as const;

/** A parsed locator: its type and its entries in file order. */
export interface ParentLocator {
  type: string;
  entries: Array<[string, string]>;
}

/** Looks up a key (keys are case-sensitive in the spec). */
export function locatorValue(loc: ParentLocator, key: string): string | undefined {
  return loc.entries.find(([k]) => k === key)?.[1];
}

/** Parses the locator item; every offset and length is checked against the item's own size. */
export function parse(item: Buffer, subject?: string): ParentLocator {
  if (item.length < HEADER_SIZE) throw new CorruptImageError('parent locator is truncated', subject);
  const type = formatGuidLE(item.subarray(0, 16));
  if (type !== VHDX_LOCATOR_TYPE) throw new UnsupportedError(`unknown parent locator type ${type}`, subject);
  const count = item.readUInt16LE(18);
  if (HEADER_SIZE + count * ENTRY_SIZE > item.length) {
    throw new CorruptImageError(`parent locator claims ${count} entries but is only ${item.length} bytes`, subject);
  }
  const text = (off: number, len: number, what: string) => {
    if (len === 0 || off + len > item.length || off < HEADER_SIZE + count * ENTRY_SIZE || len % 2 !== 0) {
      throw new CorruptImageError(`parent locator ${what} at ${off}+${len} lies outside the locator`, subject);
    }
    return item.subarray(off, off + len).toString('utf16le');
  };
  const entries: Array<[string, string]> = [];
  for (let i = 0; i < count; i++) {
    const at = HEADER_SIZE + i * ENTRY_SIZE;
    const key = text(item.readUInt32LE(at), item.readUInt16LE(at + 8), 'key');
    const value = text(item.readUInt32LE(at + 4), item.readUInt16LE(at + 10), 'value');
    if (entries.some(([k]) => k === key)) throw new CorruptImageError(`parent locator repeats key ${key}`, subject);
    entries.push([key, value]);
  }
  return { type, entries };
}

/** Serializes a locator item: header, entry table, then the UTF-16LE strings. */
export function serialize(loc: ParentLocator): Buffer {
  const strings: Buffer[] = [];
  const table = Buffer.alloc(HEADER_SIZE + loc.entries.length * ENTRY_SIZE);
  parseGuidLE(loc.type).copy(table, 0);
  table.writeUInt16LE(loc.entries.length, 18);
  let off = table.length;
  loc.entries.forEach(([k, v], i) => {
    const kb = Buffer.from(k, 'utf16le');
    const vb = Buffer.from(v, 'utf16le');
    const at = HEADER_SIZE + i * ENTRY_SIZE;
    table.writeUInt32LE(off, at);
    table.writeUInt32LE(off + kb.length, at + 4);
    table.writeUInt16LE(kb.length, at + 8);
    table.writeUInt16LE(vb.length, at + 10);
    strings.push(kb, vb);
    off += kb.length + vb.length;
  });
  return Buffer.concat([table, ...strings]);
}
