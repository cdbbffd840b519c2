/**
 * Our client against a real Samba in the configurations that matter: old dialect without signing,
 * 3.1.1 with mandatory signing, required encryption, and async I/O (interim STATUS_PENDING replies).
 * The oracle is the file smbd wrote on the local disk, plus an in-memory model of the expected bytes.
 */
import { randomBytes } from 'node:crypto';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { jest } from '@jest/globals';
import fc from 'fast-check';
import { haveSamba, SambaServer, type SambaOptions } from './samba-server.js';
import { Dialect, SigningAlgorithm } from '../../src/io/smb/negotiate.js';
import type { SmbClient } from '../../src/io/smb/client.js';
import type { VhdsyncError } from '../../src/util/errors.js';
import { writeAtomically, writeBytesAtomically, writeSizedAtomically, type PositionedWriter } from '../../src/io/atomic.js';
import { Status } from '../../src/io/smb/status.js';
import { FlushFaultProxy } from './fault-proxy.js';
import { Command } from '../../src/io/smb/header.js';
import { isAllZero } from '../../src/util/struct.js';

interface Case {
  name: string;
  server: SambaOptions;
  client?: { sign?: boolean; encrypt?: boolean; dialects?: number[] };
  expect: { dialect: number; signAll: boolean; encryptAll: boolean; signing?: number; interim?: boolean };
}

const cases: Case[] = [
  {
    name: 'SMB 2.0.2 (single-credit 64 KiB requests)',
    server: { maxProtocol: 'SMB2_02', aio: false },
    expect: { dialect: Dialect.SMB202, signAll: false, encryptAll: false },
  },
  {
    name: 'SMB 2.1 without signing',
    server: { maxProtocol: 'SMB2_10', signing: 'disabled', aio: false },
    expect: { dialect: Dialect.SMB210, signAll: false, encryptAll: false },
  },
  {
    name: 'SMB 3.1.1 with signing mandatory',
    server: { minProtocol: 'SMB3_11', signing: 'mandatory', aio: false },
    expect: { dialect: Dialect.SMB311, signAll: true, encryptAll: false, signing: SigningAlgorithm.AES_GMAC },
  },
  {
    name: 'SMB 3.0 with signing mandatory (AES-CMAC)',
    server: { signing: 'mandatory', aio: false },
    client: { dialects: [Dialect.SMB300] },
    expect: { dialect: Dialect.SMB300, signAll: true, encryptAll: false, signing: SigningAlgorithm.AES_CMAC },
  },
  {
    name: 'SMB 2.1 with signing mandatory (HMAC-SHA256)',
    server: { maxProtocol: 'SMB2_10', signing: 'mandatory', aio: false },
    expect: { dialect: Dialect.SMB210, signAll: true, encryptAll: false, signing: SigningAlgorithm.HMAC_SHA256 },
  },
  {
    name: 'encryption required (3.1.1, AES-128-GCM)',
    server: { encrypt: 'required', aio: false },
    expect: { dialect: Dialect.SMB311, signAll: false, encryptAll: true },
  },
  {
    name: 'encryption required with SMB 3.0.2 (AES-128-CCM)',
    server: { encrypt: 'required', aio: false },
    client: { dialects: [Dialect.SMB302] },
    expect: { dialect: Dialect.SMB302, signAll: false, encryptAll: true },
  },
  {
    name: 'async I/O on (interim STATUS_PENDING replies), signing mandatory',
    server: { signing: 'mandatory', aio: true },
    expect: { dialect: Dialect.SMB311, signAll: true, encryptAll: false, interim: true },
  },
];

const run = haveSamba() ? describe : describe.skip;

/** Why a tmpfs cannot be mounted here (the disk-full case needs one), or null when it can. */
function tmpfsProblem(): string | null {
  if (process.getuid?.() !== 0) return 'not root';
  const probe = mkdtempSync(path.join(tmpdir(), 'vhdsync-tmpfs-'));
  try {
    const r = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', probe], { encoding: 'utf8' });
    if (r.status !== 0) return (r.stderr || String(r.error)).trim();
    spawnSync('umount', [probe]);
    return null;
  } finally {
    rmSync(probe, { recursive: true, force: true });
  }
}

/** The one line a failed operation reports. */
const line = (p: Promise<unknown>) => p.then(() => 'succeeded', (e: VhdsyncError) => e.describe());

