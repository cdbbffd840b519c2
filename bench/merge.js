#!/usr/bin/env node
// merge benchmark (results: docs/performance.md, "copy/merge"). Not part of CI.
// Run after `npm run build`:  node bench/merge.js [--dir DIR] [--runs N] [--size-gib N] [--keep]
// Target: a dynamic VHDX (32 MiB blocks) of a random raw image (4 GiB by default; old.raw is shared with
// bench/copy.js). Two diffs are made with `vhdsync copy` (untimed):
//   A. 1 GiB of new random data in one region -> merge throughput, against `dd bs=4M conv=notrunc,fsync`
//      writing the same 1 GiB from the source into a raw copy (the cost of just putting the bytes in place);
//   B. 1% of the 64 KiB pieces changed at random places -> a scattered merge (many extents, partial blocks).
// Each run restores the target and merges with --keep-diff; page cache warm; median of N runs.
import { spawnSync } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, rmSync, statSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : dflt;
};
const RUNS = Number(opt('--runs', 3));
const DIR = path.resolve(opt('--dir', path.join(tmpdir(), 'vhdsync-bench-copy')));
const SIZE = Number(opt('--size-gib', 4)) * 2 ** 30;
const KEEP = args.includes('--keep');
// VHDSYNC_BIN: a private build (the shared dist/ may be rebuilt by other runs while benchmarking).
const BIN = process.env.VHDSYNC_BIN ?? path.resolve('bin/vhdsync.js');
const MiB = 1 << 20;
const GiB = 1 << 30;
const PIECE = 64 << 10;
mkdirSync(DIR, { recursive: true });

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const load = () => spawnSync('cat', ['/proc/loadavg'], { encoding: 'utf8' }).stdout.split(' ').slice(0, 3).join(' ');
function sh(cmd, argv) {
  const r = spawnSync(cmd, argv, { encoding: 'utf8', maxBuffer: 1 << 26 });
  if (r.status !== 0) throw new Error(`${cmd} ${argv.join(' ')} failed: ${r.stderr}`);
  return r.stdout;
}
function timed(cmd, argv, before) {
  const secs = [];
  let out = '';
  for (let i = 0; i < RUNS; i++) {
    before?.();
    sh('sync', []);
    const t = process.hrtime.bigint();
    out = sh(cmd, argv);
    secs.push(Number(process.hrtime.bigint() - t) / 1e9);
  }
  return { seconds: median(secs), min: Math.min(...secs), max: Math.max(...secs), out };
}

const f = (n) => path.join(DIR, n);
const old = f('old.raw');
if (!existsSync(old) || statSync(old).size !== SIZE) {
  const fd = openSync(old, 'w');
  const buf = Buffer.allocUnsafe(64 * MiB);
  for (let off = 0; off < SIZE; off += buf.length) writeSync(fd, randomFillSync(buf), 0, Math.min(buf.length, SIZE - off), off);
  closeSync(fd);
}
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

const regionAt = GiB;
const A = makeDiff('m-source-a.raw', (fd) => {
  const buf = Buffer.allocUnsafe(64 * MiB);
  for (let off = 0; off < GiB; off += buf.length) writeSync(fd, randomFillSync(buf), 0, buf.length, regionAt + off);
});
const B = makeDiff('m-source-b.raw', (fd) => {
  const buf = Buffer.allocUnsafe(PIECE);
  const chosen = new Set();
  while (chosen.size < Math.round(SIZE / PIECE / 100)) chosen.add(Math.floor((Math.random() * SIZE) / PIECE));
  for (const i of chosen) writeSync(fd, randomFillSync(buf), 0, PIECE, i * PIECE);
});

console.log(`# merge benchmark, ${new Date().toISOString()}, node ${process.version}, ${RUNS} runs, load average ${load()}\n`);
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
const dd = timed('dd', [`if=${A.src}`, `of=${ddTarget}`, 'bs=4M', `skip=${regionAt / (4 * MiB)}`, `seek=${regionAt / (4 * MiB)}`, `count=${GiB / (4 * MiB)}`, 'conv=notrunc,fsync', 'status=none'], () => sh('cp', [old, ddTarget]));
const mB = benchMerge(B);

const gbps = (bytes, s) => `${(bytes / s / 1e9).toFixed(2)} GB/s`;
console.log('| what | median (min-max) | rate |');
console.log('|---|---|---|');
console.log(`| \`dd bs=4M conv=notrunc,fsync\` of the 1 GiB region into a raw copy | ${dd.seconds.toFixed(2)} s (${dd.min.toFixed(2)}-${dd.max.toFixed(2)}) | ${gbps(GiB, dd.seconds)} |`);
console.log(`| \`vhdsync merge\` A: 1 GiB contiguous (${mA.summary.extentsMerged} extents, ${mA.summary.blocksMerged} parent blocks) | ${mA.seconds.toFixed(2)} s (${mA.min.toFixed(2)}-${mA.max.toFixed(2)}) | ${gbps(mA.summary.bytesMerged, mA.seconds)} |`);
console.log(`| \`vhdsync merge\` B: 1% scattered 64 KiB (${(mB.summary.bytesMerged / 1e6).toFixed(1)} MB, ${mB.summary.extentsMerged} extents, ${mB.summary.blocksMerged} parent blocks) | ${mB.seconds.toFixed(2)} s (${mB.min.toFixed(2)}-${mB.max.toFixed(2)}) | ${gbps(mB.summary.bytesMerged, mB.seconds)} |`);
console.log(`\nRatio: merge A / dd ${(mA.seconds / dd.seconds).toFixed(2)}x`);

if (!KEEP) {
  for (const n of [pristine, target, ddTarget, A.src, B.src, f('m-target_diff.vhdx'), f('m-target_diff.vhdx.blocklist.bin')]) rmSync(n, { force: true });
  for (const d of [A, B]) rmSync(path.dirname(d.diff), { recursive: true, force: true });
}
