#!/usr/bin/env node
// `vhdsync copy` onto an SMB share across a slow link (issue 14 item 5; results: docs/performance.md, "SMB").
// Run as root after `npm run build`:  node bench/smb-latency.js [--size-mib 4096] [--runs 3] [--delay-ms 10] [--dir DIR]
// The default size is the case (1% of a 4 GiB disk, as in its table); it needs about 13 GiB free in DIR (the
// temp folder by default). Smaller images weigh the copy's fixed round trips more against its data.
// A random raw image is the old content; the target is a dynamic VHDX of it on a private smbd on loopback
// (scripts/samba/samba.sh), reached through scripts/latency-proxy.js, which delays every byte DELAY_MS each way
// (round trip 2 x DELAY_MS); the source has 1% of its 64 KiB pieces rewritten at random places; metafiles with
// 64 KiB blocks (so about the changed bytes move). Timed, median of N, interleaved:
//   - `vhdsync copy SOURCE local-target.vhdx` (the same target on local disk): the local copy time;
//   - `vhdsync copy SOURCE smb://...` through the proxy (logon included).
// Then one more share copy per build, untimed, whose requests the proxy counts by command chain (and the round
// trips the copy waited for with nothing else in flight: each costs the link's round trip).
// The goal: the share copy within 1.3x of (local copy time + one round trip per MiB of changed data).
// VHDSYNC_BIN: a private build; VHDSYNC_BIN_BEFORE: another build to compare in the same run (e.g. before a change).
import { spawn } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { BIN, MiB, PIECE, SAMBA, distinctRandom, load, median, opt, randomFile, randomPort, rewritePieces, run, sh, startSamba } from './lib.js';

const SIZE = Number(opt('--size-mib', 4096)) * MiB;
const RUNS = Number(opt('--runs', 3));
const DELAY = Number(opt('--delay-ms', 10));
const BASE_DIR = opt('--dir', tmpdir());
const BEFORE = process.env.VHDSYNC_BIN_BEFORE;
const { user, password } = SAMBA;
const port = randomPort();
const scratch = mkdtempSync(path.join(BASE_DIR, 'vhdsync-bench-smblat-'));
const sambaDir = path.join(scratch, 'samba');
const share = path.join(sambaDir, 'share');
const env = { ...process.env, VHDSYNC_SMB_PASSWORD: password };

/** One run: wall milliseconds and stdout. */
function timed(bin, argv) {
  const t = process.hrtime.bigint();
  const r = run(process.execPath, [bin, ...argv], { env });
  if (r.status !== 0) throw new Error(`${argv.join(' ')}: ${r.stderr}`);
  return { ms: Number(process.hrtime.bigint() - t) / 1e6, out: r.stdout };
}

/** Reports of the proxy's finished connections (its JSON lines: requests by command chain, round trips waited). */
const reports = [];

/** Starts the latency proxy in front of `target`; resolves to its process and port. */
function startProxy(target) {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, [path.resolve('scripts/latency-proxy.js'), String(target), String(DELAY)], { stdio: ['ignore', 'pipe', 'inherit'] });
    p.on('error', reject);
    let text = '';
    p.stdout.on('data', (d) => {
      text += d;
      for (let nl; (nl = text.indexOf('\n')) >= 0; text = text.slice(nl + 1)) {
        const line = text.slice(0, nl);
        const listening = /^listening (\d+)/.exec(line);
        if (listening) resolve({ proc: p, port: Number(listening[1]) });
        else if (line.startsWith('{')) reports.push(JSON.parse(line));
      }
    });
  });
}

/** Waits until the proxy has reported `n` connections (it reports once both sides closed). */
async function reportsOf(n) {
  for (let i = 0; i < 100 && reports.length < n; i++) await new Promise((r) => setTimeout(r, 50));
  return reports.splice(0);
}

