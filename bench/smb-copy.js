#!/usr/bin/env node
// `vhdsync copy` onto an SMB share vs `smbclient put` of the same changed bytes (results: docs/performance.md, "SMB").
// Run as root after `npm run build`:  node bench/smb-copy.js [--size-mib 1024] [--runs 3] [--dir /dev/shm]
// A random raw image is the old content; the target is a dynamic VHDX of it (qemu-img convert) placed in the share
// of a private smbd on loopback (scripts/samba/samba.sh, async I/O on, signing auto); the source is a local copy
// with 1% of its 64 KiB pieces rewritten at random places. Metafiles are made untimed (the target's through the
// share). Then, median of N runs, each starting without a diff:
//   - `vhdsync copy SOURCE smb://.../target.vhdx`: process start, logon, plan, read the changed blocks locally,
//     write the diff (data, BAT, sector bitmaps, headers) onto the share, flush, rename, diff metafile;
//   - `smbclient put` of one file holding exactly the changed bytes (process start and logon included too; its
//     own reported rate is printed as well).
// For metafile block sizes 64 KiB (changed bytes ~ 1% of the image) and 2 MiB, the default (most 2 MiB blocks
// hold a changed piece, so far more moves). VHDSYNC_BIN: a private build of bin/vhdsync.js.
import { execFileSync, spawnSync } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import * as path from 'node:path';

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : dflt;
};
const MiB = 1 << 20;
const SIZE = Number(opt('--size-mib', 1024)) * MiB;
const RUNS = Number(opt('--runs', 3));
const BASE_DIR = opt('--dir', '/dev/shm');
const BIN = process.env.VHDSYNC_BIN ?? path.resolve('bin/vhdsync.js');
const PIECE = 64 << 10;
const script = path.resolve('scripts/samba/samba.sh');
const user = 'vhdsynctest';
const password = 'Secret-Pass1';
const port = 4000 + Math.floor(Math.random() * 20000);

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const load = () => readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');

function sh(cmd, argv, opts = {}) {
  const r = spawnSync(cmd, argv, { encoding: 'utf8', maxBuffer: 1 << 26, ...opts });
  if (r.status !== 0) throw new Error(`${cmd} ${argv.join(' ')} failed: ${r.stderr || r.stdout}`);
  return r;
}

function timed(cmd, argv, opts) {
  const t = process.hrtime.bigint();
  const r = sh(cmd, argv, opts);
  return { ms: Number(process.hrtime.bigint() - t) / 1e6, out: r.stdout + r.stderr };
}

const scratch = mkdtempSync(path.join(BASE_DIR, 'vhdsync-bench-smbcopy-'));
const sambaDir = path.join(scratch, 'samba');
const share = path.join(sambaDir, 'share');
const env = { ...process.env, VHDSYNC_SMB_PASSWORD: password };
const url = (name) => `smb://${user}@127.0.0.1:${port}/share/${name}`;

