#!/usr/bin/env node
// createmeta benchmarks (results and how to read them: docs/performance.md, "createmeta").
// Run after `npm run build`:  node bench/createmeta.js [--dir DIR] [--runs N] [--keep] [--skip-vhdx] [--skip-cold]
//  1. digest rates in memory (2 MiB blocks): XXH128, SHA-256, SHA-1
//  2. a 4 GiB random raw image in the page cache: cat, `xxhsum -H2`, `vhdsync createmeta` (median of N runs)
//  3. the same cold (caches dropped before each run), if /proc/sys/vm/drop_caches is writable
//  4. a 100 GiB dynamic VHDX holding 1 GiB of data (made with qemu-img) vs a 10 GiB one with the same data
// Peak memory comes from /usr/bin/time -v when installed. Prints Markdown tables.
import { spawnSync } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import { existsSync, openSync, writeSync, closeSync, ftruncateSync, rmSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { digestBlock } from '../dist/meta/hashers.js';
import { GiB, MiB, benchDir, flag, gbps as rate, header, median, opt, randomFile } from './lib.js';

const RUNS = Number(opt('--runs', 3));
const DIR = benchDir('vhdsync-bench');
const KEEP = flag('--keep');
// This checkout's CLI, like the digests from ../dist above: this script does not read VHDSYNC_BIN.
const BIN = path.resolve('bin/vhdsync.js');
const TIME = existsSync('/usr/bin/time') ? '/usr/bin/time' : null;

const fmt = (s) => `${s.toFixed(2)} s`;

/** Runs a command, returning wall seconds and peak RSS in MiB (null without /usr/bin/time). */
function timed(cmd, argv) {
  const full = TIME ? [TIME, ['-f', '%e %M %U %S', cmd, ...argv]] : [cmd, argv];
  const t = process.hrtime.bigint();
  const r = spawnSync(full[0], full[1], { encoding: 'utf8', maxBuffer: 1 << 26 });
  const wall = Number(process.hrtime.bigint() - t) / 1e9;
  if (r.status !== 0) throw new Error(`${cmd} ${argv.join(' ')} failed: ${r.stderr}`);
  const last = TIME ? r.stderr.trim().split('\n').pop().split(' ') : null;
  return { seconds: wall, peakMiB: last ? Number(last[1]) / 1024 : null, cpu: last ? Number(last[2]) + Number(last[3]) : null, stdout: r.stdout };
}

function medianRuns(fn) {
  const rs = [];
  for (let i = 0; i < RUNS; i++) rs.push(fn());
  const secs = rs.map((r) => r.seconds);
  const m = median(secs);
  const inner = rs.every((r) => r.inner !== undefined) ? median(rs.map((r) => r.inner)) : null;
  const cpu = rs.every((r) => r.cpu !== null) ? median(rs.map((r) => r.cpu)) : null;
  return { seconds: m, min: Math.min(...secs), max: Math.max(...secs), inner, cpu, peakMiB: Math.max(...rs.map((r) => r.peakMiB ?? 0)) || null };
}

const dropCaches = () => {
  try {
    writeFileSync('/proc/sys/vm/drop_caches', '3');
    return true;
  } catch {
    return false;
  }
};

const catNull = (file) => timed('sh', ['-c', 'cat "$1" > /dev/null', 'sh', file]);
/** createmeta's wall time (with Node's startup) and its own `seconds` (without). */
const createmeta = (file, extra = []) => {
  const r = timed(process.execPath, [BIN, 'createmeta', '--json', ...extra, file]);
  return { ...r, inner: JSON.parse(r.stdout)[0].seconds };
};
const row = (cells) => console.log(`| ${cells.join(' | ')} |`);

header('createmeta', RUNS);

// 1. Digest rates in memory.
{
  const block = randomFillSync(Buffer.allocUnsafe(2 * MiB));
  console.log('## Digests in memory (2 MiB blocks, one core)\n');
  row(['digest', 'rate']);
  row(['---', '---']);
  for (const alg of ['xxh128', 'sha256', 'sha1-16']) {
    const total = alg === 'xxh128' ? 8 * GiB : GiB;
    const t = process.hrtime.bigint();
    for (let done = 0; done < total; done += block.length) digestBlock(alg, block);
    const s = Number(process.hrtime.bigint() - t) / 1e9;
    row([alg, rate(total, s)]);
  }
  console.log();
}

// 2 and 3. 4 GiB random raw, warm and cold.
const big = path.join(DIR, 'random-4g.raw');
randomFile(big, 4 * GiB);
{
  console.log(`## 4 GiB random raw image (${big})\n`);
  catNull(big); // warm the page cache
  const cat = medianRuns(() => catNull(big));
  const xx = medianRuns(() => timed('xxhsum', ['-H2', big]));
  const cm = medianRuns(() => createmeta(big));
  row(['page cache', 'wall median (min-max)', 'rate', 'in-process (no startup)', 'CPU user+sys', 'peak RSS']);
  row(['---', '---', '---', '---', '---', '---']);
  const line = (name, r) =>
    row([
      name,
      `${fmt(r.seconds)} (${r.min.toFixed(2)}-${r.max.toFixed(2)})`,
      rate(4 * GiB, r.seconds),
      r.inner !== null ? `${fmt(r.inner)}, ${rate(4 * GiB, r.inner)}` : '',
      r.cpu !== null ? fmt(r.cpu) : 'n/a',
      r.peakMiB ? `${r.peakMiB.toFixed(0)} MiB` : 'n/a',
    ]);
  line('`cat > /dev/null`', cat);
  line('`xxhsum -H2`', xx);
  line('`vhdsync createmeta` (xxh128, 2 MiB)', cm);
  const cmSha = medianRuns(() => createmeta(big, ['--hash', 'sha256']));
  line('`vhdsync createmeta --hash sha256`', cmSha);
  console.log(`\ncreatemeta / xxhsum -H2: ${(cm.seconds / xx.seconds).toFixed(2)} wall, ${(cm.inner / xx.seconds).toFixed(2)} in-process (below 1 = faster)\n`);

  if (flag('--skip-cold')) {
    console.log('cold runs skipped (--skip-cold)\n');
  } else if (!dropCaches()) {
    console.log('cold runs skipped: /proc/sys/vm/drop_caches is not writable here (needs root outside a container)\n');
  } else {
    const cold = (fn) => medianRuns(() => {
      dropCaches();
      return fn();
    });
    const ccat = cold(() => catNull(big));
    const cxx = cold(() => timed('xxhsum', ['-H2', big]));
    const ccm = cold(() => createmeta(big));
    const cnode = cold(() => timed(process.execPath, ['-e', `const fs=require('fs');const fd=fs.openSync(process.argv[1],'r');const b=Buffer.allocUnsafe(1<<22);let p=0,n;while((n=fs.readSync(fd,b,0,b.length,p))>0)p+=n`, big]));
    row(['cold (caches dropped)', 'wall median (min-max)', 'rate', 'in-process (no startup)', 'CPU user+sys', 'peak RSS']);
    row(['---', '---', '---', '---', '---', '---']);
    line('`cat > /dev/null`', ccat);
    line('`xxhsum -H2`', cxx);
    line('`vhdsync createmeta`', ccm);
    line('plain Node `readSync` loop, 4 MiB', cnode);
    console.log(`\ncold createmeta / cat: ${(ccm.seconds / ccat.seconds).toFixed(2)}\n`);
  }
}

// 4. Time follows data, not virtual size.
if (!flag('--skip-vhdx')) {
  console.log('## Dynamic VHDX holding 1 GiB of random data (qemu-img convert)\n');
  const raws = [];
  const make = (virtual) => {
    const raw = path.join(DIR, `data1g-${virtual / GiB}g.raw`);
    const vhdx = raw.replace(/\.raw$/, '.vhdx');
    if (!existsSync(vhdx)) {
      const fd = openSync(raw, 'w');
      ftruncateSync(fd, virtual);
      const buf = Buffer.allocUnsafe(64 * MiB);
      // 16 runs of 64 MiB spread over the disk.
      for (let i = 0; i < 16; i++) writeSync(fd, randomFillSync(buf), 0, buf.length, Math.floor((virtual / 16) * i / (2 * MiB)) * 2 * MiB);
      closeSync(fd);
      timed('qemu-img', ['convert', '-f', 'raw', '-O', 'vhdx', '-o', 'subformat=dynamic', raw, vhdx]);
      rmSync(raw);
    }
    raws.push(vhdx);
    return vhdx;
  };
  row(['virtual size', 'blocks (2 MiB)', 'createmeta wall median', 'in-process', 'peak RSS']);
  row(['---', '---', '---', '---', '---']);
  for (const v of [10 * GiB, 100 * GiB]) {
    const f = make(v);
    catNull(f);
    const r = medianRuns(() => createmeta(f));
    row([`${v / GiB} GiB`, String(v / (2 * MiB)), fmt(r.seconds), fmt(r.inner), r.peakMiB ? `${r.peakMiB.toFixed(0)} MiB` : 'n/a']);
  }
  console.log();
  if (!KEEP) for (const f of raws) rmSync(f, { force: true });
}

if (!KEEP) rmSync(DIR, { recursive: true, force: true });
