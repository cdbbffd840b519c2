/** Helpers of the backup repository tests: content digests as other tools see them, and in-process restores. */
import { createHash } from 'node:crypto';
import { closeSync, openSync, readFileSync, readdirSync, rmSync, truncateSync, writeSync } from 'node:fs';
import * as path from 'node:path';
import '../../src/formats/index.js';
import '../../src/io/schemes.js';
import { openRepository, restorePoint, listRepository, type ListedDisk } from '../../src/repo/index.js';
import { parseLocation } from '../../src/io/location.js';
import { run } from '../helpers/tools.js';

/** SHA-256 of a file's bytes. */
export function sha256File(file: string): string {
  return createHash('sha256').update(readFileSync(file)).digest('hex');
}

/** SHA-256 of an image's virtual content as qemu-img reads it (converted to raw beside it, then deleted). */
export function contentSha(image: string, format: string, scratch: string): string {
  const out = path.join(scratch, `.content-${process.pid}-${Math.random().toString(36).slice(2)}.raw`);
  try {
    run('qemu-img', ['convert', '-f', format, '-O', 'raw', image, out]);
    return sha256File(out);
  } finally {
    rmSync(out, { force: true });
  }
}

/** The disks of a repository as `list` reports them (in-process). */
export async function listed(repo: string): Promise<ListedDisk[]> {
  return (await listRepository(await openRepository(repo))).disks;
}

/** Restores a point to a raw file in `scratch` in-process and returns the SHA-256 of its bytes. */
export async function restoredSha(repo: string, disk: string, at: string, scratch: string): Promise<string> {
  const out = path.join(scratch, `.restored-${process.pid}-${Math.random().toString(36).slice(2)}.raw`);
  try {
    await restorePoint(await openRepository(repo), disk, await parseLocation(out), { at, format: 'raw' });
    return sha256File(out);
  } finally {
    rmSync(out, { force: true });
  }
}

/** The files of a disk folder that its manifest does not account for (leftovers of killed runs, locks). */
export function strays(diskDir: string): string[] {
  const m = JSON.parse(readFileSync(path.join(diskDir, 'manifest.json'), 'utf8')) as { points: Array<{ image: string }> };
  const known = new Set(['manifest.json', ...m.points.flatMap((p) => [p.image, p.image + '.blocklist.bin'])]);
  return readdirSync(diskDir).filter((n) => !known.has(n)).sort();
}

/** Bytes a folder's files occupy on disk (du). */
export function duTree(dir: string): number {
  return Number(run('du', ['-s', '-B1', dir]).toString().split('\t')[0]);
}

/** Writes `length` bytes of `fill` at `offset` of a raw file, for each [offset, length, fill] (a guest's writes). */
export function scribble(file: string, writes: Array<[number, number, number]>): void {
  const fd = openSync(file, 'r+');
  try {
    for (const [offset, length, fill] of writes) writeSync(fd, Buffer.alloc(length, fill), 0, length, offset);
  } finally {
    closeSync(fd);
  }
}

/** A raw disk of `size` bytes at `file` (created sparse if missing), with `writes` applied; returns `file`. */
export function rawDisk(file: string, size: number, writes: Array<[number, number, number]> = []): string {
  closeSync(openSync(file, 'a'));
  truncateSync(file, size);
  scribble(file, writes);
  return file;
}
