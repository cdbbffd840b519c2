/** Helpers of the object repository tests: restores in-process, and what a bucket holds that no manifest references. */
import { createHash } from 'node:crypto';
import { rmSync } from 'node:fs';
import * as path from 'node:path';
import '../../src/formats/index.js';
import { parseLocation } from '../../src/io/location.js';
import { restorePoint, type RepoBackend } from '../../src/repo/index.js';
import { parseManifest } from '../../src/repo/manifest.js';
import { parsePointMap } from '../../src/repo/object/point-map.js';
import { sha256File } from './repo-helpers.js';

/** Restores a point to a raw file in `scratch` and returns the SHA-256 of its bytes. */
export async function restoredObjectSha(repo: RepoBackend, disk: string, at: string, scratch: string): Promise<string> {
  const out = path.join(scratch, `.restored-${process.pid}-${Math.random().toString(36).slice(2)}.raw`);
  try {
    await restorePoint(repo, disk, await parseLocation(out), { at, format: 'raw' });
    return sha256File(out);
  } finally {
    rmSync(out, { force: true });
  }
}

/**
 * A repository's keys (relative to its prefix, as `read` fetches them) against what its manifests reference, worked
 * out from the layout in docs/repository.md (only the manifest and map parsers are ours): the marker, each disk's
 * newest manifest and lease object, and per listed point its map, its list and the blocks the map names.
 * `unreferenced`: keys nothing accounts for; `missing`: referenced keys that are not there.
 */
export async function audit(keys: string[], read: (key: string) => Promise<Buffer | null>): Promise<{ unreferenced: string[]; missing: string[] }> {
  const wanted = new Set<string>(['vhdsync-repository.json']);
  const newest = (prefix: string) =>
    keys
      .filter((k) => k.startsWith(prefix) && /^\d{12}\.json$/.test(k.slice(prefix.length)))
      .sort()
      .pop();
  const disks = new Set(keys.filter((k) => k.startsWith('manifests/')).map((k) => k.split('/')[1]));
  for (const disk of disks) {
    const mk = newest(`manifests/${disk}/`)!;
    wanted.add(mk);
    const lease = newest(`leases/${disk}/`);
    if (lease) wanted.add(lease);
    const m = parseManifest((await read(mk))!);
    for (const p of m.points) {
      const mapKey = `disks/${disk}/${p.image}`;
      wanted.add(mapKey).add(`disks/${disk}/${p.id}.list`);
      const bytes = await read(mapKey);
      if (!bytes) continue;
      const map = parsePointMap(bytes);
      if (typeof map === 'string') throw new Error(`${mapKey}: ${map}`);
      for (let i = 0; i < map.entries.length; i += 32) {
        const e = map.entries.subarray(i, i + 32);
        if (e.some((b) => b !== 0)) wanted.add(`disks/${disk}/blocks/${e.toString('hex')}`);
      }
    }
  }
  const present = new Set(keys);
  return { unreferenced: keys.filter((k) => !wanted.has(k)).sort(), missing: [...wanted].filter((k) => !present.has(k)).sort() };
}

/** The keys nothing accounts for (see audit). */
export async function unreferenced(keys: string[], read: (key: string) => Promise<Buffer | null>): Promise<string[]> {
  return (await audit(keys, read)).unreferenced;
}

/** SHA-256 of bytes, hex. */
export function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}
