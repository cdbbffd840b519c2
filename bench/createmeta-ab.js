#!/usr/bin/env node
// createmeta of several builds against `xxhsum -H2`, the rows of bench/overview.js's createmeta lines (a random raw
// image, the same content as a dynamic VHDX, a dynamic VHD and a qcow2 of 64 KiB clusters), every contestant of a row interleaved run by run,
// whole processes, each file read into the page cache right before its run; median wall (min-max), CPU (user + sys)
// and peak RSS. Not part of CI. Builds are private copies (bin/ dist/ build/ package.json and a node_modules link):
//   scripts/bench-priority.sh node bench/createmeta-ab.js [--runs N] [--size-gib N] [--dir DIR] [--formats raw,qcow2] \
//     before=/tmp/vA/bin/vhdsync.js after=/tmp/vB/bin/vhdsync.js 'nosubs=/tmp/vB/bin/vhdsync.js@VHDSYNC_NATIVE_SUBS=0'
// (a label, `=`, the build's bin/vhdsync.js, optionally `@NAME=VALUE` set in its environment).
import { rmSync } from 'node:fs';
import * as path from 'node:path';
import { benchDir, header, load, median, opt, randomFile, run, sh } from './lib.js';

const RUNS = Number(opt('--runs', 7));
const SIZE = Number(opt('--size-gib', 4)) * 2 ** 30;
const DIR = benchDir('vhdsync-bench-overview');
const FORMATS = String(opt('--formats', 'raw,vhdx,vhd,qcow2')).split(',');
const CONVERT = { vhdx: ['-O', 'vhdx', '-o', 'subformat=dynamic'], vhd: ['-O', 'vpc', '-o', 'subformat=dynamic'], qcow2: ['-O', 'qcow2', '-o', 'cluster_size=64k'] };
const builds = process.argv.slice(2).filter((a, i, all) => /^[\w.-]+=/.test(a) && !/^--/.test(all[i - 1] ?? '')).map((a) => {
  const [label, rest] = [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)];
  const [bin, env] = rest.split('@');
  return { label, bin, env: env ? { [env.slice(0, env.indexOf('='))]: env.slice(env.indexOf('=') + 1) } : {} };
});
if (builds.length === 0) throw new Error('name at least one build: LABEL=/path/to/bin/vhdsync.js');

const raw = path.join(DIR, 'image.raw');
randomFile(raw, SIZE);
for (const ext of FORMATS.filter((f) => f !== 'raw')) {
  if (!CONVERT[ext]) throw new Error(`--formats: no ${ext} (raw, vhdx, vhd, qcow2)`);
  rmSync(path.join(DIR, `image.${ext}`), { force: true });
  sh('qemu-img', ['convert', '-f', 'raw', ...CONVERT[ext], raw, path.join(DIR, `image.${ext}`)]);
}
header('createmeta A/B', RUNS);

/** One timed run under /usr/bin/time: wall seconds, CPU seconds, peak RSS in MiB. */
function timed(cmd, argv, env) {
  const t = process.hrtime.bigint();
  const r = run('/usr/bin/time', ['-f', 'CPU %U %S RSS %M', cmd, ...argv], { env: { ...process.env, ...env } });
  const m = /CPU ([\d.]+) ([\d.]+) RSS (\d+)\s*$/.exec(r.stderr);
  return { s: Number(process.hrtime.bigint() - t) / 1e9, cpu: Number(m[1]) + Number(m[2]), rss: Number(m[3]) / 1024 };
}

console.log('| image | contestant | wall, median (min-max) | CPU | peak RSS | ratio to xxhsum, wall (CPU) |\n|---|---|---|---|---|---|');
for (const ext of FORMATS) {
  const img = path.join(DIR, `image.${ext}`);
  const cs = [{ label: '`xxhsum -H2` of the raw', cmd: 'xxhsum', argv: ['-H2', raw], file: raw, env: {} }];
  for (const b of builds) cs.push({ label: b.label, cmd: process.execPath, argv: [b.bin, 'createmeta', '-q', img], file: img, env: b.env });
  const res = cs.map(() => []);
  for (let r = 0; r < RUNS; r++) {
    cs.forEach((c, i) => {
      sh('sh', ['-c', 'cat "$1" > /dev/null', 'sh', c.file]);
      res[i].push(timed(c.cmd, c.argv, c.env));
    });
  }
  const peer = { s: median(res[0].map((x) => x.s)), cpu: median(res[0].map((x) => x.cpu)) };
  cs.forEach((c, i) => {
    const s = res[i].map((x) => x.s);
    const cpu = median(res[i].map((x) => x.cpu));
    const wall = median(s);
    console.log(`| ${ext} | ${c.label} | ${wall.toFixed(2)} s (${Math.min(...s).toFixed(2)}-${Math.max(...s).toFixed(2)}) | ${cpu.toFixed(2)} s | ${median(res[i].map((x) => x.rss)).toFixed(0)} MiB | ${(wall / peer.s).toFixed(2)}x (${(cpu / peer.cpu).toFixed(2)}x) |`);
  });
}
console.log(`\nload average at the end: ${load()}`);
