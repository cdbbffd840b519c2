#!/usr/bin/env node
// Sequential write and read of one file through our SMB client vs `smbclient put/get`, against a
// private smbd on loopback, with no signing, mandatory signing, and required encryption.
// Run as root after `npm run build`:  node bench/smb.js [MiB=256]
import { execFileSync, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, statSync, unlinkSync } from 'node:fs';
import { loadavg } from 'node:os';
import * as path from 'node:path';
import { tmpdir } from 'node:os';
import { SmbClient } from '../dist/io/smb/client.js';
import { SmbStore } from '../dist/io/smb/store.js';
import { MiB, SAMBA, randomPort, smbclientArgv, smbclientRate, startSamba } from './lib.js';

const size = Number(process.argv[2] ?? 256) * MiB;
const CALL = 16 * MiB; // bytes per read()/write() call; the client splits it into 1 MiB requests in flight together
const { script, user, password } = SAMBA;
const port = randomPort();
const scratch = mkdtempSync(path.join('/dev/shm', 'vhdsync-bench-'));
const source = path.join(scratch, 'source.bin');
writeFileSync(source, randomBytes(size));

const configs = [
  { name: 'plain', args: ['--signing', 'auto'], protection: 'off' },
  { name: 'signed', args: ['--signing', 'mandatory'], protection: 'sign' },
  { name: 'encrypted', args: ['--encrypt', 'required'], protection: 'encrypt' },
];

const mibps = (bytes, ms) => (bytes / MiB / (ms / 1000));

// Wall time, and the client's own CPU time (user+sys): on a shared, loaded machine the CPU time is the steadier figure.
async function timeIt(fn) {
  const t = process.hrtime.bigint();
  const c = process.cpuUsage();
  await fn();
  const cpu = process.cpuUsage(c);
  return { ms: Number(process.hrtime.bigint() - t) / 1e6, cpuMs: (cpu.user + cpu.system) / 1000 };
}

function smbclient(dir, cmd, protection) {
  const t = process.hrtime.bigint();
  const r = spawnSync('/usr/bin/time', ['-f', '%U %S', 'smbclient', ...smbclientArgv(dir, port, cmd, [`--client-protection=${protection}`])], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`smbclient failed: ${r.stderr || r.stdout}`);
  const [u, sy] = r.stderr.trim().split('\n').pop().split(' ').map(Number);
  // smbclient's own rate excludes its start-up, connect and logon: the fair comparison, used for the ratios.
  const kbps = smbclientRate(r.stdout + r.stderr);
  if (kbps === null) throw new Error(`no rate in smbclient output: ${r.stdout}`);
  const ms = (size / 1024 / kbps) * 1000;
  return { ms, wallMs: Number(process.hrtime.bigint() - t) / 1e6, cpuMs: (u + sy) * 1000 };
}

const rows = [];
for (const cfg of configs) {
  const dir = mkdtempSync(path.join(tmpdir(), 'vhdsync-bench-samba-'));
  startSamba(dir, port, cfg.args);
  try {
    const client = new SmbClient({ host: '127.0.0.1', port, credentials: { user, password, domain: '' } });
    const store = new SmbStore(client, 'share', `smb://${user}@127.0.0.1:${port}/share`);
    const data = readFileSync(source);
    await client.connection();

    const ourWrite = await timeIt(async () => {
      const f = await store.createExclusive('/ours.bin');
      for (let off = 0; off < size; off += CALL) await f.write(off, data.subarray(off, Math.min(size, off + CALL)));
      await f.close();
    });
    const buf = Buffer.allocUnsafe(CALL);
    let check = 0;
    const ourRead = await timeIt(async () => {
      const f = await store.open('/ours.bin', 'read');
      for (let off = 0; off < size; off += CALL) {
        const got = await f.read(off, Math.min(CALL, size - off), buf);
        check += got.length;
      }
      await f.close();
    });
    if (check !== size) throw new Error('short read');
    await client.shutdown();

    const theirPut = smbclient(dir, `put ${source} theirs.bin`, cfg.protection);
    const back = path.join(scratch, 'back.bin');
    const theirGet = smbclient(dir, `get theirs.bin ${back}`, cfg.protection);
    if (statSync(back).size !== size) throw new Error('smbclient get size mismatch');
    unlinkSync(back);

    rows.push({
      config: cfg.name,
      write: mibps(size, ourWrite.ms), put: mibps(size, theirPut.ms),
      read: mibps(size, ourRead.ms), get: mibps(size, theirGet.ms),
      cpu: [ourWrite, theirPut, ourRead, theirGet].map((x) => x.cpuMs),
    });
  } finally {
    execFileSync(script, ['stop', dir], { stdio: 'inherit' });
    rmSync(dir, { recursive: true, force: true });
  }
}
rmSync(scratch, { recursive: true, force: true });

const f = (x) => x.toFixed(0).padStart(6);
console.log(`SMB loopback, ${size / MiB} MiB sequential, MiB/s (smbclient: its own reported average rate; ratio = ours / smbclient); load average ${loadavg()[0].toFixed(1)}`);
console.log('config     | our write | smbclient put | ratio | our read | smbclient get | ratio | client CPU s: write/put, read/get');
for (const r of rows) {
  const c = r.cpu.map((ms) => (ms / 1000).toFixed(2));
  console.log(`${r.config.padEnd(10)} | ${f(r.write)}    | ${f(r.put)}        | ${(r.write / r.put).toFixed(2)}  | ${f(r.read)}   | ${f(r.get)}        | ${(r.read / r.get).toFixed(2)}  | ${c[0]}/${c[1]}, ${c[2]}/${c[3]}`);
}
