#!/usr/bin/env node
// The overview table of issue 14 (results: docs/performance.md, "Overview"). Not part of CI.
// Run after `npm run build`:  node bench/overview.js [--dir DIR] [--runs N] [--size-gib N] [--keep]
// Every row is ours against a peer measured in the same run, the contestants of a row interleaved run by run (so
// the machine's load hits both alike), whole processes (Node's start-up included), page cache warm; medians of N.
//   - start-up: `vhdsync --version` against `node -e 0`
//   - createmeta of a random raw image (4 GiB by default), and of the same content as a dynamic VHDX and a dynamic
//     VHD (qemu-img convert), against `xxhsum -H2` of the raw
//   - copy, 1% changed in 64 KiB pieces, 64 KiB metafiles, against `rsync --inplace --no-whole-file` onto an old copy
//     (or, where rsync is not installed, the physical limit: python3 pread+pwrite of exactly the changed pieces, fsync)
//   - merge of that diff (and merge --keep-diff, and `rm` of the diff alone) against the same pwrite program (one fsync)
//   - bytes copy reads with the default 2 MiB metafile blocks (sub-blocks of 32 KiB), the VHDX diff's apparent
//     size, and the size of `copy --diff-format chunked`'s file, against the changed bytes
// VHDSYNC_BIN: a private build (bench/lib.js).
import { closeSync, openSync, rmSync, statSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { BIN, PIECE, PYTHON, benchDir, distinctRandom, flag, header, median, opt, randomFile, rewritePieces, run, sh } from './lib.js';

const RUNS = Number(opt('--runs', 5));
const DIR = benchDir('vhdsync-bench-overview');
const SIZE = Number(opt('--size-gib', 4)) * 2 ** 30;
const KEEP = flag('--keep');
const f = (n) => path.join(DIR, n);
const haveRsync = (() => {
  try {
    sh('rsync', ['--version']);
    return true;
  } catch {
    return false;
  }
})();

/**
 * Runs the contestants of one row interleaved, RUNS times each, under /usr/bin/time: per contestant the median
 * wall-clock seconds (with min-max) and the median CPU seconds (user + system), which a loaded machine disturbs
 * far less than wall time.
 */
function race(contestants) {
  const secs = contestants.map(() => []);
  const cpus = contestants.map(() => []);
  const outs = [];
  for (let r = 0; r < RUNS; r++) {
    contestants.forEach(([cmd, argv, before], i) => {
      before?.();
      const t = process.hrtime.bigint();
      const res = run('/usr/bin/time', ['-f', 'CPU %U %S', cmd, ...argv]);
      secs[i].push(Number(process.hrtime.bigint() - t) / 1e9);
      const m = /CPU ([\d.]+) ([\d.]+)\s*$/.exec(res.stderr);
      cpus[i].push(m ? Number(m[1]) + Number(m[2]) : NaN);
      outs[i] = res.stdout;
    });
  }
  return contestants.map((_, i) => ({ s: median(secs[i]), min: Math.min(...secs[i]), max: Math.max(...secs[i]), cpu: median(cpus[i]), out: outs[i] }));
}

const rows = [];
const fmt = (r) => `${r.s.toFixed(2)} s (${r.min.toFixed(2)}-${r.max.toFixed(2)}), CPU ${r.cpu.toFixed(2)} s`;
const row = (what, ours, peerName, peer, goal) =>
  rows.push(`| ${what} | ${fmt(ours)} | ${peerName} ${fmt(peer)} | ${(ours.s / peer.s).toFixed(2)}x (CPU ${(ours.cpu / peer.cpu).toFixed(2)}x) | ${goal} |`);

// Images: random content (nothing skipped as zero), the same bytes as a dynamic VHDX and a dynamic VHD.
const raw = f('image.raw');
const vhdx = f('image.vhdx');
const vhd = f('image.vhd');
randomFile(raw, SIZE);
for (const [out, o] of [[vhdx, ['-O', 'vhdx', '-o', 'subformat=dynamic']], [vhd, ['-O', 'vpc', '-o', 'subformat=dynamic']]]) {
  rmSync(out, { force: true });
  sh('qemu-img', ['convert', '-f', 'raw', ...o, raw, out]);
}
sh('sh', ['-c', 'cat "$@" > /dev/null', 'sh', raw, vhdx, vhd]);
header('overview (issue 14)', RUNS);
console.log(`${SIZE / 2 ** 30} GiB random image; page cache warm; each row's contestants interleaved; whole processes.`);
// With `discard`, every extent a deletion frees is trimmed synchronously: it decides what deleting a sparse diff costs.
console.log(`Filesystem of ${DIR}: ${(() => {
  try {
    return sh('findmnt', ['-no', 'FSTYPE,OPTIONS', '-T', DIR]).trim();
  } catch {
    return 'unknown';
  }
})()}\n`);

const node = process.execPath;
{
  const [ours, peer] = race([[node, [BIN, '--version']], [node, ['-e', '0']]]);
  row('`vhdsync --version` (start-up alone)', ours, '`node -e 0`', peer, '<= 1.3x');
}
for (const [name, img, goal] of [['raw', raw, '<= 1.0x'], ['dynamic VHDX', vhdx, '<= 1.1x'], ['dynamic VHD', vhd, '<= 1.1x']]) {
  // Other jobs on a shared machine drop the page cache: each contestant's file is read into it right before its run.
  const warm = (file) => () => sh('sh', ['-c', 'cat "$1" > /dev/null', 'sh', file]);
  const [ours, peer] = race([[node, [BIN, 'createmeta', '-q', img], warm(img)], ['xxhsum', ['-H2', raw], warm(raw)]]);
  row(`\`createmeta\` ${SIZE / 2 ** 30} GiB random ${name}`, ours, '`xxhsum -H2` of the raw', peer, goal);
}

// copy: the source is the raw with 1% of its 64 KiB pieces rewritten; the target is the VHDX of the old content.
const source = f('source.raw');
const diff = f('image_diff.vhdx');
const oldCopy = f('old-copy.raw');
const limitOut = f('limit.out');
sh('cp', [raw, source]);
const picked = distinctRandom(SIZE / PIECE, Math.round(SIZE / PIECE / 100)).sort((a, b) => a - b);
{
  const fd = openSync(source, 'r+');
  rewritePieces(fd, picked);
  closeSync(fd);
}
const changed = picked.length * PIECE;
writeFileSync(f('ranges.txt'), picked.map((i) => i * PIECE).join('\n') + '\n');
const rmDiff = () => {
  rmSync(diff, { force: true });
  rmSync(diff + '.blocklist.bin', { force: true });
};
// Each copy contestant starts with nothing left to write back: the peer's set-up (a 4 GiB cp) would otherwise still
// be flushing while the next contestant runs and fsyncs (untimed, as the merge rows' restore).
const settled = (before) => () => {
  before();
  sh('sync', []);
};
sh(node, [BIN, 'createmeta', '-q', '--block-size', '64K', source, vhdx]);
{
  const limitScript = `
import os, sys
src = os.open(sys.argv[1], os.O_RDONLY); dst = os.open(sys.argv[2], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
for line in open(sys.argv[3]):
    off = int(line); os.pwrite(dst, os.pread(src, ${PIECE}, off), off)
os.fsync(dst); os.close(dst)
`;
  const peer = haveRsync
    ? ['rsync', ['--inplace', '--no-whole-file', source, oldCopy], settled(() => sh('cp', [raw, oldCopy]))]
    : [PYTHON, ['-c', limitScript, source, limitOut, f('ranges.txt')], settled(() => rmSync(limitOut, { force: true }))];
  const [ours, other] = race([[node, [BIN, 'copy', '--json', source, vhdx], settled(rmDiff)], peer]);
  const s = JSON.parse(ours.out);
  row('`copy`, 1% changed in 64 KiB pieces, 64 KiB metafiles', ours, haveRsync ? '`rsync --inplace --no-whole-file`' : 'physical limit (rsync not installed)', other, haveRsync ? '>= 10x faster (<= 0.1x)' : '');
  const apparent = statSync(diff).size;
  rows.push(`| apparent size of the VHDX diff for that change | ${(apparent / 1e6).toFixed(1)} MB | changed ${(changed / 1e6).toFixed(1)} MB | ${(apparent / changed).toFixed(1)}x | <= 20x |`);
  rows.push(`| bytes \`copy\` reads for that change, 64 KiB metafiles | ${(s.bytesRead / 1e6).toFixed(1)} MB | changed ${(changed / 1e6).toFixed(1)} MB | ${(s.bytesRead / changed).toFixed(2)}x | <= 2x |`);

  // merge of that diff (the scattered extents) into the VHDX, against the same plain program writing the same
  // extents into a file and fsyncing once. Both start from a flushed page cache state (`sync`, untimed), since the
  // merge's fsync would otherwise also pay for the restore copy's dirty pages.
  const keptDiff = f('kept_diff.vhdx');
  const pristine = f('image.vhdx.orig');
  for (const [a, b] of [[diff, keptDiff], [diff + '.blocklist.bin', keptDiff + '.blocklist.bin'], [vhdx, pristine], [vhdx + '.blocklist.bin', pristine + '.blocklist.bin']]) sh('cp', [a, b]);
  const restore = () => {
    for (const [a, b] of [[keptDiff, diff], [keptDiff + '.blocklist.bin', diff + '.blocklist.bin'], [pristine, vhdx], [pristine + '.blocklist.bin', vhdx + '.blocklist.bin']]) sh('cp', [a, b]);
    sh('sync', []);
  };
  // The same merge with --keep-diff too, and the deletion of the diff alone (`rm` of the restored diff): deleting
  // the diff is part of merge's job (the first row keeps it), but freeing a sparse file of hundreds of extents costs
  // a discard per extent on a filesystem mounted with `discard` (docs/performance.md), so a planner sees both parts.
  const [m, kept, plain, unlinked] = race([
    [node, [BIN, 'merge', '--json', diff], restore],
    [node, [BIN, 'merge', '--json', '--keep-diff', diff], restore],
    [PYTHON, ['-c', limitScript, source, limitOut, f('ranges.txt')], () => {
      rmSync(limitOut, { force: true });
      sh('sync', []);
    }],
    ['rm', [diff], restore],
  ]);
  const ms = JSON.parse(m.out);
  row(`\`merge\` of that diff (${ms.extentsMerged} extents, ${(ms.bytesMerged / 1e6).toFixed(1)} MB)`, m, 'pwrite of the same pieces, one fsync', plain, '<= 1.5x');
  row('`merge --keep-diff` of that diff (the diff is not deleted)', kept, 'the same', plain, '');
  row('`rm` of that diff alone (what `merge` does and `--keep-diff` does not)', unlinked, 'the same', plain, '');
  restore();
  for (const n of [keptDiff, keptDiff + '.blocklist.bin', pristine, pristine + '.blocklist.bin']) rmSync(n, { force: true });
}
// The same change with the default 2 MiB metafile blocks: only the changed 32 KiB sub-blocks move (metafile
// version 3; with version 1/2 lists whole 2 MiB blocks moved, 27.6x). Then the same as a chunked diff.
rmDiff();
sh(node, [BIN, 'createmeta', '-q', source, vhdx]);
{
  const s = JSON.parse(sh(node, [BIN, 'copy', '--json', source, vhdx]));
  const moved = s.dataBytes + s.zeroBytes;
  rows.push(`| bytes \`copy\` reads for that change, default 2 MiB metafiles | ${(s.bytesRead / 1e6).toFixed(1)} MB (into the diff ${(moved / 1e6).toFixed(1)} MB) | changed ${(changed / 1e6).toFixed(1)} MB | ${(s.bytesRead / changed).toFixed(2)}x | <= 2x |`);
  rows.push(`| apparent size of the VHDX diff, default 2 MiB metafiles | ${(statSync(diff).size / 1e6).toFixed(1)} MB | changed ${(changed / 1e6).toFixed(1)} MB | ${(statSync(diff).size / changed).toFixed(1)}x | <= 20x |`);
  rmDiff();
  const c = JSON.parse(sh(node, [BIN, 'copy', '--json', '--diff-format', 'chunked', source, vhdx]));
  const size = statSync(c.diff).size;
  rows.push(`| \`copy --diff-format chunked\` file for that change, default 2 MiB metafiles | ${(size / 1e6).toFixed(1)} MB | changed ${(changed / 1e6).toFixed(1)} MB | ${(size / changed).toFixed(3)}x | <= 1.2x |`);
  rmSync(c.diff, { force: true });
  rmSync(c.diff + '.blocklist.bin', { force: true });
}

console.log('| measure | vhdsync, median wall (min-max), median CPU | peer, same run | ratio wall (CPU) | goal |');
console.log('|---|---|---|---|---|');
for (const r of rows) console.log(r);
console.log(`\nN = ${RUNS} runs per contestant; load average at the end ${sh('cat', ['/proc/loadavg']).split(' ').slice(0, 3).join(' ')}`);
if (!KEEP) for (const n of [source, diff, diff + '.blocklist.bin', oldCopy, limitOut, vhd, vhdx, raw]) rmSync(n, { force: true });