run.each(cases)('Samba: $name', ({ server: serverOpts, client: clientOpts, expect: want }) => {
  let server: SambaServer;
  let client: SmbClient;
  beforeAll(async () => {
    server = await SambaServer.start(serverOpts);
    client = server.client(clientOpts);
  });
  afterAll(async () => {
    await client?.shutdown();
    server?.stop();
  });

  it('negotiates what the server and client asked for', async () => {
    const conn = await client.connection();
    expect(conn.dialect).toBe(want.dialect);
    expect(conn.security.signAll).toBe(want.signAll);
    expect(conn.security.encryptAll).toBe(want.encryptAll);
    if (want.signing !== undefined) expect(conn.security.signingAlgorithm).toBe(want.signing);
  });

  it('writes and reads back random data at random offsets, matching the file smbd stored', async () => {
    const store = server.store(client);
    const size = 6 << 20;
    const model = Buffer.alloc(size);
    const f = await store.createExclusive('/random.bin');
    try {
      await fc.assert(
        fc.asyncProperty(fc.nat(size - 1), fc.integer({ min: 1, max: 3 << 20 }), fc.boolean(), async (offset, len, doRead) => {
          len = Math.min(len, size - offset);
          if (doRead) {
            const got = await f.read(offset, len);
            const fileEnd = Math.max(0, Math.min(len, (await f.size()) - offset));
            expect(got.length).toBe(fileEnd);
            expect(got.equals(model.subarray(offset, offset + fileEnd))).toBe(true);
          } else {
            const data = randomBytes(len);
            await f.write(offset, data);
            data.copy(model, offset);
          }
        }),
        { numRuns: 25 },
      );
      await f.flush();
      const fileSize = await f.size();
      const local = readFileSync(path.join(server.shareDir, 'random.bin'));
      expect(local.length).toBe(fileSize);
      expect(local.equals(model.subarray(0, fileSize))).toBe(true);
      const conn = await client.connection();
      if (want.interim) expect(conn.interimReplies).toBeGreaterThan(0);
      // Large plain reads skip the frame buffer (signature checked over the placed data); encrypted ones cannot.
      if (want.encryptAll) expect(conn.placedReplies).toBe(0);
      else expect(conn.placedReplies).toBeGreaterThan(0);
    } finally {
      await f.close();
    }
  });

  it('reads a file smbd did not get from us, short at its end', async () => {
    const data = randomBytes((2 << 20) + 12345);
    writeFileSync(path.join(server.shareDir, 'given.bin'), data);
    const store = server.store(client);
    const f = await store.open('/given.bin', 'read');
    try {
      expect(await f.size()).toBe(data.length);
      expect((await f.read(0, data.length + 5000)).equals(data)).toBe(true);
      expect((await f.read(data.length - 10, 100)).equals(data.subarray(data.length - 10))).toBe(true);
      expect((await f.read(data.length + 10, 100)).length).toBe(0);
    } finally {
      await f.close();
    }
  });

  it('reads an image head with the open and answers from it; a closed file reports its size and mtime', async () => {
    const data = randomBytes((1 << 20) + 777);
    writeFileSync(path.join(server.shareDir, 'ahead.bin'), data);
    const store = server.store(client);
    const cuts: Array<[number, number]> = [[0, 8], [65536, 4096], [0, 320 << 10], [300 << 10, 64 << 10], [data.length - 10, 100], [data.length + 5, 10]];
    for (const readAhead of [100, 320 << 10, 4 << 20]) {
      const f = await store.open('/ahead.bin', 'read', { readAhead });
      try {
        expect(await f.size()).toBe(data.length);
        for (const [at, len] of cuts) expect((await f.read(at, len)).equals(data.subarray(Math.min(at, data.length), Math.min(at + len, data.length)))).toBe(true);
      } finally {
        await f.close();
      }
    }
    for (const [name, bytes] of [['tiny.bin', data.subarray(0, 10)], ['empty.bin', Buffer.alloc(0)]] as const) {
      writeFileSync(path.join(server.shareDir, name), bytes);
      const f = await store.open(`/${name}`, 'read', { readAhead: 4096 });
      expect((await f.read(5, 100)).equals(bytes.subarray(5))).toBe(true);
      await f.close();
    }
    // A growing truncation goes out behind the writes; a write past the new end waits for it, so nothing is cut.
    const w = await store.createExclusive('/grown.bin');
    const head = randomBytes(5000);
    const tail = randomBytes(3000);
    await w.write(0, head);
    await w.truncate(1 << 20);
    await w.write((2 << 20) - 1000, tail);
    expect(await w.size()).toBe((2 << 20) + 2000);
    // A truncation to the size the file already has sends nothing.
    const setInfo = jest.spyOn(client, 'setInfo');
    await w.truncate((2 << 20) + 2000);
    expect(setInfo).not.toHaveBeenCalled();
    setInfo.mockRestore();
    expect(w.closedStat!()).toBeNull();
    await w.close();
    const local = readFileSync(path.join(server.shareDir, 'grown.bin'));
    expect(local.length).toBe((2 << 20) + 2000);
    expect(local.subarray(0, 5000).equals(head) && local.subarray((2 << 20) - 1000).equals(tail)).toBe(true);
    expect(isAllZero(local.subarray(5000, (2 << 20) - 1000))).toBe(true);
    // What the CLOSE reply said is what a stat says afterwards.
    expect(w.closedStat!()).toEqual(await store.stat('/grown.bin'));
    // A read-only handle answers with what its CREATE reply said (the same a stat says); a writable one says nothing.
    const r = await store.open('/grown.bin', 'read');
    expect(r.openedStat!()).toEqual(await store.stat('/grown.bin'));
    await r.close();
    expect(r.openedStat!()).toBeNull();
    const rw = await store.open('/grown.bin', 'readwrite');
    expect(rw.openedStat!()).toBeNull();
    await rw.close();
  });

  it('sets size, renames, lists, deletes', async () => {
    const store = server.store(client);
    await store.mkdirp('/dir/sub');
    const f = await store.createExclusive('/dir/sub/a.bin');
    await f.truncate(5000);
    expect(await f.size()).toBe(5000);
    await f.truncate(10);
    await f.close();
    expect(readFileSync(path.join(server.shareDir, 'dir/sub/a.bin')).length).toBe(10);
    await store.rename('/dir/sub/a.bin', '/dir/b.bin');
    expect((await store.list('/dir')).sort()).toEqual(['b.bin', 'sub']);
    expect(await store.stat('/dir/b.bin')).toMatchObject({ size: 10, isDirectory: false });
    expect(await store.stat('/dir/sub')).toMatchObject({ isDirectory: true });
    const other = await store.createExclusive('/dir/ünï €.bin');
    await other.write(0, Buffer.from('newer'));
    await other.close();
    await store.rename('/dir/ünï €.bin', '/dir/b.bin'); // replaces, as writeAtomically's overwrite needs
    expect(readFileSync(path.join(server.shareDir, 'dir/b.bin'), 'utf8')).toBe('newer');
    await store.unlink('/dir/b.bin');
    expect(await store.stat('/dir/b.bin')).toBeNull();
    expect(await store.list('/dir')).toEqual(['sub']);
    await expect(store.unlink('/dir/sub')).rejects.toThrow(/is a directory/);
  });

  it('compound requests: small files written, flushed and renamed, read, listed in one round trip each', async () => {
    const store = server.store(client);
    await store.mkdirp('/cmp');
    const small = randomBytes(3000);
    await store.writeNew!('/cmp/new.bin', small, { flush: true });
    expect(readFileSync(path.join(server.shareDir, 'cmp/new.bin')).equals(small)).toBe(true);
    expect(await line(store.writeNew!('/cmp/new.bin', small))).toMatch(/cmp\/new\.bin: already exists$/);
    await store.writeNew!('/cmp/empty.bin', Buffer.alloc(0));
    const big = randomBytes((2 << 20) + 5); // several WRITEs in the one chain
    await store.writeNew!('/cmp/big.bin', big, { flush: true });
    expect(readFileSync(path.join(server.shareDir, 'cmp/big.bin')).equals(big)).toBe(true);
    const bigger = randomBytes((4 << 20) + 1); // more than one chain carries: a handle of its own
    await store.writeNew!('/cmp/bigger.bin', bigger);
    expect(readFileSync(path.join(server.shareDir, 'cmp/bigger.bin')).equals(bigger)).toBe(true);
    rmSync(path.join(server.shareDir, 'cmp/bigger.bin'));

    expect(await store.readSmall!('/cmp/new.bin', 4096)).toMatchObject({ bytes: small, size: small.length });
    expect((await store.readSmall!('/cmp/new.bin', 100))!.bytes.equals(small.subarray(0, 100))).toBe(true);
    expect(await store.readSmall!('/cmp/empty.bin', 100)).toMatchObject({ size: 0, bytes: Buffer.alloc(0) });
    expect((await store.readSmall!('/cmp/big.bin', 4 << 20))!.bytes.equals(big)).toBe(true);
    expect(await store.readSmall!('/cmp/missing', 100)).toBeNull();
    expect(await store.readSmall!('/cmp', 100)).toBeNull();

    // A flush by name in one chain; a rename that finds its destination taken leaves the file under its old name.
    await store.flushByName!('/cmp/empty.bin');
    expect(await line(store.rename('/cmp/empty.bin', '/cmp/new.bin', { replace: false }))).toMatch(/cmp\/new\.bin: already exists$/);
    await store.rename('/cmp/empty.bin', '/cmp/new.bin', { replace: true });
    expect(readFileSync(path.join(server.shareDir, 'cmp/new.bin')).length).toBe(0);
    expect(await line(store.flushByName!('/cmp/gone.bin'))).toMatch(/cmp\/gone\.bin: no such file/);

    // More entries than two QUERY_DIRECTORY answers hold: listed again on a handle of its own.
    const names = Array.from({ length: 1200 }, (_, i) => `entry-with-a-long-name-${String(i).padStart(5, '0')}.bin`);
    mkdirSync(path.join(server.shareDir, 'cmp/many'));
    for (const n of names) writeFileSync(path.join(server.shareDir, 'cmp/many', n), '');
    expect((await store.list('/cmp/many')).sort()).toEqual(names);
    expect((await store.list('/cmp')).sort()).toEqual(['big.bin', 'many', 'new.bin']);
    // Every handle was closed: the directory can go.
    rmSync(path.join(server.shareDir, 'cmp'), { recursive: true });
    expect(await store.stat('/cmp')).toBeNull();
  });

  it('a small file laid out in memory and published in two chains; a write failing mid-chain leaves the old file, no temp', async () => {
    const reason = tmpfsProblem();
    if (reason) return console.warn(`skipped: cannot mount a tmpfs (${reason})`);
    const store = server.store(client);
    const dir = path.join(server.shareDir, 'full');
    mkdirSync(dir);
    // A file system with room for 256 KiB: the server itself fails a WRITE in the middle of the chain (disk full).
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=256k,mode=0777', 'tmpfs', dir]);
    try {
      const loc = { store, path: '/full/list.bin' };
      const fill = (bytes: Buffer) => async (out: PositionedWriter) => {
        // Out of order, as writeMetafile writes (the header last): positions land where they say.
        await out.write(100, bytes.subarray(100));
        await out.write(0, bytes.subarray(0, 100));
      };
      const old = randomBytes(1000);
      await writeSizedAtomically(loc, old.length, fill(old));
      expect(readFileSync(path.join(dir, 'list.bin')).equals(old)).toBe(true);
      const tooBig = randomBytes(600 << 10);
      expect(await line(writeSizedAtomically(loc, tooBig.length, fill(tooBig), { overwrite: true }))).toMatch(/\/full\/list\.bin: no space left on share$/);
      expect(readFileSync(path.join(dir, 'list.bin')).equals(old)).toBe(true);
      expect(readdirSync(dir)).toEqual(['list.bin']);
      const fresh = randomBytes(100 << 10);
      await writeSizedAtomically(loc, fresh.length, fill(fresh), { overwrite: true });
      expect(readFileSync(path.join(dir, 'list.bin')).equals(fresh)).toBe(true);
      expect(readdirSync(dir)).toEqual(['list.bin']);
    } finally {
      execFileSync('umount', [dir]);
      rmSync(dir, { recursive: true });
    }
  });

  it('a small file is flushed inside its create chain (the FLUSH answer checked); a CLOSE that fails there publishes nothing', async () => {
    const store = server.store(client);
    const loc = { store, path: '/chainflush.bin' };
    const fill = (bytes: Buffer) => async (out: PositionedWriter) => void (await out.write(0, bytes));
    const old = randomBytes(3000);
    const original = client.openChain.bind(client);
    const chains = jest.spyOn(client, 'openChain');
    await writeSizedAtomically(loc, old.length, fill(old));
    // Samba runs a related chain's rename even after its FLUSH failed: the flush must come with the data, in chain 1.
    const sent = chains.mock.calls.map((call) => call[2].map((op) => op.command));
    expect(sent.filter((ops) => ops.includes(Command.WRITE))).toEqual([[Command.WRITE, Command.FLUSH]]);
    // A write-back error reported only at close (NFS, Ceph, quotas under the share): the file is not published.
    chains.mockImplementation(async (...args) => {
      const result = await original(...args);
      return args[2].some((op) => op.command === Command.WRITE) ? { ...result, closed: false } : result;
    });
    expect(await line(writeSizedAtomically(loc, 5000, fill(randomBytes(5000)), { overwrite: true }))).toMatch(/failed to close the file after writing it/);
    chains.mockRestore();
    expect(readFileSync(path.join(server.shareDir, 'chainflush.bin')).equals(old)).toBe(true);
    expect(readdirSync(server.shareDir).filter((n) => n.includes('chainflush'))).toEqual(['chainflush.bin']);
  });

  it('a FLUSH that fails is answered before any rename: nothing is published, the old file stays, no temp is left', async () => {
    // The fault proxy reads the traffic to pick the FLUSHes it fails: not possible encrypted (same code path).
    if (want.encryptAll) return;
    const proxy = await FlushFaultProxy.start(server.port, (name) => name.includes('flushfail'), Status.DISK_FULL);
    const faulty = server.client({ ...clientOpts, port: proxy.port });
    const dir = path.join(server.shareDir, 'ff');
    mkdirSync(dir);
    try {
      const store = server.store(faulty);
      const old = randomBytes(1000);
      writeFileSync(path.join(dir, 'flushfail.bin'), old);
      // A large file written through a handle (writeAtomically's own flush), and a small one (the flush in its create).
      const big = randomBytes((5 << 20) + 7);
      const viaHandle = writeAtomically(
        { store, path: '/ff/flushfail.bin' },
        async (temp) => {
          const f = await store.createExclusive(temp.path);
          try {
            await f.write(0, big);
          } finally {
            await f.close();
          }
        },
        { overwrite: true },
      );
      expect(await line(viaHandle)).toMatch(/\/ff\/flushfail\.bin: no space left on share$/);
      expect(await line(writeBytesAtomically({ store, path: '/ff/flushfail.bin' }, randomBytes(3000), { overwrite: true }))).toMatch(/no space left on share$/);
      expect(await line(writeBytesAtomically({ store, path: '/ff/new-flushfail.bin' }, randomBytes(3000)))).toMatch(/no space left on share$/);
      expect(readFileSync(path.join(dir, 'flushfail.bin')).equals(old)).toBe(true);
      expect(readdirSync(dir)).toEqual(['flushfail.bin']);
      writeFileSync(path.join(dir, 'kept-flushfail.bin'), old);
      expect(await line(store.flushByName!('/ff/kept-flushfail.bin'))).toMatch(/no space left on share$/);
      expect(proxy.failed).toBe(4);
    } finally {
      await faulty.shutdown();
      await proxy.stop();
      rmSync(dir, { recursive: true });
    }
  });

  it('lists with a wildcard evaluated by the server', async () => {
    const store = server.store(client);
    await store.mkdirp('/wild');
    for (const n of ['b1.vhdx', 'b2.vhdx', 'c.vhdx', 'b3.bin']) await (await store.createExclusive(`/wild/${n}`)).close();
    const hits = await store.listMatching('/wild', 'b*.vhdx');
    expect(hits.map((e) => e.name).sort()).toEqual(['b1.vhdx', 'b2.vhdx']);
    expect(hits.every((e) => !e.isDirectory && e.size === 0)).toBe(true);
  });
});

