/** Helpers shared by the copy/merge end-to-end and crash tests. */
import { copyFileSync, cpSync, existsSync, mkdirSync, statSync, symlinkSync } from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import '../../src/formats/index.js';
import { createDisk, openDisk } from '../../src/formats/index.js';
import type { DiskFormat } from '../../src/formats/disk.js';
import { run } from '../helpers/tools.js';
import { BIN } from '../helpers/cli.js';

const MiB = 1 << 20;
export { MiB };

/** One change: data with a fill byte, or zeros. */
export interface Change {
  offset: number;
  length: number;
  fill: number | 'zero';
}

/** Makes an image with qemu-img and fills it with qemu-io (an implementation nobody here wrote). */
export function qemuImage(path: string, format: 'vpc' | 'vhdx' | 'raw', size: number, changes: Change[], opts = ''): void {
  run('qemu-img', ['create', '-q', '-f', format, ...(opts ? ['-o', opts] : []), path, String(size)]);
  qemuWrite(path, format, changes);
}

/** Applies changes to an existing image with qemu-io. */
export function qemuWrite(path: string, format: 'vpc' | 'vhdx' | 'raw' | 'qcow2', changes: Change[]): void {
  if (!changes.length) return;
  const cmds = changes.flatMap((c) => ['-c', c.fill === 'zero' ? `write -q -z ${c.offset} ${c.length}` : `write -q -P ${c.fill} ${c.offset} ${c.length}`]);
  run('qemu-io', ['-f', format, ...cmds, path]);
}

/** Makes a differencing image of `parent` with our driver and applies changes. */
export async function ourDiff(parent: string, child: string, format: DiskFormat, changes: Change[]): Promise<void> {
  const p = await openDisk(parent);
  const d = await createDisk(child, { format, type: 'differencing', parent: p });
  for (const c of changes) {
    if (c.fill === 'zero') await d.writeZeroes(c.offset, c.length);
    else await d.write(c.offset, Buffer.alloc(c.length, c.fill));
  }
  await d.close();
}

/** The image's virtual content as qemu sees it, converted to raw at `out`. */
export function qemuRaw(image: string, format: 'vpc' | 'vhdx' | 'raw', out: string): void {
  run('qemu-img', ['convert', '-f', format, '-O', 'raw', image, out]);
}

/** True when qemu-img compare says the two are identical. */
export function qemuSame(a: string, aFormat: string, b: string, bFormat: string): { same: boolean; output: string } {
  const r = spawnSync('qemu-img', ['compare', '-f', aFormat, '-F', bFormat, a, b], { encoding: 'utf8' });
  return { same: r.status === 0, output: r.stdout + r.stderr };
}

/** Disk usage of a file in bytes (what `du` reports: allocated blocks, holes excluded). */
export function duBytes(path: string): number {
  return Number(run('du', ['-B1', path]).toString().split('\t')[0]);
}

/** Copies a file keeping holes. */
export function cpSparse(from: string, to: string): void {
  const r = spawnSync('cp', ['--sparse=always', '--preserve=timestamps', from, to]);
  if (r.status !== 0) copyFileSync(from, to);
}

/**
 * A private copy of the built CLI (bin/ + dist/, node_modules linked) in `dir`, for long suites: on a machine
 * shared with other runs, `dist/` may be rebuilt under a test that starts the CLI hundreds of times.
 */
export function privateCli(dir: string): string {
  const root = path.dirname(path.dirname(BIN));
  const out = path.join(dir, 'cli');
  mkdirSync(out, { recursive: true });
  for (const part of ['bin', 'dist', 'package.json']) cpSync(path.join(root, part), path.join(out, part), { recursive: true });
  symlinkSync(path.join(root, 'node_modules'), path.join(out, 'node_modules'));
  return path.join(out, 'bin', path.basename(BIN));
}

/** Runs the CLI at `bin` (default: the repository's) and returns exit status and output. */
export function cliAt(bin: string, args: string[]): { status: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', maxBuffer: 1 << 28 });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** Runs the CLI with the kill hook armed and returns its exit status, signal and reported mutation count. */
export function cliWithHook(args: string[], budget: number, bin = BIN): { status: number | null; signal: string | null; mutations: number | null; stderr: string } {
  const r = spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', env: { ...process.env, VHDSYNC_TEST_KILL_AFTER_WRITES: String(budget) } });
  const m = /vhdsync-test-hook: (\d+) mutations/.exec(r.stderr);
  return { status: r.status, signal: r.signal, mutations: m ? Number(m[1]) : null, stderr: r.stderr };
}

/** Size of a file, or -1 when it does not exist. */
export function sizeOf(path: string): number {
  return existsSync(path) ? statSync(path).size : -1;
}

/** Kill points spread over [0, total): always the first and the last. */
export function spread(total: number, n: number): number[] {
  if (total <= n) return Array.from({ length: total }, (_, i) => i);
  return [...new Set(Array.from({ length: n }, (_, i) => Math.round((i * (total - 1)) / (n - 1))))];
}
