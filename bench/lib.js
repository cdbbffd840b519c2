// Helpers shared by the bench/*.js scripts (not a benchmark itself: bench/run.js skips it). Plain ESM, no build.
import { execFileSync, spawnSync } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, statSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';

/** One mebibyte. */
export const MiB = 1 << 20;
/** One gibibyte. */
export const GiB = 1 << 30;
/** The size of the pieces the copy/merge benches rewrite at random places (64 KiB). */
export const PIECE = 64 << 10;
/** The CLI under test; VHDSYNC_BIN names a private build (the shared dist/ may be rebuilt by others mid-run). */
export const BIN = process.env.VHDSYNC_BIN ?? path.resolve('bin/vhdsync.js');
/**
 * The python3 interpreter itself, as the peers' plain programs run it: on PATH there may be a version manager's shim
 * instead (pyenv's is a bash script that forks several processes: 0.15-0.2 s per start here, 0.01-0.06 s for the
 * interpreter), which a peer measured through it would be charged for.
 */
export const PYTHON = (() => {
  try {
    return execFileSync('python3', ['-c', 'import sys; print(sys.executable)'], { encoding: 'utf8' }).trim() || 'python3';
  } catch {
    return 'python3';
  }
})();
/** Another build (e.g. main before a change) that benches supporting it run beside BIN, interleaved, in every row. */
export const BIN_BEFORE = process.env.VHDSYNC_BIN_BEFORE;
/** The builds a row runs: BIN as 'ours', and BIN_BEFORE as 'before' when set. */
export const BUILDS = [['ours', BIN], ...(BIN_BEFORE ? [['before', BIN_BEFORE]] : [])];

const args = process.argv.slice(2);
/** The value after option `name` on the command line, or `dflt` when the option is absent. */
export const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : dflt;
};
/** Whether the bare flag `name` is on the command line. */
export const flag = (name) => args.includes(name);

/** The scratch directory: --dir DIR if given, else `name` under the OS temp dir; created if missing. */
export function benchDir(name) {
  const dir = path.resolve(opt('--dir', path.join(tmpdir(), name)));
  mkdirSync(dir, { recursive: true });
  return dir;
}

/** The middle element of `xs` in sorted order (the upper one of the two for an even count). */
export const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
/** The 1, 5 and 15 minute load averages as printed in /proc/loadavg. */
export const load = () => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
/** Formats bytes per `seconds` as decimal GB/s with two decimals. */
export const gbps = (bytes, seconds) => `${(bytes / seconds / 1e9).toFixed(2)} GB/s`;
/** Prints the `# NAME benchmark` heading line (time, node version, runs, load) followed by a blank line. */
export const header = (name, runs) =>
  console.log(`# ${name} benchmark, ${new Date().toISOString()}, node ${process.version}, ${runs} runs, load average ${load()}\n`);

/** Runs a command to its end and returns the spawnSync result; a non-zero exit throws with its stderr (or stdout). */
export function run(cmd, argv, opts = {}) {
  const r = spawnSync(cmd, argv, { encoding: 'utf8', maxBuffer: 1 << 26, ...opts });
  if (r.status !== 0) throw new Error(`${cmd} ${argv.join(' ')} failed: ${r.stderr || r.stdout}`);
  return r;
}
/** Runs a command like run() and returns its stdout. */
export const sh = (cmd, argv, opts) => run(cmd, argv, opts).stdout;

/** Runs a command `runs` times, calling `before` (untimed) ahead of each; median/min/max wall seconds and last stdout. */
export function timedRuns(runs, cmd, argv, before) {
  const secs = [];
  let out = '';
  for (let i = 0; i < runs; i++) {
    before?.();
    const t = process.hrtime.bigint();
    out = sh(cmd, argv);
    secs.push(Number(process.hrtime.bigint() - t) / 1e9);
  }
  return { seconds: median(secs), min: Math.min(...secs), max: Math.max(...secs), out };
}

/**
 * Runs each contestant `runs` times, interleaved (round i runs contestant 0, 1, ... once each, so load changes hit all
 * alike); a contestant is { cmd, argv, before? }. Returns one timedRuns-style result per contestant, in order.
 */
