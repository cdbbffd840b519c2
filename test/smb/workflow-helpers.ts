/** Helpers for the end-to-end SMB workflow tests: CLI runs that never show the password, and qemu-made images. */
import { readFileSync, readdirSync } from 'node:fs';
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import { BIN, type CliResult } from '../helpers/cli.js';
import { HAVE_QEMU, haveTool, PYTHON_VHDI, requireTool } from '../helpers/tools.js';
import { MiB, privateCli, qemuImage, qemuRaw, type Change } from '../cli/sync-helpers.js';
import { haveSamba, PASSWORD, USER, type SambaServer } from './samba-server.js';

export { MiB };

/** Samba, qemu and libvhdi (vhdiinfo, pyvhdi) are all here (in CI a missing one fails loudly). */
export function haveWorkflowTools(): boolean {
  return haveSamba() && requireTool(HAVE_QEMU, 'qemu-img and qemu-io') && requireTool(haveTool('vhdiinfo') && PYTHON_VHDI !== null, 'vhdiinfo and pyvhdi');
}

/** `smb://USER@127.0.0.1:PORT/SHARE` for a running server. */
export function smbBase(server: SambaServer, share = 'share'): string {
  return `smb://${USER}@127.0.0.1:${server.port}/${share}`;
}

/** Secrets no run may print: the real password and any other one a test passes. */
const secrets = new Set<string>([PASSWORD]);

/** Registers another password a test uses (a wrong one, say) so it is checked for too. */
export function secret(value: string): string {
  secrets.add(value);
  return value;
}

/** Throws if any known password appears in a run's output. */
export function expectNoSecrets(r: CliResult, args: string[]): void {
  for (const s of secrets) {
    if (r.stdout.includes(s) || r.stderr.includes(s)) throw new Error(`password printed by vhdsync ${args.join(' ')}:\n${r.stdout}\n${r.stderr}`);
  }
}

let bin = BIN;

/** Runs this file's CLI calls from a private copy of the build in `dir` (the shared dist/ may be rebuilt meanwhile). */
export function usePrivateCli(dir: string): void {
  bin = privateCli(dir);
}

/**
 * Starts `vhdsync ARGS` without blocking the event loop, with only the SMB settings given in `env` (the test
 * process's own VHDSYNC_SMB_* are cleared); the pid lets a test stop and continue it.
 */
export function startCli(args: string[], env: NodeJS.ProcessEnv = {}): { pid: number; done: Promise<CliResult> } {
  const clean: NodeJS.ProcessEnv = { VHDSYNC_SMB_PASSWORD: undefined, VHDSYNC_SMB_USER: undefined, VHDSYNC_SMB_CREDENTIALS: undefined, VHDSYNC_SMB_PORT: undefined };
  const child = spawn(process.execPath, [bin, ...args], { env: { ...process.env, ...clean, ...env } });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  const done = new Promise<CliResult>((resolve) => child.on('close', (code) => resolve({ status: code ?? -1, stdout, stderr })));
  return { pid: child.pid!, done };
}

/** Runs `vhdsync ARGS` (see startCli) and checks that no password shows up on stdout or stderr. */
export async function vs(args: string[], env: NodeJS.ProcessEnv = {}): Promise<CliResult> {
  const r = await startCli(args, env).done;
  expectNoSecrets(r, args);
  return r;
}

/** Like `vs`, and the run must succeed. */
export async function vsOk(args: string[], env: NodeJS.ProcessEnv = {}): Promise<CliResult> {
  const r = await vs(args, env);
  if (r.status !== 0) throw new Error(`vhdsync ${args.join(' ')} failed with ${r.status}:\n${r.stderr}`);
  return r;
}

/** The environment that authenticates through variables only. */
export const passwordEnv = (): NodeJS.ProcessEnv => ({ VHDSYNC_SMB_PASSWORD: PASSWORD });

/** Names in a directory that look like unfinished temp files. */
export function partials(dir: string): string[] {
  return readdirSync(dir).filter((n) => n.endsWith('.partial'));
}

/** The 64 MiB base image's content: data, a block that later becomes zeros, an odd-sized run. */
export const BASE_CHANGES: Change[] = [
  { offset: 0, length: 4096, fill: 0xa5 },
  { offset: 9 * MiB, length: 2 * MiB, fill: 0x3c },
  { offset: 40 * MiB, length: 3 * MiB, fill: 0x77 },
  { offset: 50 * MiB + 512, length: 1536, fill: 0x42 },
];

/** What turns the base into the source: new data, zeros over data, and the very last sector. */
export const SOURCE_CHANGES: Change[] = [
  { offset: 20 * MiB, length: MiB, fill: 0x11 },
  { offset: 9 * MiB, length: 64 * 1024, fill: 'zero' },
  { offset: 40 * MiB, length: 3 * MiB, fill: 'zero' },
  { offset: 64 * MiB - 512, length: 512, fill: 0xee },
];

/** A base and a changed source, as VHDX (qemu-made, 1 MiB blocks) and as raw (qemu's own conversion). */
export interface ImagePair {
  baseVhdx: string;
  baseRaw: string;
  srcVhdx: string;
  srcRaw: string;
}

/** Makes the base and source images in `dir` with qemu-img and qemu-io. */
export function makeImagePair(dir: string, size = 64 * MiB, base = BASE_CHANGES, changes = SOURCE_CHANGES): ImagePair {
  const p = (n: string) => path.join(dir, n);
  qemuImage(p('base.vhdx'), 'vhdx', size, base, 'subformat=dynamic,block_size=1M');
  qemuImage(p('src.vhdx'), 'vhdx', size, [...base, ...changes], 'subformat=dynamic,block_size=1M');
  qemuRaw(p('base.vhdx'), 'vhdx', p('base.raw'));
  qemuRaw(p('src.vhdx'), 'vhdx', p('src.raw'));
  return { baseVhdx: p('base.vhdx'), baseRaw: p('base.raw'), srcVhdx: p('src.vhdx'), srcRaw: p('src.raw') };
}

/** How many `blockSize` blocks differ between two raw files of the same size (the oracle for check/copy counts). */
export function changedBlocks(a: string, b: string, blockSize = 2 * MiB): number {
  const x = readFileSync(a);
  const y = readFileSync(b);
  let n = 0;
  for (let off = 0; off < x.length; off += blockSize) {
    if (!x.subarray(off, off + blockSize).equals(y.subarray(off, off + blockSize))) n++;
  }
  return n;
}
