#!/usr/bin/env node
// QCOW2 read benchmarks (results: docs/performance.md, "QCOW2").
// Run after `npm run build`:  node bench/qcow2.js [--dir DIR] [--runs N] [--size GiB] [--keep] [--no-createmeta]
//  1. `vhdsync convert` of a fully allocated qcow2 (64 KiB clusters, random data) to raw vs `qemu-img convert -O raw`
//     (and vs `qemu-img convert -t writeback`, which flushes its output as vhdsync does)
//  2. `vhdsync createmeta` of that qcow2 vs `xxhsum -H2` of the same content as raw
// Everything in the page cache (a warm-up read at the start, and before each createmeta contestant). Prints a Markdown table.
// VHDSYNC_BIN_BEFORE: a second build in the convert rows (A/B, interleaved with the rest).
import { rmSync } from 'node:fs';
import * as path from 'node:path';
import { BIN, BIN_BEFORE, GiB, benchDir, flag, header, interleavedRuns, opt, randomFile, sh } from './lib.js';

const RUNS = Number(opt('--runs', 3));
const SIZE = Number(opt('--size', 4)) * GiB;
const DIR = benchDir('vhdsync-bench-qcow2');
const raw = path.join(DIR, 'content.raw');
const img = path.join(DIR, 'image.qcow2');
const out = path.join(DIR, 'out.raw');

header('qcow2', RUNS);
randomFile(raw, SIZE);
rmSync(img, { force: true });
sh('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', '-o', 'cluster_size=64k', raw, img]);
sh('sh', ['-c', 'cat "$1" "$2" > /dev/null', 'sh', raw, img]);
const clean = () => rmSync(out, { force: true });

const rows = [];
const pair = (what, ours, peer, peerName) => rows.push([what, `${ours.seconds.toFixed(2)} s (${ours.min.toFixed(2)}-${ours.max.toFixed(2)})`, `${peerName} ${peer.seconds.toFixed(2)} s (${peer.min.toFixed(2)}-${peer.max.toFixed(2)})`, `${(ours.seconds / peer.seconds).toFixed(2)}x`]);

// qemu-img convert writes with cache=unsafe (no flush); vhdsync flushes its output before renaming it into place.
// The same durability in qemu: -t writeback, which flushes the output at the end. The three run interleaved.
const [qemu, ours, qemuFlushed, before] = interleavedRuns(RUNS, [
  { cmd: 'qemu-img', argv: ['convert', '-f', 'qcow2', '-O', 'raw', img, out], before: clean },
  { cmd: process.execPath, argv: [BIN, 'convert', img, out], before: clean },
  { cmd: 'qemu-img', argv: ['convert', '-t', 'writeback', '-f', 'qcow2', '-O', 'raw', img, out], before: clean },
  ...(BIN_BEFORE ? [{ cmd: process.execPath, argv: [BIN_BEFORE, 'convert', img, out], before: clean }] : []),
]);
pair(`convert ${SIZE / GiB} GiB qcow2 (64 KiB clusters, full) -> raw`, ours, qemu, '`qemu-img convert -O raw`');
pair(`the same, qemu-img flushing its output as vhdsync does`, ours, qemuFlushed, '`qemu-img convert -t writeback -O raw`');
if (before) pair(`the same, build before (VHDSYNC_BIN_BEFORE)`, before, qemu, '`qemu-img convert -O raw`');
clean();
if (!flag('--no-createmeta')) {
  // Each file read into the page cache right before its run: the converts above wrote and dropped 4 GiB each time,
  // and on a machine short of memory that evicted parts of one image or the other (bench/createmeta-ab.js does the same).
  const warm = (file) => () => sh('sh', ['-c', 'cat "$1" > /dev/null', 'sh', file]);
  const [xxh, meta] = interleavedRuns(RUNS, [
    { cmd: 'xxhsum', argv: ['-H2', raw], before: warm(raw) },
    { cmd: process.execPath, argv: [BIN, 'createmeta', img], before: warm(img) },
  ]);
  pair(`createmeta of that qcow2 (2 MiB blocks, XXH128)`, meta, xxh, '`xxhsum -H2` of the raw');
}

console.log('| what | ours, median (min-max) | peer, same run | ratio |');
console.log('|---|---|---|---|');
for (const r of rows) console.log(`| ${r.join(' | ')} |`);
if (!flag('--keep')) rmSync(DIR, { recursive: true, force: true });
