#!/usr/bin/env node
// `vhdsync stream` benchmarks (results: docs/performance.md, "stream"), each against a peer in the same run.
// Run after `npm run build`:  nice -n 10 node bench/stream.js [--dir DIR] [--runs N] [--size GiB] [--data GiB] [--keep]
//  1. a dynamic VHDX of SIZE GiB holding DATA GiB (random, in 4 MiB runs spread over the disk) to a VHD file:
//     `vhdsync stream --destination-format vhd` vs `qemu-img convert -O vpc -o subformat=dynamic`
//  2. that VHD stream PUT to an HTTP server on loopback (a separate Node process that reads and discards the body):
//     `vhdsync stream --destination http://...` vs `curl -T` of a file of the same bytes (the VHD from step 1)
//  3. a GET of that VHD from python3's http.server: `vhdsync stream --source http://... --destination null:` (parses
//     the VHD stream as it arrives) vs `curl -o /dev/null`
// Everything in the page cache (each source is read once before the timed runs); each row's two commands run
// interleaved (lib.js interleavedRuns). Prints a Markdown table. VHDSYNC_BIN_BEFORE: a second build in every row (A/B).
import { spawn } from 'node:child_process';
import { closeSync, openSync, rmSync, statSync, writeSync } from 'node:fs';
import { randomFillSync } from 'node:crypto';
import * as path from 'node:path';
import { BUILDS, GiB, MiB, benchDir, flag, header, interleavedRuns, opt, sh } from './lib.js';

const RUNS = Number(opt('--runs', 3));
const SIZE = Number(opt('--size', 4)) * GiB;
const DATA = Number(opt('--data', 1)) * GiB;
const DIR = benchDir('vhdsync-bench-stream');
const raw = path.join(DIR, 'content.raw');
const vhdx = path.join(DIR, 'image.vhdx');
const ours = path.join(DIR, 'ours.vhd');
const peer = path.join(DIR, 'qemu.vhd');

header('stream', RUNS);

// The source: DATA bytes of random data in 4 MiB runs at evenly spread places, the rest never written.
const RUN = 4 * MiB;
const runs = DATA / RUN;
const stride = Math.floor(SIZE / runs / RUN) * RUN;
const fd = openSync(raw, 'w');
const buf = Buffer.allocUnsafe(RUN);
for (let i = 0; i < runs; i++) writeSync(fd, randomFillSync(buf), 0, RUN, i * stride);
closeSync(fd);
sh('truncate', ['-s', String(SIZE), raw]);
rmSync(vhdx, { force: true });
sh('qemu-img', ['convert', '-f', 'raw', '-O', 'vhdx', '-o', 'subformat=dynamic', raw, vhdx]);
rmSync(raw);
sh('sh', ['-c', 'cat "$1" > /dev/null', 'sh', vhdx]);

const rows = [];
const cell = (r) => `${r.seconds.toFixed(2)} s (${r.min.toFixed(2)}-${r.max.toFixed(2)})`;
const pair = (what, a, b, peerName) => rows.push([what, cell(a), `${peerName} ${cell(b)}`, `${(a.seconds / b.seconds).toFixed(2)}x`]);
/** Runs the peer and each build (BUILDS) interleaved; one row per build, named `what` (and "before" for the second). */
const versus = (what, peer, peerName, oursWith) => {
  const [p, ...mine] = interleavedRuns(RUNS, [peer, ...BUILDS.map(([, bin]) => oursWith(bin))]);
  mine.forEach((m, k) => pair(k ? `${what} (before)` : what, m, p, peerName));
};
const clean = (f) => () => rmSync(f, { force: true });

versus(
  `${SIZE / GiB} GiB dynamic VHDX with ${DATA / GiB} GiB of data -> VHD file`,
  { cmd: 'qemu-img', argv: ['convert', '-f', 'vhdx', '-O', 'vpc', '-o', 'subformat=dynamic', vhdx, peer], before: clean(peer) },
  '`qemu-img convert -O vpc`',
  (bin) => ({ cmd: process.execPath, argv: [bin, 'stream', '--source', vhdx, '--destination-format', 'vhd', '--destination', ours, '-q'], before: clean(ours) }),
);

/** Starts a process that prints its port on its first line of stdout; resolves with the port and the process. */
function server(cmd, argv, portFrom) {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    let text = '';
    const onData = (d) => {
      text += d;
      const port = portFrom(text);
      if (port) resolve({ port, proc: p });
    };
    p.stdout.on('data', onData);
    p.stderr.on('data', onData);
    p.on('exit', (code) => reject(new Error(`server exited (${code}): ${text}`)));
  });
}

// A sink: reads each PUT body to its end and answers 200 (what a plain upload server does), in its own process.
const sinkCode = `
const s = require('node:http').createServer((q, r) => { q.on('data', () => {}); q.on('end', () => { r.writeHead(200, { 'Content-Length': 0 }); r.end(); }); });
s.listen(0, '127.0.0.1', () => console.log('port ' + s.address().port));`;
const sink = await server(process.execPath, ['-e', sinkCode], (t) => Number(/port (\d+)/.exec(t)?.[1]) || 0);
try {
  const url = `http://127.0.0.1:${sink.port}/upload/disk.vhd`;
  const bytes = statSync(ours).size;
  versus(
    `that VHDX as a VHD stream (${(bytes / GiB).toFixed(2)} GiB) PUT to a loopback HTTP server`,
    { cmd: 'curl', argv: ['-sS', '-H', 'Expect:', '-T', ours, url] },
    '`curl -T` of the same bytes',
    (bin) => ({ cmd: process.execPath, argv: [bin, 'stream', '--source', vhdx, '--destination-format', 'vhd', '--destination', url, '-q'] }),
  );
} finally {
  sink.proc.kill();
}

const web = await server('python3', ['-u', '-m', 'http.server', '0', '--bind', '127.0.0.1', '--directory', DIR], (t) => Number(/port (\d+)/.exec(t)?.[1]) || 0);
try {
  const url = `http://127.0.0.1:${web.port}/ours.vhd`;
  versus(
    'GET of that VHD stream from python3 http.server, parsed as it arrives',
    { cmd: 'curl', argv: ['-sS', '-o', '/dev/null', url] },
    '`curl -o /dev/null`',
    (bin) => ({ cmd: process.execPath, argv: [bin, 'stream', '--source', url, '--destination', 'null:', '-q'] }),
  );
} finally {
  web.proc.kill();
}

console.log('| what | ours, median (min-max) | peer, same run | ratio |');
console.log('|---|---|---|---|');
for (const r of rows) console.log(`| ${r.join(' | ')} |`);
if (!flag('--keep')) rmSync(DIR, { recursive: true, force: true });
