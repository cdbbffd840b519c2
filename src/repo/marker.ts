/** The object that makes a folder or an object-store prefix a repository (docs/repository.md, "Layout"). */

/** Its name, in the folder or under the prefix. */
export const REPOSITORY_MARKER = 'vhdsync-repository.json';
const MARKER_FORMAT = 'vhdsync-repository';

/** A new marker's bytes. */
export function markerBytes(): Buffer {
  return Buffer.from(JSON.stringify({ format: MARKER_FORMAT, version: 1, created: new Date().toISOString() }) + '\n');
}

/** True when `bytes` are a repository marker. */
export function isMarker(bytes: Buffer): boolean {
  try {
    return (JSON.parse(bytes.toString('utf8')) as { format?: unknown }).format === MARKER_FORMAT;
  } catch {
    return false;
  }
}