run('Samba: a share that alone requires encryption', () => {
  let server: SambaServer;
  beforeAll(async () => {
    server = await SambaServer.start({ aio: false });
  });
  afterAll(() => server?.stop());

  it('encrypts that tree only, and reads back what it wrote', async () => {
    const client = server.client();
    try {
      const data = randomBytes((3 << 20) + 77);
      const f = await server.store(client, 'enc').createExclusive('/secret.bin');
      await f.write(0, data);
      expect((await f.read(0, data.length)).equals(data)).toBe(true);
      await f.close();
      const conn = await client.connection();
      expect(conn.security.encryptAll).toBe(false);
      expect(conn.encryptedTrees.size).toBe(1);
      expect(readFileSync(path.join(server.dir, 'enc', 'secret.bin')).equals(data)).toBe(true);
      // The plain share on the same session stays unencrypted.
      await server.store(client).stat('/');
      expect(conn.encryptedTrees.size).toBe(1);
    } finally {
      await client.shutdown();
    }
  });

  it('refuses it clearly over SMB 2.1, which cannot encrypt', async () => {
    const client = server.client({ dialects: [Dialect.SMB210] });
    try {
      await expect(server.store(client, 'enc').stat('/x')).rejects.toThrow(/permission denied|requires encryption/);
    } finally {
      await client.shutdown();
    }
  });
});
