#!/usr/bin/env node
// `node bench/serve.js [SIZE_MIB] [ROUNDS]` (after `npm run build`): curl downloads and uploads SIZE_MIB (default
// 1024) of raw disk over loopback, from/to `vhdsync serve` and from/to a trivial Node file server (fs streams
// piped to and from the socket) in the same run, best of ROUNDS (default 3) each, and prints the ratios; then 8
// concurrent VHD exports of 8 different disks against one. The disk is random data (no zero blocks to skip).
import { spawn, spawnSync } from 'node:child_process';
import { createReadStream, createWriteStream, mkdtempSync, rmSync, statSync, writeFileSync, openSync, writeSync, closeSync } from 'node:fs';
import * as http from 'node:http';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const sizeMiB = Number(process.argv[2] ?? 1024);
const rounds = Number(process.argv[3] ?? 3);
const dir = mkdtempSync(path.join(tmpdir(), 'bench-serve-'));
const disks = path.join(dir, 'disks');
spawnSync('mkdir', [disks]);

function fill(file, mib) {
  const fd = openSync(file, 'w');
  const chunk = randomBytes(1 << 20);
  for (let i = 0; i < mib; i++) {
    chunk.writeUInt32LE(i, 0);
    writeSync(fd, chunk);
  }
  closeSync(fd);
}

/** curl without its 1 s Expect wait, run asynchronously (the trivial server lives in this process). */
const curl = (args) => curlAsync(['-H', 'Expect:', ...args]);

async function curlAsync(args) {
  const t = process.hrtime.bigint();
  await new Promise((resolve, reject) => {
    const c = spawn('curl', ['-sS', '-o', '/dev/null', ...args]);
    c.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`curl exit ${code}`))));
  });
  return Number(process.hrtime.bigint() - t) / 1e9;
}

async function best(fn) {
  let b = Infinity;
  for (let i = 0; i < rounds; i++) b = Math.min(b, await fn());
  return b;
}

fill(path.join(disks, 'd.raw'), sizeMiB);
fill(path.join(dir, 'up.raw'), sizeMiB);

// The trivial server: GET streams the file, PUT streams the body into it.
const plain = http.createServer((req, res) => {
  const file = path.join(disks, 'plain.raw');
  if (req.method === 'GET') {
    res.writeHead(200, { 'Content-Length': statSync(path.join(disks, 'd.raw')).size });
    createReadStream(path.join(disks, 'd.raw')).pipe(res);
  } else {
    req.pipe(createWriteStream(file, { flags: 'r+' })).on('finish', () => res.end());
  }
});
writeFileSync(path.join(disks, 'plain.raw'), '');
await new Promise((r) => plain.listen(0, '127.0.0.1', r));
const plainUrl = `http://127.0.0.1:${plain.address().port}`;

const srv = spawn(process.execPath, [path.join(root, 'bin/vhdsync.js'), 'serve', disks, '--listen', '127.0.0.1:0', '-q'], { stdio: ['ignore', 'pipe', 'inherit'] });
// -q silences the log, so find the port by asking the OS which one the child listens on.
let serveUrl = null;
for (let i = 0; i < 100 && !serveUrl; i++) {
  await new Promise((r) => setTimeout(r, 100));
  const ss = spawnSync('ss', ['-ltnpH'], { encoding: 'utf8' }).stdout ?? '';
  const m = ss.split('\n').find((l) => l.includes(`pid=${srv.pid},`));
  const port = m && /127\.0\.0\.1:(\d+)/.exec(m)?.[1];
  if (port) serveUrl = `http://127.0.0.1:${port}`;
}
if (!serveUrl) throw new Error('serve did not start');

const plainGet = await best(() => curl([`${plainUrl}/`]));
const serveGet = await best(() => curl([`${serveUrl}/export_raw_vdi?vdi=d.raw`]));
const plainPut = await best(() => curl(['-T', path.join(dir, 'up.raw'), `${plainUrl}/`]));
const servePut = await best(() => curl(['-T', path.join(dir, 'up.raw'), `${serveUrl}/import_raw_vdi?vdi=d.raw`]));
const mbps = (s) => ((sizeMiB * 1.048576) / s).toFixed(0);
console.log(`download ${sizeMiB} MiB: plain ${plainGet.toFixed(2)} s (${mbps(plainGet)} MB/s), serve ${serveGet.toFixed(2)} s (${mbps(serveGet)} MB/s), ratio ${(serveGet / plainGet).toFixed(2)}`);
console.log(`upload   ${sizeMiB} MiB: plain ${plainPut.toFixed(2)} s (${mbps(plainPut)} MB/s), serve ${servePut.toFixed(2)} s (${mbps(servePut)} MB/s), ratio ${(servePut / plainPut).toFixed(2)}`);

// 8 different disks of SIZE/8, exported as VHD one after another, then all at once.
const part = Math.max(16, Math.floor(sizeMiB / 8));
for (let i = 0; i < 8; i++) fill(path.join(disks, `c${i}.raw`), part);
const one = await curlAsync([`${serveUrl}/export_raw_vdi?vdi=c0.raw&format=vhd`]);
const t = process.hrtime.bigint();
await Promise.all(Array.from({ length: 8 }, (_, i) => curlAsync([`${serveUrl}/export_raw_vdi?vdi=c${i}.raw&format=vhd`])));
const eight = Number(process.hrtime.bigint() - t) / 1e9;
console.log(`VHD export of one ${part} MiB disk: ${one.toFixed(2)} s; 8 different disks at once: ${eight.toFixed(2)} s (${((8 * one) / eight).toFixed(2)}x the throughput of one)`);

srv.kill('SIGTERM');
plain.close();
rmSync(dir, { recursive: true, force: true });
