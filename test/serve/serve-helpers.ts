/** Shared pieces of the `serve` tests: an in-process server on a temp folder, clients run without blocking, oracles. */
import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { localStore } from '../../src/io/local.js';
import { startServer, type LogEntry, type RunningServer, type ServeOptions } from '../../src/serve/server.js';
import '../../src/formats/index.js';

/** Result of a program run. */
export interface Ran {
  status: number;
  stdout: Buffer;
  stderr: string;
}

/** Runs a program without blocking the event loop (the server under test lives in this process). */
export function runAsync(cmd: string, args: string[], opts: { input?: Buffer | string; env?: NodeJS.ProcessEnv } = {}): Promise<Ran> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { env: { ...process.env, ...opts.env } });
    const out: Buffer[] = [];
    let err = '';
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d) => (err += d));
    child.on('close', (code) => resolve({ status: code ?? -1, stdout: Buffer.concat(out), stderr: err }));
    child.stdin.on('error', () => {});
    child.stdin.end(opts.input ?? '');
  });
}

/** Runs a program that must succeed; returns stdout. */
export async function must(cmd: string, args: string[], opts: { input?: Buffer | string } = {}): Promise<Buffer> {
  const r = await runAsync(cmd, args, opts);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr}`);
  return r.stdout;
}

/** execFile as a promise, for short tools. */
export function tool(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => execFile(cmd, args, { maxBuffer: 1 << 28 }, (e, out, err) => (e ? reject(new Error(`${cmd} ${args.join(' ')}: ${err || e.message}`)) : resolve(out))));
}

export function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/** The virtual content of an image as raw bytes, read by qemu-img (VHDs sized by current_size). */
export async function qemuRaw(image: string, dir: string): Promise<Buffer> {
  const out = path.join(dir, `.qraw-${path.basename(image)}-${process.hrtime.bigint()}`);
  const src = image.endsWith('.vhd') ? ['--image-opts', `driver=vpc,force_size_calc=current_size,file.filename=${image}`] : [image];
  await tool('qemu-img', ['convert', '-O', 'raw', ...src, out]);
  const b = fs.readFileSync(out);
  fs.unlinkSync(out);
  return b;
}

/** qemu-img compare of an image (format detected; VHDs sized by current_size) with raw bytes: 'identical' or qemu's words. */
export async function sameAsRaw(image: string, raw: string): Promise<string> {
  const args = image.endsWith('.vhd') ? ['--image-opts', `driver=vpc,force_size_calc=current_size,file.filename=${image}`, `driver=raw,file.filename=${raw}`] : ['-F', 'raw', image, raw];
  const r = await runAsync('qemu-img', ['compare', ...args]);
  return r.status === 0 ? 'identical' : r.stdout.toString() + r.stderr;
}

/** A new empty image made by qemu-img (`fmt`: qemu's name; a VHD dynamic with current_size exact), replacing any. */
export async function freshDisk(file: string, fmt: string, size: number): Promise<void> {
  if (fs.existsSync(file)) fs.unlinkSync(file);
  await tool('qemu-img', ['create', '-q', '-f', fmt, ...(fmt === 'vpc' ? ['-o', 'subformat=dynamic,force_size=on'] : []), file, String(size)]);
}

/** A server on `dir` in this process, with its log kept. */
export async function serveDir(dir: string, opts: Partial<ServeOptions> = {}): Promise<RunningServer & { log: LogEntry[] }> {
  const log: LogEntry[] = [];
  const s = await startServer({ root: { store: localStore, path: dir }, host: '127.0.0.1', port: 0, log: (e) => log.push(e), ...opts });
  return Object.assign(s, { log });
}

/** Sends raw bytes on a new connection and returns everything the server sent back until it closed. */
export function rawExchange(port: number, parts: (Buffer | string)[], opts: { waitFor200?: boolean } = {}): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const got: Buffer[] = [];
    const sock = net.connect(port, '127.0.0.1');
    let sent = false;
    const sendRest = () => {
      if (sent) return;
      sent = true;
      for (const p of parts.slice(1)) sock.write(p);
      sock.end();
    };
    sock.on('connect', () => {
      sock.write(parts[0]);
      if (!opts.waitFor200) sendRest();
    });
    sock.on('data', (d) => {
      got.push(d);
      if (opts.waitFor200 && /^HTTP\/1\.1 200/.test(Buffer.concat(got).toString('latin1'))) sendRest();
    });
    sock.on('error', reject);
    sock.on('close', () => resolve(Buffer.concat(got)));
  });
}

/** Names in a folder other than the given images: leftovers of imports, temp files, lock files. */
export function leftovers(dir: string, keep: string[]): string[] {
  return fs.readdirSync(dir).filter((n) => !keep.includes(n) && !n.endsWith('.uuid'));
}

/** XAPI chunked frames for the non-zero 64 KiB runs of `data`, ended by the empty frame. */
export function framesOf(data: Buffer): Buffer {
  const parts: Buffer[] = [];
  const G = 64 << 10;
  for (let at = 0; at < data.length; at += G) {
    const piece = data.subarray(at, Math.min(data.length, at + G));
    if (piece.every((b) => b === 0)) continue;
    const h = Buffer.alloc(12);
    h.writeBigUInt64LE(BigInt(at), 0);
    h.writeUInt32LE(piece.length, 8);
    parts.push(h, piece);
  }
  parts.push(Buffer.alloc(12));
  return Buffer.concat(parts);
}

/** `vhdsync serve` as its own process: its URL (from the first line it prints) and every line it printed. */
export interface ServeProcess {
  url: string;
  lines: string[];
  child: import('node:child_process').ChildProcess;
  /** SIGTERM, then waits for the exit. */
  stop(): Promise<void>;
  /** Resolves with the exit of the process. */
  exited: Promise<number | null>;
}

/** Starts `vhdsync serve ARGS` and waits until it listens. */
export function spawnServe(args: string[], env: NodeJS.ProcessEnv = {}): Promise<ServeProcess> {
  const BIN = path.resolve(process.cwd(), 'bin/vhdsync.js');
  const child = spawn(process.execPath, [BIN, 'serve', ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: string[] = [];
  let stderr = '';
  let partial = '';
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return new Promise((resolve, reject) => {
    child.stderr!.on('data', (d) => (stderr += d));
    child.stdout!.on('data', (d: Buffer) => {
      partial += d.toString();
      const parts = partial.split('\n');
      partial = parts.pop() ?? '';
      for (const l of parts) {
        lines.push(l);
        const m = /(https?:\/\/[\d.]+:\d+)/.exec(l);
        if (m && /listening|serving/.test(l)) {
          resolve({
            url: m[1],
            lines,
            child,
            exited,
            stop: async () => {
              if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
              await exited;
            },
          });
        }
      }
    });
    void exited.then((code) => reject(new Error(`serve exited (${code}) before listening: ${stderr}`)));
  });
}
