/**
 * Where seeds come from: the real images in ../shared (unpacked in memory), images qemu-img makes at test time,
 * and images this tool writes itself (created in a MemoryStore, written to, and snapshotted mid-write).
 */
import { existsSync, readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { promisify } from 'node:util';
import { gunzip } from 'node:zlib';
import * as path from 'node:path';
import { REAL_IMAGES } from '../helpers/fixtures.js';
import { makeTempDir } from '../helpers/tmp.js';
import { haveTool } from '../helpers/tools.js';
import { PagedImage } from './memory-store.js';

/** Why a group of seeds is missing, printed once per run. */
export const skipped: string[] = [];

/** A real image unpacked in memory (in a child process or zlib's thread pool), or null when the fixtures are absent. */
export async function realImage(name: string): Promise<PagedImage | null> {
  // VHDSYNC_REAL_IMAGES points a worktree that is not next to shared/ at the fixtures.
  const file = path.join(process.env.VHDSYNC_REAL_IMAGES ?? REAL_IMAGES, name);
  if (!existsSync(file)) {
    if (!skipped.some((s) => s.startsWith('real images'))) skipped.push(`real images: ${path.dirname(file)} not found (they live in the workplace's shared/ folder; VHDSYNC_REAL_IMAGES overrides)`);
    return null;
  }
  if (name.endsWith('.gz')) return PagedImage.from(await promisify(gunzip)(await readFile(file)));
  const child = spawn('bunzip2', ['-c', file], { stdio: ['ignore', 'pipe', 'inherit'] });
  const chunks: Buffer[] = [];
  child.stdout.on('data', (c: Buffer) => chunks.push(c));
  const [code] = (await once(child, 'close')) as [number];
  if (code !== 0) throw new Error(`bunzip2 ${name} failed (exit ${code})`);
  return PagedImage.from(Buffer.concat(chunks));
}

/**
 * Runs qemu-img/qemu-io commands in a temp dir (`$D` is replaced by it) and returns the named files, or null when
 * qemu is not installed.
 */
export function qemuImages(commands: string[][], files: string[]): Map<string, PagedImage> | null {
  if (!haveTool('qemu-img') || !haveTool('qemu-io')) {
    if (!skipped.some((s) => s.startsWith('qemu'))) skipped.push('qemu-img seeds: qemu-img/qemu-io not installed');
    return null;
  }
  const { dir, cleanup } = makeTempDir('vhdsync-fuzz-qemu-');
  try {
    for (const [cmd, ...args] of commands) {
      const r = spawnSync(cmd, args.map((a) => a.replace(/\$D/g, dir)), { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${r.stderr}`);
    }
    return new Map(files.map((f) => [f, PagedImage.from(readFileSync(path.join(dir, f)))]));
  } finally {
    cleanup();
  }
}

/** Deterministic filler bytes for seed content. */
export { pattern as filler } from '../unit/vhd/vhd-test-utils.js';