/** Prints the requests one copy sent through the proxy, by command chain, and the round trips it waited alone. */
function printCounts(label, conns) {
  const sum = (key) => {
    const out = {};
    for (const c of conns) for (const [k, v] of Object.entries(c[key])) out[k] = (out[k] ?? 0) + v;
    return out;
  };
  const requests = sum('requests');
  const waits = sum('waits');
  const waited = conns.reduce((n, c) => n + c.waited, 0);
  console.log(`\n${label}: ${waited} round trips waited alone (x ${2 * DELAY} ms = ${((waited * 2 * DELAY) / 1000).toFixed(2)} s), ${conns.length} connection(s)`);
  console.log('| requests (command chain) | sent | of which waited alone |');
  console.log('|---|---|---|');
  for (const k of Object.keys(requests).sort((a, b) => requests[b] - requests[a])) console.log(`| ${k} | ${requests[k]} | ${waits[k] ?? 0} |`);
}

let proxy;
try {
  const base = path.join(scratch, 'base.raw');
  const source = path.join(scratch, 'source.raw');
  randomFile(base, SIZE);
  sh('cp', ['--sparse=always', base, source]);
  const fd = openSync(source, 'r+');
  rewritePieces(fd, distinctRandom(SIZE / PIECE, Math.ceil(SIZE / PIECE / 100)));
  closeSync(fd);
  startSamba(sambaDir, port);
  proxy = await startProxy(port);
  const smbTarget = `smb://${user}@127.0.0.1:${proxy.port}/share/target.vhdx`;
  const localTarget = path.join(scratch, 'target.vhdx');
  for (const t of [localTarget, path.join(share, 'target.vhdx')]) sh('qemu-img', ['convert', '-f', 'raw', '-O', 'vhdx', '-o', 'subformat=dynamic', base, t]);
  sh(process.execPath, [BIN, 'createmeta', '--block-size', '64K', source], { env });
  sh(process.execPath, [BIN, 'createmeta', '--block-size', '64K', localTarget], { env });
  sh(process.execPath, [BIN, 'createmeta', '--block-size', '64K', smbTarget], { env });
  const clean = () => {
    for (const d of [path.join(scratch, 'target_diff.vhdx'), path.join(share, 'target_diff.vhdx')]) {
      rmSync(d, { force: true });
      rmSync(d + '.blocklist.bin', { force: true });
    }
  };
  const contestants = [['local', BIN, localTarget], ['share', BIN, smbTarget], ...(BEFORE ? [['share, before', BEFORE, smbTarget]] : [])];
  const times = contestants.map(() => []);
  let changed = 0;
  for (let r = 0; r < RUNS; r++) {
    contestants.forEach(([, bin, target], i) => {
      clean();
      const res = timed(bin, ['copy', '--json', source, target]);
      times[i].push(res.ms);
      changed = JSON.parse(res.out).changedBytes;
    });
  }
  // One more run of each share contestant, untimed, to count what crossed the link.
  const counts = [];
  for (const [name, bin, target] of contestants.filter(([, , t]) => t === smbTarget)) {
    // Reports of earlier runs' connections may still be on their way: let them arrive, then drop them.
    await new Promise((r) => setTimeout(r, 500));
    reports.splice(0);
    clean();
    timed(bin, ['copy', '--json', source, target]);
    counts.push([name, await reportsOf(1)]);
  }
  const [local, smb] = times.map(median);
  const rtt = 2 * DELAY;
  const bound = local + rtt * Math.ceil(changed / MiB);
  console.log(`copy onto an SMB share through a ${DELAY} ms-each-way proxy (round trip ${rtt} ms), ${SIZE / MiB} MiB image, 1% of 64 KiB pieces changed (${(changed / MiB).toFixed(1)} MiB), 64 KiB metafiles; medians of ${RUNS}; load ${load()}`);
  console.log('| contestant | median wall (min-max) |');
  console.log('|---|---|');
  contestants.forEach(([name], i) => console.log(`| ${name} | ${(median(times[i]) / 1000).toFixed(2)} s (${(Math.min(...times[i]) / 1000).toFixed(2)}-${(Math.max(...times[i]) / 1000).toFixed(2)}) |`));
  console.log(`\nbound = local + one round trip per MiB = ${(bound / 1000).toFixed(2)} s; share / bound = ${(smb / bound).toFixed(2)}x (goal <= 1.3x)`);
  for (const [name, conns] of counts) printCounts(`${name}, one more run (untimed)`, conns);
} finally {
  proxy?.proc.kill('SIGTERM');
  run(SAMBA.script, ['stop', sambaDir]);
  rmSync(scratch, { recursive: true, force: true });
}
