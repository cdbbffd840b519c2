/**
 * smbd killed and restarted under a transfer: positioned I/O reconnects, reopens and retries, and the
 * result is either complete and correct or a clear error; never a half-written file under its final name.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, renameSync, utimesSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { haveSamba, SambaServer } from './samba-server.js';
import { FlushFaultProxy } from './fault-proxy.js';
import { writeAtomically } from '../../src/io/atomic.js';
import type { SmbClient } from '../../src/io/smb/client.js';
import { VhdsyncError } from '../../src/util/errors.js';

const run = haveSamba() ? describe : describe.skip;

run('SMB reconnect after smbd restarts', () => {
  let server: SambaServer;
  let client: SmbClient;
  beforeAll(async () => {
    server = await SambaServer.start({ signing: 'mandatory' });
    client = server.client({ reconnectMs: 15000 });
  });
  afterAll(async () => {
    await client?.shutdown();
    server?.stop();
  });

  it('finishes an atomic write begun before the restart, with the right bytes', async () => {
    const store = server.store(client);
    const data = randomBytes(24 << 20);
    const chunk = 1 << 20;
    const generationBefore = client.generation;
    await writeAtomically({ store, path: '/restart.bin' }, async (temp) => {
      const f = await store.createExclusive(temp.path);
      try {
        for (let off = 0; off < data.length; off += 4 * chunk) {
          const writes = [0, 1, 2, 3].map((i) => f.write(off + i * chunk, data.subarray(off + i * chunk, off + (i + 1) * chunk)));
          // Kill while four writes are in flight, then bring the server back on the same port.
          if (off === 8 * chunk) {
            server.kill();
            server.restart();
          }
          await Promise.all(writes);
        }
      } finally {
        await f.close();
      }
    });
    expect(client.generation).toBeGreaterThan(generationBefore);
    expect(readFileSync(path.join(server.shareDir, 'restart.bin')).equals(data)).toBe(true);
    expect(readdirSync(server.shareDir).filter((n) => n.includes('partial'))).toEqual([]);
  });

  it('a FLUSH that ran but whose answer was lost with its connection is reported as unknown, never sent again', async () => {
    // A resent FLUSH would answer success even when the first one's fsync failed: Linux reports a write-back error once.
    const proxy = await FlushFaultProxy.start(server.port, (name) => name.includes('lostanswer'), 'lose-answer');
    const viaProxy = server.client({ reconnectMs: 15000, port: proxy.port });
    try {
      const store = server.store(viaProxy);
      const f = await store.createExclusive('/lostanswer.bin');
      try {
        await f.write(0, randomBytes(1 << 20));
        const line = await f.flush().then(() => 'flushed', (e: VhdsyncError) => e.describe());
        expect(line).toMatch(/lostanswer\.bin: connection .* lost .* during a flush; whether the file's data is stored is unknown$/);
      } finally {
        await f.close().catch(() => undefined);
      }
      expect(proxy.failed).toBe(1);
      // The same for a flush by name (CREATE + FLUSH + CLOSE): the chain is not sent again.
      const named = await store.flushByName!('/lostanswer.bin').then(() => 'flushed', (e: VhdsyncError) => e.describe());
      expect(named).toMatch(/lostanswer\.bin: connection .* lost .* during flush; it may or may not have happened$/);
      expect(proxy.failed).toBe(2);
    } finally {
      await viaProxy.shutdown();
      await proxy.stop();
    }
  });

  it('a flush after smbd restarted unnoticed (this process busy meanwhile) goes out on the new connection', async () => {
    const store = server.store(client);
    const data = randomBytes(1 << 20);
    const f = await store.createExclusive('/unnoticed.bin');
    try {
      await f.write(0, data);
      await f.read(0, 10);
      const generationBefore = client.generation;
      // Synchronous: the event loop has not seen the connection close when the flush starts (as after SIGSTOP).
      server.kill();
      server.restart();
      await f.flush();
      expect(client.generation).toBeGreaterThan(generationBefore);
    } finally {
      await f.close();
    }
    expect(readFileSync(path.join(server.shareDir, 'unnoticed.bin')).equals(data)).toBe(true);
  });

  it('reads through a restart', async () => {
    const store = server.store(client);
    const f = await store.open('/restart.bin', 'read');
    try {
      const first = await f.read(0, 1 << 20);
      server.kill();
      server.restart();
      const rest = await f.read(1 << 20, 3 << 20);
      const local = readFileSync(path.join(server.shareDir, 'restart.bin'));
      expect(Buffer.concat([first, rest]).equals(local.subarray(0, 4 << 20))).toBe(true);
    } finally {
      await f.close();
    }
  });

  it("a read-only file's identity stays the first open's across a restart; a file replaced meanwhile fails its reads", async () => {
    const store = server.store(client);
    const at = path.join(server.shareDir, 'ident.bin');
    const twinAt = path.join(server.shareDir, 'twin.bin');
    writeFileSync(at, randomBytes(2 << 20));
    writeFileSync(twinAt, randomBytes(1 << 20));
    execFileSync('touch', ['-d', '@1700000000.123456789', twinAt]);
    writeFileSync(path.join(server.shareDir, 'kept.bin'), randomBytes(1 << 20));
    const cloneAt = path.join(server.shareDir, 'clone.bin');
    writeFileSync(cloneAt, randomBytes(1 << 20));
    const same = await store.open('/kept.bin', 'read');
    const replaced = await store.open('/ident.bin', 'read');
    const twin = await store.open('/twin.bin', 'read');
    const clone = await store.open('/clone.bin', 'read');
    try {
      await twin.read(0, 4096);
      await clone.read(0, 4096);
      const first = replaced.openedStat!();
      const kept = same.openedStat!();
      expect(first).toMatchObject({ size: 2 << 20 });
      const head = await same.read(0, 4096);
      // While the server is down, one file is replaced by another (new size and mtime), the other left as it was.
      server.kill();
      writeFileSync(at, randomBytes(3 << 20));
      utimesSync(at, new Date(), new Date(Date.now() + 5000));
      // And one by a file of the same size whose times were kept to the millisecond (as a tool copying them through
      // milliseconds leaves them): only the ChangeTime, to 100 ns, tells them apart.
      writeFileSync(`${twinAt}.new`, randomBytes(1 << 20));
      execFileSync('touch', ['-d', '@1700000000.123', `${twinAt}.new`]);
      renameSync(`${twinAt}.new`, twinAt);
      // And one by a file of the same size whose times were copied to the nanosecond (touch -r, rsync -t): only its
      // on-disk identity (the QFid create context) tells them apart.
      writeFileSync(`${cloneAt}.new`, randomBytes(1 << 20));
      execFileSync('touch', ['-r', cloneAt, `${cloneAt}.new`]);
      renameSync(`${cloneAt}.new`, cloneAt);
      server.restart();
      expect((await same.read(0, 4096)).equals(head)).toBe(true);
      expect(same.openedStat!()).toEqual(kept);
      const line = await replaced.read(0, 4096).then(() => 'read', (e: VhdsyncError) => e.describe());
      expect(line).toMatch(/ident\.bin: changed on the server while the connection was re-established/);
      // The identity is still the file first opened, and every later read fails the same way.
      expect(replaced.openedStat!()).toEqual(first);
      await expect(replaced.read(1 << 20, 10)).rejects.toThrow(/changed on the server/);
      await expect(twin.read(0, 4096)).rejects.toThrow(/changed on the server while the connection was re-established/);
      await expect(clone.read(0, 4096)).rejects.toThrow(/changed on the server while the connection was re-established/);
    } finally {
      await same.close();
      await replaced.close();
      await twin.close();
      await clone.close();
    }
  });

  it('fails with one clear line when the server stays down, leaving no file under the final name', async () => {
    const store = server.store(client);
    const quick = server.client({ reconnectMs: 1500 });
    const quickStore = server.store(quick);
    let caught: unknown;
    try {
      await writeAtomically({ store: quickStore, path: '/never.bin' }, async (temp) => {
        const f = await quickStore.createExclusive(temp.path);
        await f.write(0, randomBytes(1 << 20));
        server.kill();
        await f.write(1 << 20, randomBytes(1 << 20));
      });
    } catch (err) {
      caught = err;
    } finally {
      server.restart();
      await quick.shutdown();
    }
    expect(caught).toBeInstanceOf(VhdsyncError);
    const line = (caught as VhdsyncError).describe();
    expect(line).not.toContain('\n');
    expect(line).toMatch(/never\.bin.*(cannot connect|lost)/);
    expect(existsSync(path.join(server.shareDir, 'never.bin'))).toBe(false);
    expect(await store.stat('/never.bin')).toBeNull();
  });
});
