/** Helpers for VHD tests: create images, patch structures with valid checksums. */
import * as fs from 'node:fs';
import { createDisk, openDisk, type CreateOptions, type Disk, type OpenOptions } from '../../../src/formats/index.js';
import { parseLocation } from '../../../src/io/location.js';
import { vhdChecksum } from '../../../src/formats/vhd/checksum.js';

/** Creates a VHD at `path`. */
export async function makeVhd(path: string, opts: Omit<CreateOptions, 'format'>): Promise<Disk> {
  return createDisk(await parseLocation(path), { format: 'vhd', ...opts });
}

/** Opens an image at `path`. */
export async function open(path: string, opts: OpenOptions = {}): Promise<Disk> {
  return openDisk(path, opts);
}

/** Edits the footer copies (`end`, `start` or both) and fixes their checksums. */
export function patchFooter(path: string, edit: (footer: Buffer) => void, where: 'end' | 'start' | 'both' = 'both'): void {
  const file = fs.readFileSync(path);
  const spots = [] as number[];
  if (where !== 'start') spots.push(file.length - 512);
  if (where !== 'end') spots.push(0);
  for (const at of spots) {
    const f = file.subarray(at, at + 512);
    edit(f);
    f.writeUInt32BE(vhdChecksum(f, 64), 64);
  }
  fs.writeFileSync(path, file);
}

/** Edits the dynamic header at 512 (where this tool and qemu put it) and fixes its checksum. */
export function patchHeader(path: string, edit: (header: Buffer) => void): void {
  const file = fs.readFileSync(path);
  const h = file.subarray(512, 1536);
  edit(h);
  h.writeUInt32BE(vhdChecksum(h, 36), 36);
  fs.writeFileSync(path, file);
}

/** Deterministic pseudo-random bytes. */
export function pattern(length: number, seed: number): Buffer {
  const b = Buffer.alloc(length);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
  }
  return b;
}
