#!/usr/bin/env node
// merge benchmark (results: docs/performance.md, "copy/merge"). Not part of CI.
// Run after `npm run build`:  node bench/merge.js [--dir DIR] [--runs N] [--size-gib N] [--keep]
// Target: a dynamic VHDX (32 MiB blocks) of a random raw image (4 GiB by default; old.raw is shared with
// bench/copy.js). Two diffs are made with `vhdsync copy` (untimed):
//   A. 1 GiB of new random data in one region (a quarter of the image when it is under 4 GiB) -> merge throughput, against `dd bs=4M conv=notrunc,fsync`
//      writing the same 1 GiB from the source into a raw copy (the cost of just putting the bytes in place);
//   B. 1% of the 64 KiB pieces changed at random places -> a scattered merge (many extents, partial blocks).
// Each run restores the target and merges with --keep-diff; page cache warm; median of N runs. Issue 14's goal row
// for B (merge with and without --keep-diff and the diff's deletion alone, against pwrite + one fsync, interleaved)
// is bench/overview.js's.
// VHDSYNC_BIN: a private build (bench/lib.js).
import { randomFillSync } from 'node:crypto';
import { closeSync, mkdirSync, openSync, rmSync, writeSync } from 'node:fs';
import * as path from 'node:path';
import { BIN, GiB, MiB, PIECE, benchDir, distinctRandom, flag, gbps, header, opt, randomFile, rewritePieces, sh, timedRuns } from './lib.js';

const RUNS = Number(opt('--runs', 3));
const DIR = benchDir('vhdsync-bench-copy');
const SIZE = Number(opt('--size-gib', 4)) * 2 ** 30;
const KEEP = flag('--keep');
/** Like timedRuns, with `sync` (untimed) before each run so earlier writes do not land in the timing. */
const timed = (cmd, argv, before) =>
  timedRuns(RUNS, cmd, argv, () => {
    before?.();
    sh('sync', []);
  });

const f = (n) => path.join(DIR, n);
const old = f('old.raw');
randomFile(old, SIZE);
const pristine = f('m-target.vhdx.orig');
const target = f('m-target.vhdx');
rmSync(pristine, { force: true });
sh('qemu-img', ['convert', '-f', 'raw', '-O', 'vhdx', '-o', 'subformat=dynamic,block_size=32M', old, pristine]);

/** Makes source `name` (old + edits), its diff against the target, and returns the diff's path. */
function makeDiff(name, edit) {
  const src = f(name);
  sh('cp', [old, src]);
  const fd = openSync(src, 'r+');
  edit(fd);
  closeSync(fd);
  sh('cp', [pristine, target]);
  sh(process.execPath, [BIN, 'createmeta', '--block-size', '64K', src, target]);
  const out = f(`${name}.diffdir`);
  rmSync(out, { recursive: true, force: true });
  mkdirSync(out);
  sh(process.execPath, [BIN, 'copy', `--diffdir=${out}`, src, target]);
  return { src, diff: path.join(out, 'm-target_diff.vhdx') };
}

// Region A is 1 GiB at 1 GiB on the default 4 GiB image; smaller images get a quarter of their size at their middle.
const REGION = Math.min(GiB, SIZE / 4);
const regionAt = Math.min(GiB, SIZE / 2);
const A = makeDiff('m-source-a.raw', (fd) => {
  const buf = Buffer.allocUnsafe(64 * MiB);
  for (let off = 0; off < REGION; off += buf.length) writeSync(fd, randomFillSync(buf), 0, Math.min(buf.length, REGION - off), regionAt + off);
});
const B = makeDiff('m-source-b.raw', (fd) => rewritePieces(fd, distinctRandom(SIZE / PIECE, Math.round(SIZE / PIECE / 100))));

header('merge', RUNS);
console.log(`${SIZE / GiB} GiB random image in a dynamic VHDX with 32 MiB blocks; diffs are VHDX differencing images (2 MiB blocks) written by vhdsync copy; page cache warm; \`sync\` before each timed run.\n`);

/** Merges `diff` (moved next to a freshly restored target) and returns the timing and the summary. */
function benchMerge(d) {
  const placed = f('m-target_diff.vhdx');
  const res = timed(process.execPath, [BIN, 'merge', '--keep-diff', '--json', placed], () => {
    sh('cp', [pristine, target]);
    sh('cp', [d.diff, placed]);
    sh('cp', [d.diff + '.blocklist.bin', placed + '.blocklist.bin']);
  });
  return { ...res, summary: JSON.parse(res.out) };
}
const mA = benchMerge(A);
const ddTarget = f('m-dd.raw');
const dd = timed('dd', [`if=${A.src}`, `of=${ddTarget}`, 'bs=4M', `skip=${regionAt / (4 * MiB)}`, `seek=${regionAt / (4 * MiB)}`, `count=${REGION / (4 * MiB)}`, 'conv=notrunc,fsync', 'status=none'], () => sh('cp', [old, ddTarget]));
const mB = benchMerge(B);

console.log('| what | median (min-max) | rate |');
console.log('|---|---|---|');
console.log(`| \`dd bs=4M conv=notrunc,fsync\` of the ${REGION / MiB} MiB region into a raw copy | ${dd.seconds.toFixed(2)} s (${dd.min.toFixed(2)}-${dd.max.toFixed(2)}) | ${gbps(REGION, dd.seconds)} |`);
console.log(`| \`vhdsync merge\` A: ${REGION / MiB} MiB contiguous (${mA.summary.extentsMerged} extents, ${mA.summary.blocksMerged} parent blocks) | ${mA.seconds.toFixed(2)} s (${mA.min.toFixed(2)}-${mA.max.toFixed(2)}) | ${gbps(mA.summary.bytesMerged, mA.seconds)} |`);
console.log(`| \`vhdsync merge\` B: 1% scattered 64 KiB (${(mB.summary.bytesMerged / 1e6).toFixed(1)} MB, ${mB.summary.extentsMerged} extents, ${mB.summary.blocksMerged} parent blocks) | ${mB.seconds.toFixed(2)} s (${mB.min.toFixed(2)}-${mB.max.toFixed(2)}) | ${gbps(mB.summary.bytesMerged, mB.seconds)} |`);
console.log(`\nRatio: merge A / dd ${(mA.seconds / dd.seconds).toFixed(2)}x`);

if (!KEEP) {
  for (const n of [pristine, target, ddTarget, A.src, B.src, f('m-target_diff.vhdx'), f('m-target_diff.vhdx.blocklist.bin')]) rmSync(n, { force: true });
  for (const d of [A, B]) rmSync(path.dirname(d.diff), { recursive: true, force: true });
}
