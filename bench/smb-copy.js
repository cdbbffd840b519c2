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
import { spawnSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import {
  BIN, MiB, PIECE, SAMBA, distinctRandom, load, median, opt, randomFile, randomPort, rewritePieces, run, sh, smbclientArgv, smbclientRate, startSamba,
} from './lib.js';

const SIZE = Number(opt('--size-mib', 1024)) * MiB;
const RUNS = Number(opt('--runs', 3));
const BASE_DIR = opt('--dir', '/dev/shm');
const { user, password } = SAMBA;
const port = randomPort();

/** One run of a command: wall milliseconds, and stdout and stderr together. */
function timed(cmd, argv, opts) {
  const t = process.hrtime.bigint();
  const r = run(cmd, argv, opts);
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
  randomFile(base, SIZE);
  sh('cp', ['--sparse=always', base, source]);
  const pieces = SIZE / PIECE;
  const fd = openSync(source, 'r+');
  rewritePieces(fd, distinctRandom(pieces, Math.ceil(pieces / 100)));
  closeSync(fd);

  startSamba(sambaDir, port);
  const smbclient = (cmd) => timed('smbclient', smbclientArgv(sambaDir, port, cmd));

  const rows = [];
  for (const blockSize of ['64K', '2M']) {
    const name = `target-${blockSize}.vhdx`;
    sh('qemu-img', ['convert', '-f', 'raw', '-O', 'vhdx', '-o', 'subformat=dynamic', base, path.join(share, name)]);
    sh(process.execPath, [BIN, 'createmeta', '--block-size', blockSize, url(name)], { env });
    sh(process.execPath, [BIN, 'createmeta', '--block-size', blockSize, source], { env });
    const plan = JSON.parse(sh(process.execPath, [BIN, 'check', '--json', source, url(name)], { env }));

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
      const kbps = smbclientRate(p.out);
      if (kbps !== null) theirRate.push(kbps / 1024);
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
  spawnSync(SAMBA.script, ['stop', sambaDir], { stdio: 'inherit' });
  rmSync(scratch, { recursive: true, force: true });
}
