/**
 * File names a QCOW2 image stores (backing file, external data file): which ones we follow and where they lead.
 * Both resolve against the image's own directory (qemu resolves a relative data file name against its working
 * directory instead; docs/cli.md says so).
 */
import type { DiskFormat } from '../disk.js';
import { withPath, type Location } from '../../io/location.js';
import { UnsupportedError } from '../../util/errors.js';

/** qemu driver names a backing-format extension may hold, and the formats they are here. */
const BACKING_FORMATS: Record<string, DiskFormat> = { qcow2: 'qcow2', raw: 'raw', file: 'raw', vpc: 'vhd', vhdx: 'vhdx' };

/** The format named by a backing-format extension, or undefined (detect by content) when there is none. */
export function backingFormat(name: string | null, subject: string): DiskFormat | undefined {
  if (name === null) return undefined;
  const f = BACKING_FORMATS[name];
  if (!f) throw new UnsupportedError(`backing format '${name}' is not supported (qcow2, raw, vpc and vhdx are)`, subject);
  return f;
}

/**
 * The location a stored name leads to, next to `image` when relative. `json:` names and protocol names (a colon
 * before the first slash, as qemu's path_has_protocol decides) are refused: they describe block graphs, not files.
 */
export function resolveStoredName(image: Location, name: string, what: string, subject: string): Location {
  if (name === '') throw new UnsupportedError(`the ${what} name is empty`, subject);
  if (name.startsWith('json:')) throw new UnsupportedError(`the ${what} is a json: description ('${name.slice(0, 60)}'), which is not supported`, subject);
  const colon = name.indexOf(':');
  const slash = name.indexOf('/');
  if (colon >= 0 && (slash < 0 || colon < slash)) throw new UnsupportedError(`the ${what} '${name}' names a protocol, which is not supported (only files are)`, subject);
  const paths = image.store.paths;
  return withPath(image, paths.isAbsolute(name) ? name : paths.resolve(paths.dirname(image.path), name));
}