export function interleavedRuns(runs, contestants) {
  const secs = contestants.map(() => []);
  const outs = contestants.map(() => '');
  for (let i = 0; i < runs; i++) {
    contestants.forEach((c, k) => {
      c.before?.();
      const t = process.hrtime.bigint();
      outs[k] = sh(c.cmd, c.argv);
      secs[k].push(Number(process.hrtime.bigint() - t) / 1e9);
    });
  }
  return secs.map((s, k) => ({ seconds: median(s), min: Math.min(...s), max: Math.max(...s), out: outs[k] }));
}

/** Writes `size` random bytes to `file` (random so nothing is skipped as zero) unless it already has that size. */
export function randomFile(file, size) {
  if (existsSync(file) && statSync(file).size === size) return;
  const fd = openSync(file, 'w');
  const buf = Buffer.allocUnsafe(64 * MiB);
  for (let off = 0; off < size; off += buf.length) writeSync(fd, randomFillSync(buf), 0, Math.min(buf.length, size - off), off);
  closeSync(fd);
}
/** `count` distinct random integers in [0, n), in the order drawn. */
export function distinctRandom(n, count) {
  const chosen = new Set();
  while (chosen.size < count) chosen.add(Math.floor(Math.random() * n));
  return [...chosen];
}
/** Overwrites, in the open file `fd`, the `PIECE`-sized piece at each index with fresh random bytes. */
export function rewritePieces(fd, indices) {
  const buf = Buffer.allocUnsafe(PIECE);
  for (const i of indices) writeSync(fd, randomFillSync(buf), 0, PIECE, i * PIECE);
}

/** The private smbd of scripts/samba/samba.sh: control script and test account. */
export const SAMBA = { script: path.resolve('scripts/samba/samba.sh'), user: 'vhdsynctest', password: 'Secret-Pass1' };
/** A random loopback port for a private smbd, so parallel runs rarely collide. */
export const randomPort = () => 4000 + Math.floor(Math.random() * 20000);
/** Starts a private smbd serving `dir`/share on `port` with async I/O on, plus samba.sh options `extra`. */
export const startSamba = (dir, port, extra = []) =>
  execFileSync(SAMBA.script, ['start', dir, String(port), '--aio', 'on', ...extra], { stdio: 'inherit' });
/** smbclient's arguments to run `cmd` on the share of the smbd in `dir` at `port`, with `extra` options before -c. */
export const smbclientArgv = (dir, port, cmd, extra = []) =>
  ['//127.0.0.1/share', '-s', path.join(dir, 'smb.conf'), '-p', String(port), '-U', `${SAMBA.user}%${SAMBA.password}`, ...extra, '-c', cmd];
/** smbclient's own reported average transfer rate in KiB/s from its output, or null if it printed none. */
export function smbclientRate(out) {
  const m = /average ([\d.]+) (?:kb\/s|KiloBytes\/sec)/.exec(out);
  return m ? Number(m[1]) : null;
}

/**
 * Starts a private radosgw under `dir` (scripts/ceph/rgw-up.sh, memstore of `memBytes`) and returns the environment
 * a vhdsync child needs to reach it (no profile, no shared files), an SDK client of the given S3Client class for the
 * peer, and `stop()`. The class comes from the caller, which may have to load the SDK after setting its environment.
 */
export function startRadosgw(dir, memBytes, S3Client) {
  rmSync(dir, { recursive: true, force: true });
  const vars = {};
  for (const line of sh(path.resolve('scripts/ceph/rgw-up.sh'), [dir], { env: { ...process.env, RGW_MEM_BYTES: String(memBytes) } }).split('\n')) {
    const m = /^([A-Z_]+)=(.*)$/.exec(line);
    if (m) vars[m[1]] = m[2];
  }
  const env = {
    ...process.env,
    AWS_ACCESS_KEY_ID: vars.RGW_ACCESS_KEY,
    AWS_SECRET_ACCESS_KEY: vars.RGW_SECRET_KEY,
    AWS_ENDPOINT_URL: vars.RGW_ENDPOINT,
    AWS_REGION: 'us-east-1',
    AWS_PROFILE: '',
    AWS_CONFIG_FILE: path.join(dir, 'no-aws-config'),
    AWS_SHARED_CREDENTIALS_FILE: path.join(dir, 'no-aws-credentials'),
  };
  const sdk = new S3Client({
    endpoint: vars.RGW_ENDPOINT,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: { accessKeyId: vars.RGW_ACCESS_KEY, secretAccessKey: vars.RGW_SECRET_KEY },
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
  return { env, sdk, stop: () => run(path.resolve('scripts/ceph/rgw-down.sh'), [dir]) };
}
