#!/usr/bin/env node
// Backup repository benchmarks (results: docs/performance.md, "Backup repositories").
// Run after `npm run build`:  node bench/repo.js [--dir DIR] [--runs N] [--size GiB] [--keep] [--no-xfs]
//  1. an incremental `vhdsync backup` (differencing point) of a raw disk with 1% changed (655 random 64 KiB pieces per
//     GiB... scaled: 1% of the size) vs `vhdsync copy --createmeta` + `vhdsync merge` of the same change onto a VHDX
//     copy of the disk, each run after the same rewrite; both read the whole source once.
//  2. (root, mkfs.xfs present, unless --no-xfs) the same backup with --reflink always into a repository on an XFS with
//     reflink=1 on a loop device: file system growth per point against the changed bytes.
import { closeSync, mkdirSync, openSync, rmSync, truncateSync } from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { BIN, GiB, MiB, PIECE, benchDir, distinctRandom, flag, header, opt, randomFile, rewritePieces, sh } from './lib.js';

const RUNS = Number(opt('--runs', 3));
const SIZE = Number(opt('--size', 4)) * GiB;
const DIR = benchDir('vhdsync-bench-repo');
const src = path.join(DIR, 'disk.raw');
const target = path.join(DIR, 'target.vhdx');
const diff = path.join(DIR, 'target_diff.vhdx');
const repo = path.join(DIR, 'repo');
const vs = (...argv) => sh(process.execPath, [BIN, ...argv]);
const timed = (fn) => {
  const t = process.hrtime.bigint();
  const out = fn();
  return { seconds: Number(process.hrtime.bigint() - t) / 1e9, out };
};
const pieces = Math.round((SIZE * 0.01) / PIECE);
const change = () => {
  const fd = openSync(src, 'r+');
  rewritePieces(fd, distinctRandom(SIZE / PIECE, pieces));
  closeSync(fd);
};
const used = (mnt) => {
  sh('sync', []);
  return Number(sh('df', ['--output=used', '-B1', mnt]).trim().split('\n')[1]);
};

header('repo', RUNS);
randomFile(src, SIZE);
rmSync(repo, { recursive: true, force: true });
for (const f of [target, diff, target + '.blocklist.bin', diff + '.blocklist.bin']) rmSync(f, { force: true });
vs('convert', src, target);
vs('createmeta', target);
vs('backup', src, '--repo', repo, '--reflink', 'never', '-q');

console.log(`| run | backup (incremental, ${(pieces * PIECE / MiB).toFixed(0)} MiB changed) | copy --createmeta + merge | ratio | point's image |`);
console.log('|---|---|---|---|---|');
for (let r = 1; r <= RUNS; r++) {
  change();
  sh('sh', ['-c', 'cat "$1" > /dev/null', 'sh', src]);
  const b = timed(() => JSON.parse(vs('backup', src, '--repo', repo, '--reflink', 'never', '--json')));
  sh('sh', ['-c', 'cat "$1" > /dev/null', 'sh', src]);
  const c = timed(() => {
    vs('copy', '--createmeta', src, target, '-q');
    vs('merge', diff, '-q');
  });
  console.log(`| ${r} | ${b.seconds.toFixed(2)} s | ${c.seconds.toFixed(2)} s | ${(b.seconds / c.seconds).toFixed(2)}x | ${(b.out.imageBytes / MiB).toFixed(1)} MiB for ${(b.out.changedBytes / MiB).toFixed(1)} MiB of changed 2 MiB blocks |`);
}

if (!flag('--no-xfs') && process.getuid?.() === 0 && spawnSync('sh', ['-c', 'command -v mkfs.xfs']).status === 0) {
  const img = path.join(DIR, 'xfs.img');
  const mnt = path.join(DIR, 'mnt');
  mkdirSync(mnt, { recursive: true });
  closeSync(openSync(img, 'w'));
  truncateSync(img, SIZE * 2 + GiB);
  sh('mkfs.xfs', ['-q', '-f', '-m', 'reflink=1', img]);
  sh('mount', ['-o', 'loop', img, mnt]);
  try {
    const xrepo = path.join(mnt, 'repo');
    vs('backup', src, '--repo', xrepo, '--reflink', 'always', '-q');
    console.log(`\n| run | backup --reflink always | file system growth | changed bytes (2 MiB blocks) | growth / changed |`);
    console.log('|---|---|---|---|---|');
    for (let r = 1; r <= RUNS; r++) {
      change();
      const before = used(mnt);
      const b = timed(() => JSON.parse(vs('backup', src, '--repo', xrepo, '--reflink', 'always', '--json')));
      const grown = used(mnt) - before;
      console.log(`| ${r} | ${b.seconds.toFixed(2)} s (${b.out.kind}) | ${(grown / MiB).toFixed(1)} MiB | ${(b.out.changedBytes / MiB).toFixed(1)} MiB | ${(grown / b.out.changedBytes).toFixed(3)} |`);
    }
  } finally {
    spawnSync('umount', [mnt]);
    rmSync(img, { force: true });
  }
}
if (!flag('--keep')) rmSync(DIR, { recursive: true, force: true });