try {
  // Old content, random; the source rewrites 1% of the 64 KiB pieces.
  const base = path.join(scratch, 'base.raw');
  const source = path.join(scratch, 'source.raw');
  const buf = Buffer.allocUnsafe(16 * MiB);
  let fd = openSync(base, 'w');
  for (let off = 0; off < SIZE; off += buf.length) writeSync(fd, randomFillSync(buf), 0, Math.min(buf.length, SIZE - off), off);
  closeSync(fd);
  sh('cp', ['--sparse=always', base, source]);
  const pieces = SIZE / PIECE;
  const chosen = new Set();
  while (chosen.size < Math.ceil(pieces / 100)) chosen.add(Math.floor(Math.random() * pieces));
  fd = openSync(source, 'r+');
  const piece = Buffer.allocUnsafe(PIECE);
  for (const p of chosen) writeSync(fd, randomFillSync(piece), 0, PIECE, p * PIECE);
  closeSync(fd);

  execFileSync(script, ['start', sambaDir, String(port), '--aio', 'on'], { stdio: 'inherit' });
  const smbclient = (cmd) =>
    timed('smbclient', ['//127.0.0.1/share', '-s', path.join(sambaDir, 'smb.conf'), '-p', String(port), '-U', `${user}%${password}`, '-c', cmd]);

  const rows = [];
  for (const blockSize of ['64K', '2M']) {
    const name = `target-${blockSize}.vhdx`;
    sh('qemu-img', ['convert', '-f', 'raw', '-O', 'vhdx', '-o', 'subformat=dynamic', base, path.join(share, name)]);
    sh(process.execPath, [BIN, 'createmeta', '--block-size', blockSize, url(name)], { env });
    sh(process.execPath, [BIN, 'createmeta', '--block-size', blockSize, source], { env });
    const plan = JSON.parse(sh(process.execPath, [BIN, 'check', '--json', source, url(name)], { env }).stdout);

    // The same changed bytes, as one local file for smbclient.
    const changed = path.join(scratch, `changed-${blockSize}.bin`);
    const src = readFileSync(source);
    writeFileSync(changed, Buffer.concat(plan.changedRanges.map((r) => src.subarray(r.offset, r.offset + r.length))));

    const ours = [];
    const inside = [];
    const theirs = [];
    const theirRate = [];
    let diffSize = 0;
    for (let i = 0; i < RUNS; i++) {
      const diff = name.replace('.vhdx', '_diff.vhdx');
      rmSync(path.join(share, diff), { force: true });
      rmSync(path.join(share, `${diff}.blocklist.bin`), { force: true });
      const c = timed(process.execPath, [BIN, 'copy', '--json', source, url(name)], { env });
      ours.push(c.ms);
      const summary = JSON.parse(c.out);
      diffSize = summary.diffFileSize;
      inside.push(summary.seconds * 1000);
      const p = smbclient(`put ${changed} changed-${blockSize}.bin`);
      theirs.push(p.ms);
      const m = /average ([\d.]+) (?:kb\/s|KiloBytes\/sec)/.exec(p.out);
      if (m) theirRate.push(Number(m[1]) / 1024);
    }
    rows.push({ blockSize, changedBytes: plan.changedBytes, changedBlocks: plan.changedBlocks, diffSize, ours: median(ours), inside: median(inside), theirs: median(theirs), rate: median(theirRate) });
  }

  // What starting Node and loading the CLI costs by itself, for reading the wall times.
  const startup = median(Array.from({ length: RUNS }, () => timed(process.execPath, [BIN, '--version']).ms));
  console.log(`copy onto an SMB share (loopback smbd), ${SIZE / MiB} MiB image, 1% of 64 KiB pieces changed; medians of ${RUNS}; load ${load()}`);
  console.log(`\`vhdsync --version\` (Node start-up and module loading alone): ${(startup / 1000).toFixed(2)} s`);
  console.log('| metafile block | changed blocks | changed bytes | diff file | vhdsync copy, wall | of which in copy (logon included) | smbclient put of the changed bytes, wall | wall ratio | smbclient own rate |');
  console.log('|---|---|---|---|---|---|---|---|---|');
  for (const r of rows) {
    console.log(
      `| ${r.blockSize} | ${r.changedBlocks} | ${(r.changedBytes / MiB).toFixed(1)} MiB | ${(r.diffSize / MiB).toFixed(0)} MiB | ${(r.ours / 1000).toFixed(2)} s | ` +
        `${(r.inside / 1000).toFixed(2)} s | ${(r.theirs / 1000).toFixed(2)} s | ${(r.ours / r.theirs).toFixed(2)} | ${r.rate.toFixed(0)} MiB/s |`,
    );
  }
} finally {
  spawnSync(script, ['stop', sambaDir], { stdio: 'inherit' });
  rmSync(scratch, { recursive: true, force: true });
}
