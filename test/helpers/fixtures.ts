import { existsSync, createReadStream, createWriteStream } from 'node:fs';
import { createHash } from 'node:crypto';
import { createGunzip } from 'node:zlib';
import { spawnSync } from 'node:child_process';
import { pipeline } from 'node:stream/promises';
import * as path from 'node:path';

/** Where the shared real-image fixtures live (outside this repository, never copied into it). */
export const REAL_IMAGES = path.resolve(process.cwd(), '../shared/fixtures/real-images');

/** True when the real-image fixtures are present; prints why a suite is skipped when not. */
export function haveRealImages(): boolean {
  if (existsSync(REAL_IMAGES)) return true;
  if (process.env.CI) throw new Error(`real-image fixtures missing at ${REAL_IMAGES}`);
  // eslint-disable-next-line no-console
  console.warn(`skipping real-image tests: ${REAL_IMAGES} not found (they live in the workplace's shared/ folder)`);
  return false;
}

/** Unpacks a `.gz` or `.bz2` fixture into `dir` and returns the unpacked path. */
export async function unpackFixture(name: string, dir: string): Promise<string> {
  const src = path.join(REAL_IMAGES, name);
  const out = path.join(dir, name.replace(/\.(gz|bz2)$/, ''));
  if (existsSync(out)) return out;
  if (name.endsWith('.gz')) {
    await pipeline(createReadStream(src), createGunzip(), createWriteStream(out));
  } else if (name.endsWith('.bz2')) {
    const r = spawnSync('sh', ['-c', `bunzip2 -c "$1" | cp --sparse=always /dev/stdin "$2"`, 'sh', src, out]);
    if (r.status !== 0) throw new Error(`bunzip2 ${name} failed: ${r.stderr}`);
  } else {
    throw new Error(`unknown fixture packing: ${name}`);
  }
  return out;
}

/** SHA-256 of a buffer, hex. */
export function sha256(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}
