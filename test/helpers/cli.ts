import { spawn, spawnSync } from 'node:child_process';
import * as path from 'node:path';

/** The CLI entry point as users run it. */
export const BIN = path.resolve(process.cwd(), 'bin/vhdsync.js');

/** Result of one CLI run. */
export interface CliResult {
  status: number;
  stdout: string;
  stderr: string;
}

/** Runs `vhdsync ARGS` synchronously and returns exit status and output. */
export function cli(args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): CliResult {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', cwd: opts.cwd, env: { ...process.env, ...opts.env }, maxBuffer: 1 << 28 });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** Runs `vhdsync ARGS` without blocking the event loop (for tests that also run servers in-process). */
export function cliAsync(args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Promise<CliResult> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, ...args], { cwd: opts.cwd, env: { ...process.env, ...opts.env } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('close', (code) => resolve({ status: code ?? -1, stdout, stderr }));
  });
}

/** Asserts the shape every deliberate failure must have: one line on stderr, no stack trace. */
export function expectOneLineError(r: CliResult, status: number, pattern: RegExp): void {
  const lines = r.stderr.trim().split('\n');
  if (r.status !== status || lines.length !== 1 || !/^vhdsync: /.test(lines[0]) || !pattern.test(lines[0]) || /\bat .*:\d+:\d+\)?$/m.test(r.stderr)) {
    throw new Error(`expected exit ${status} and one line matching ${pattern}, got exit ${r.status}:\n${r.stderr}`);
  }
}
