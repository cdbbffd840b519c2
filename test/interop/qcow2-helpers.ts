/** Helpers for the QCOW2 tests: qemu as the oracle for content (convert -O raw) and allocation (map). */
import { readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import type { Disk, Extent } from '../../src/formats/disk.js';
import { run, runStatus } from '../helpers/tools.js';

/** A deterministic pseudo-random generator, so a failure is reproducible. */
export function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

/** `count` random qemu-io writes (pattern or zero, unaligned offsets and lengths) inside [0, size). */
export function randomWrites(size: number, seed: number, count: number, maxLen: number, zeroShare = 0.2): string[] {
  const r = rng(seed);
  const cmds: string[] = [];
  for (let i = 0; i < count; i++) {
    const len = 1 + Math.floor(r() * maxLen);
    const off = Math.floor(r() * (size - len));
    cmds.push('-c', r() < zeroShare ? `write -q -z ${off} ${len}` : `write -q -P ${1 + Math.floor(r() * 254)} ${off} ${len}`);
  }
  return cmds;
}

/** qemu's view of an image's content, run from `cwd` (qemu resolves relative data file names against it). */
export function qemuRaw(img: string, cwd = path.dirname(img)): Buffer {
  const out = `${img}.qemu.raw`;
  run('sh', ['-c', `cd "$1" && qemu-img convert -O raw "$2" "$3"`, 'sh', cwd, img, out]);
  return readFileSync(out);
}

/**
 * Depths of layers that are not QCOW2, where only the depth can be compared: qemu sees holes in a raw file as zeros
 * (our raw driver cannot see holes), reports unallocated VHD blocks as zeros, and has no block status for VHDX at all
 * (all data). At these depths every state counts as data on both sides.
 */
export type ForeignLayers = number[];

/** Extents with the states of foreign layers folded into `data`, neighbours merged. */
export function normalize(list: Extent[], foreign: ForeignLayers = []): Extent[] {
  return merge(list.map((e) => (foreign.includes(e.depth) ? { ...e, state: 'data' } : e)));
}

/** qemu-img map --output=json as extents, normalized for foreign layers. */
export function qemuMap(img: string, foreign: ForeignLayers = [], cwd = path.dirname(img)): Extent[] {
  const text = run('sh', ['-c', `cd "$1" && qemu-img map --output=json "$2"`, 'sh', cwd, img]).toString();
  const list = JSON.parse(text) as Array<{ start: number; length: number; depth: number; present: boolean; zero: boolean; data: boolean }>;
  return normalize(
    list.map((e) => ({ offset: e.start, length: e.length, depth: e.depth, state: !e.present ? 'unallocated' : e.data ? 'data' : 'zero' })),
    foreign,
  );
}

/** Extents with touching neighbours of one state and depth merged. */
export function merge(list: Extent[]): Extent[] {
  const out: Extent[] = [];
  for (const e of list) {
    const last = out[out.length - 1];
    if (last && last.state === e.state && last.depth === e.depth && last.offset + last.length === e.offset) last.length += e.length;
    else out.push({ ...e });
  }
  return out;
}

/** Our status of the whole disk, normalized like qemuMap's. */
export async function ourMap(disk: Disk, foreign: ForeignLayers = []): Promise<Extent[]> {
  return normalize(await disk.status(0, disk.virtualSize), foreign);
}

/** Reads a disk in pieces of odd sizes (so pieces start and end inside clusters and subclusters). */
export async function readInPieces(disk: Disk, piece: number): Promise<Buffer> {
  const out = Buffer.alloc(disk.virtualSize);
  for (let off = 0; off < disk.virtualSize; off += piece) {
    const n = Math.min(piece, disk.virtualSize - off);
    await disk.read(off, n, out.subarray(off, off + n));
  }
  return out;
}

/** Deterministic pseudo-random bytes. */
export function fill(len: number, seed: number): Buffer {
  const r = rng(seed);
  const b = Buffer.alloc(len);
  for (let i = 0; i + 4 <= len; i += 4) b.writeUInt32LE((r() * 2 ** 32) >>> 0, i);
  return b;
}

/** Applies random writes and zero writes (some whole clusters, some unaligned) to a disk and to the model. */
export async function randomDiskWrites(disk: Disk, model: Buffer, seed: number, count: number, maxLen: number): Promise<void> {
  const r = rng(seed);
  const cs = disk.blockSize;
  for (let i = 0; i < count; i++) {
    const aligned = r() < 0.3;
    let len = 1 + Math.floor(r() * maxLen);
    let off = Math.floor(r() * (model.length - len));
    if (aligned) {
      off = Math.floor(off / cs) * cs;
      len = Math.min(model.length - off, Math.max(cs, Math.floor(len / cs) * cs));
    }
    if (r() < 0.25) {
      await disk.writeZeroes(off, len);
      model.fill(0, off, off + len);
    } else {
      const data = fill(len, seed * 1000 + i);
      await disk.write(off, data);
      data.copy(model, off);
    }
  }
}

/** qemu-img check: exit 0 and no leaks; qemu-img compare against the model: identical (both run in the image's folder). */
export function checkWithQemu(img: string, model: Buffer): void {
  const c = runStatus('sh', ['-c', 'cd "$(dirname "$1")" && qemu-img check --output=json "$1"', 'sh', img]);
  const report = JSON.parse(c.stdout || '{}');
  expect({ status: c.status, stderr: c.stderr, leaks: report.leaks ?? 0, corruptions: report.corruptions ?? 0 }).toEqual({ status: 0, stderr: '', leaks: 0, corruptions: 0 });
  const raw = `${img}.model.raw`;
  writeFileSync(raw, model);
  const cmp = runStatus('sh', ['-c', `cd "$(dirname "$1")" && qemu-img compare -f qcow2 -F raw "$1" "$2"`, 'sh', img, raw]);
  expect(cmp.stdout + cmp.stderr).toMatch(/Images are identical/);
}
