#!/usr/bin/env node
// copy benchmark (results: docs/performance.md, "copy/merge"). Not part of CI.
// Run after `npm run build`:  node bench/copy.js [--dir DIR] [--runs N] [--size-gib N] [--keep]
// A random raw image (4 GiB by default) is the old content; the target is a dynamic VHDX of it (32 MiB blocks,
// qemu-img convert); the source is a copy with 1% of its 64 KiB pieces rewritten at random places. Both get
// 64 KiB-block metafiles (untimed). Then, page cache warm, median of N runs:
//   - `vhdsync copy SOURCE TARGET`           (plan from metafiles, read+verify+write the changed blocks)
//   - `vhdsync copy --createmeta SOURCE TARGET` (one full hashing pass over the source, plus the copy)
//   - `rsync --inplace --no-whole-file SOURCE OLDCOPY` (rolling checksums over both files; the usual tool)
//   - the physical limit: read exactly the changed ranges from SOURCE and write them into a file, then fsync
//     (python3 os.pread/os.pwrite, one process) — what any tool must at least do.
// Prints a Markdown table and the diff's size (apparent and du). VHDSYNC_BIN: a private build (bench/lib.js).
import { closeSync, openSync, rmSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { BIN, PIECE, PYTHON, benchDir, distinctRandom, flag, header, opt, randomFile, rewritePieces, sh, timedRuns } from './lib.js';

const RUNS = Number(opt('--runs', 3));
const DIR = benchDir('vhdsync-bench-copy');
const SIZE = Number(opt('--size-gib', 4)) * 2 ** 30;
const KEEP = flag('--keep');
const timed = (cmd, argv, before) => timedRuns(RUNS, cmd, argv, before);

const f = (n) => path.join(DIR, n);
const old = f('old.raw');
const source = f('source.raw');
const target = f('target.vhdx');
const rsyncTarget = f('rsync-target.raw');
const limitOut = f('limit.out');
const diff = f('target_diff.vhdx');

// Old content: random data, so nothing is skipped as zero.
randomFile(old, SIZE);
rmSync(target, { force: true });
sh('qemu-img', ['convert', '-f', 'raw', '-O', 'vhdx', '-o', 'subformat=dynamic,block_size=32M', old, target]);
sh('cp', [old, source]);
// 1% of the 64 KiB pieces, at random distinct places.
const pieces = SIZE / PIECE;
const picked = distinctRandom(pieces, Math.round(pieces / 100)).sort((a, b) => a - b);
const ranges = picked.map((i) => i * PIECE);
{
  const fd = openSync(source, 'r+');
  rewritePieces(fd, picked);
  closeSync(fd);
}
const changed = ranges.length * PIECE;
writeFileSync(f('ranges.txt'), ranges.join('\n') + '\n');
sh(process.execPath, [BIN, 'createmeta', '--block-size', '64K', source, target]);
// Warm the page cache for every contestant alike.
sh('sh', ['-c', 'cat "$1" "$2" "$3" > /dev/null', 'sh', old, source, target]);

header('copy', RUNS);
console.log(`${(SIZE / 2 ** 30).toFixed(0)} GiB random image, ${ranges.length} changed 64 KiB pieces = ${(changed / 1e6).toFixed(1)} MB (1%), metafile blocks 64 KiB, target VHDX 32 MiB blocks, page cache warm.\n`);

const rmDiff = () => {
  rmSync(diff, { force: true });
  rmSync(diff + '.blocklist.bin', { force: true });
};
const copy = timed(process.execPath, [BIN, 'copy', '--json', source, target], rmDiff);
const summary = JSON.parse(copy.out);
const du = Number(sh('du', ['-B1', diff]).split('\t')[0]);
// --createmeta rewrites the source's metafile each run; the plan above already used it.
const copyCm = timed(process.execPath, [BIN, 'copy', '--createmeta', '--json', source, target], rmDiff);
const rsync = timed('rsync', ['--inplace', '--no-whole-file', '--stats', source, rsyncTarget], () => sh('cp', [old, rsyncTarget]));
const literal = /Literal data: ([\d,]+)/.exec(rsync.out)?.[1] ?? '?';
const limitScript = `
import os, sys
src = os.open(sys.argv[1], os.O_RDONLY); dst = os.open(sys.argv[2], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
for line in open(sys.argv[3]):
    off = int(line); os.pwrite(dst, os.pread(src, ${PIECE}, off), off)
os.fsync(dst); os.close(dst)
`;
const limit = timed(PYTHON, ['-c', limitScript, source, limitOut, f('ranges.txt')], () => rmSync(limitOut, { force: true }));

const row = (name, r, extra = '') => console.log(`| ${name} | ${r.seconds.toFixed(2)} s (${r.min.toFixed(2)}-${r.max.toFixed(2)}) | ${extra} |`);
console.log('| what | median (min-max) | notes |');
console.log('|---|---|---|');
row('physical limit: pread+pwrite the changed 64 KiB pieces, fsync', limit, `${(changed / 1e6).toFixed(1)} MB`);
row('`vhdsync copy` (plan from both metafiles)', copy, `${summary.changedBlocks} blocks, read ${(summary.bytesRead / 1e6).toFixed(1)} MB; diff ${(summary.diffFileSize / 1e6).toFixed(0)} MB apparent, ${(du / 1e6).toFixed(1)} MB du`);
row('`vhdsync copy --createmeta` (hashes the whole source)', copyCm, 'includes the full read+hash of the source');
row('`rsync --inplace --no-whole-file`', rsync, `literal data ${literal} bytes`);
console.log(`\nRatios: copy / limit ${(copy.seconds / limit.seconds).toFixed(1)}x, rsync / copy ${(rsync.seconds / copy.seconds).toFixed(1)}x, rsync / copy --createmeta ${(rsync.seconds / copyCm.seconds).toFixed(1)}x`);

if (!KEEP) for (const n of [source, target, rsyncTarget, limitOut, diff]) rmSync(n, { force: true });
