/**
 * Parent locators of a differencing VHD: the 24-byte entries in the dynamic header, and the path data
 * they point at. W2ru (relative) and W2ku (absolute) hold UTF-16LE Windows paths; MacX holds a UTF-8
 * file URL (read only). Windows writes PlatformDataSpace in bytes although the spec says sectors.
 */
import type { Location } from '../../io/location.js';
import { CorruptImageError } from '../../util/errors.js';
import { readU64BE, writeU64BE } from '../../util/struct.js';

export const LOCATOR_ENTRY_SIZE = 24;
export const LOCATOR_COUNT = 8;
/** The longest Windows path (32767 UTF-16 units) in bytes; longer locator data is refused as corrupt. */
export const MAX_LOCATOR_DATA = 65536;

/** Platform codes this tool reads (others, such as the deprecated Wi2r/Wi2k, are ignored). */
export type KnownPlatform = 'W2ru' | 'W2ku' | 'MacX';

/** One parent locator entry. */
export interface LocatorEntry {
  /** Four characters; empty when the entry is unused (code 0). */
  platformCode: string;
  /** As stored: sectors per the spec, bytes as Windows writes it. */
  dataSpace: number;
  /** Bytes of path data. */
  dataLength: number;
  /** Absolute file offset of the path data. */
  dataOffset: number;
}

/** Parses one 24-byte entry. */
export function parseLocatorEntry(b: Buffer, subject: string): LocatorEntry {
  const code = b.readUInt32BE(0);
  return {
    platformCode: code === 0 ? '' : b.toString('latin1', 0, 4),
    dataSpace: b.readUInt32BE(4),
    dataLength: b.readUInt32BE(8),
    dataOffset: readU64BE(b, 16, 'parent locator data offset', subject),
  };
}

/** Serializes one entry into 24 bytes. */
export function serializeLocatorEntry(e: LocatorEntry): Buffer {
  const b = Buffer.alloc(LOCATOR_ENTRY_SIZE);
  if (e.platformCode) b.write(e.platformCode.padEnd(4, ' ').slice(0, 4), 0, 'latin1');
  b.writeUInt32BE(e.dataSpace >>> 0, 4);
  b.writeUInt32BE(e.dataLength >>> 0, 8);
  writeU64BE(b, e.dataOffset, 16);
  return b;
}

/** True for the entries whose data this tool decodes. */
export function isKnownPlatform(code: string): code is KnownPlatform {
  return code === 'W2ru' || code === 'W2ku' || code === 'MacX';
}

/** Bytes reserved for an entry's data: Windows stores bytes, the spec sectors; take whichever covers the data. */
export function reservedBytes(e: LocatorEntry): number {
  return e.dataSpace >= e.dataLength ? e.dataSpace : e.dataSpace * 512;
}

/** Checks an entry's data range against the file before anything is read. */
export function checkLocatorBounds(e: LocatorEntry, index: number, fileSize: number, subject: string): void {
  if (e.dataLength > MAX_LOCATOR_DATA || e.dataOffset + e.dataLength > fileSize) {
    throw new CorruptImageError(
      `parent locator ${index} (${e.platformCode}) data at ${e.dataOffset}+${e.dataLength} lies outside the file (${fileSize} bytes)`,
      subject,
    );
  }
}

/**
 * Decodes locator data into a path: UTF-16LE for Windows codes, a file URL's path for MacX. blktap (`tap\0`) and
 * vhd-tool (`caml`) write MacX as `file://./name` or `file://../dir/name`, a path relative to the child's folder:
 * that comes back relative (`./name`), not as the absolute `/name` a URL parser would make of it.
 */
export function decodeLocatorData(code: KnownPlatform, data: Buffer): string {
  if (code === 'MacX') {
    const text = data.toString('utf8').replace(/\0+$/, '');
    const m = /^file:\/\/([^/]*)(\/.*)$/i.exec(text);
    const path = !m ? text : m[1] === '.' || m[1] === '..' ? m[1] + m[2] : m[2];
    try {
      return decodeURIComponent(path);
    } catch {
      return path;
    }
  }
  return data.toString('utf16le').replace(/\0.*$/s, '');
}

/** Encodes a Windows path as locator data (UTF-16LE, no terminator, as Windows writes it). */
export function encodeWindowsPath(path: string): Buffer {
  return Buffer.from(path, 'utf16le');
}

/** The last component of a Windows or POSIX path. */
export function windowsBasename(p: string): string {
  const parts = p.split(/[\\/]/).filter((x) => x !== '');
  return parts.length ? parts[parts.length - 1] : '';
}

/** A path found in the child, with where it came from. */
export interface ParentHint {
  source: KnownPlatform | 'ParentUnicodeName';
  path: string;
}

/**
 * Where to look for the parent, in order: W2ru and relative MacX resolved from the child's folder, W2ku and
 * absolute MacX as an absolute path (when it is one in the child's store), then each one's basename next to the
 * child, then the Parent Unicode Name next to the child.
 */
export function parentCandidates(child: Location, hints: ParentHint[]): Location[] {
  const { store } = child;
  const dir = store.paths.dirname(child.path);
  const out: Location[] = [];
  const add = (path: string) => {
    if (path && !out.some((l) => l.path === path)) out.push({ store, path });
  };
  const isRelative = (h: ParentHint) => h.source === 'W2ru' || (h.source === 'MacX' && /^\.\.?\//.test(h.path));
  const ordered = [
    ...hints.filter(isRelative),
    ...hints.filter((h) => h.source === 'W2ku' || (h.source === 'MacX' && !isRelative(h))),
    ...hints.filter((h) => h.source === 'ParentUnicodeName'),
  ];
  for (const h of ordered) {
    if (!h.path) continue;
    if (isRelative(h)) {
      add(store.paths.resolve(dir, h.path.replace(/\\/g, '/')));
      if (h.source === 'W2ru') continue;
    }
    // `\dir\file` (what we write for a POSIX parent) and `/dir/file` are absolute in the child's store;
    // drive letters and UNC paths are not, so only their basename is tried next to the child.
    const posixish = h.path.replace(/\\/g, '/');
    if (!/^[A-Za-z]:/.test(h.path) && !h.path.startsWith('\\\\') && store.paths.isAbsolute(posixish)) add(posixish);
    const base = windowsBasename(h.path);
    if (base && base !== '.' && base !== '..') add(store.paths.join(dir, base));
  }
  return out;
}

/**
 * The W2ru path of `parent` as seen from the folder of `childFinal`: `.\name` or `..\dir\name`;
 * null when they are in different stores.
 */
export function windowsRelativePath(childFinal: Location, parent: Location): string | null {
  if (childFinal.store !== parent.store) return null;
  const { paths } = childFinal.store;
  const rel = paths.relative(paths.dirname(childFinal.path), parent.path).replace(/\//g, '\\');
  return rel.startsWith('..') ? rel : `.\\${rel}`;
}

/** The W2ku path of `parent`: its store's Windows path (UNC on a share), a UNC or drive path as displayed, else its path with backslashes. */
export function windowsAbsolutePath(parent: Location): string {
  const windows = parent.store.windowsPath?.(parent.path);
  if (windows) return windows;
  const shown = parent.store.display(parent.path);
  if (shown.startsWith('\\\\') || /^[A-Za-z]:[\\/]/.test(shown)) return shown.replace(/\//g, '\\');
  return parent.path.replace(/\//g, '\\');
}
