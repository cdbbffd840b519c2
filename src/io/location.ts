import type { ByteStore, OpenMode, RandomAccessFile } from './store.js';
import { localStore } from './local.js';
import { UsageError } from '../util/errors.js';

/** A file somewhere: a store and a path inside it. */
export interface Location {
  readonly store: ByteStore;
  readonly path: string;
}

/** A parser for one scheme of location strings (for example `smb://` or `\\host\share`). */
export interface LocationScheme {
  /** True when this scheme owns the string. */
  matches(text: string): boolean;
  parse(text: string): Location | Promise<Location>;
}

const schemes: LocationScheme[] = [];

/** Registers a scheme; local paths are the fallback for everything no scheme claims. */
export function registerScheme(scheme: LocationScheme): void {
  schemes.push(scheme);
}

/** Turns a user's location string into a store and path. */
export async function parseLocation(text: string): Promise<Location> {
  if (!text) throw new UsageError('empty path');
  for (const s of schemes) if (s.matches(text)) return s.parse(text);
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(text)) {
    throw new UsageError(`unsupported location scheme in '${text}'`);
  }
  return { store: localStore, path: localStore.paths.resolve(process.cwd(), text) };
}

/** A location for a path next to (or relative to) another location, in the same store. */
export function sibling(loc: Location, name: string): Location {
  return { store: loc.store, path: loc.store.paths.join(loc.store.paths.dirname(loc.path), name) };
}

/** A location for `path` inside `loc`'s store. */
export function withPath(loc: Location, path: string): Location {
  return { store: loc.store, path };
}

/** Opens a location. */
export function openLocation(loc: Location, mode: OpenMode): Promise<RandomAccessFile> {
  return loc.store.open(loc.path, mode);
}

/** The location as the user would write it. */
export function displayLocation(loc: Location): string {
  return loc.store.display(loc.path);
}
