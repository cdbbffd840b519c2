/**
 * Requests the server never ran are sent again; those it may have run are not. A change that must not run twice (a
 * rename, an exclusive create, a flush by name) used to fail the run as "unknown" whenever its connection ended, even
 * when the server had refused it for a session or share it no longer knew, or the request had not yet left this
 * process. A handle's FLUSH stays "unknown" then: the server closed the file (see the test).
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import * as path from 'node:path';
import { haveSamba, SambaServer } from './samba-server.js';
import type { SmbClient } from '../../src/io/smb/client.js';
import { Command } from '../../src/io/smb/header.js';
import { serializeEmptyRequest } from '../../src/io/smb/simple.js';
import { ConnectionLostError, NotRunError } from '../../src/io/smb/status.js';
import type { VhdsyncError } from '../../src/util/errors.js';

const run = haveSamba() ? describe : describe.skip;

/** The smbd processes that are children of the server's main one. */
function children(server: SambaServer): number[] {
  const main = readFileSync(path.join(server.dir, 'smbd.pid'), 'utf8').trim();
  try {
    return execFileSync('pgrep', ['-P', main], { encoding: 'utf8' }).split('\n').filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

run('SMB requests the server never ran', () => {
  let server: SambaServer;
  let client: SmbClient;
  beforeAll(async () => {
    // Few credits, so that requests queue in this process for them.
    server = await SambaServer.start({ signing: 'mandatory', maxCredits: 32 });
    client = server.client({ reconnectMs: 15000 });
  });
  afterAll(async () => {
    await client?.shutdown();
    server?.stop();
  });

  /** The administrator closes the share (smbcontrol close-share): the server forgets our tree and its open files. */
  function closeShare(): void {
    execFileSync('smbcontrol', ['-s', path.join(server.dir, 'smb.conf'), 'smbd', 'close-share', 'share'], { stdio: 'ignore' });
  }

  /** Whether some connection has the share in use (smbstatus lists its tree connects). */
  function shareInUse(): boolean {
    const out = execFileSync('smbstatus', ['-s', path.join(server.dir, 'smb.conf'), '-S'], { encoding: 'utf8' });
    return out.split('\n').some((line) => line.split(/\s+/)[0] === 'share');
  }

  /** Waits until the server has dropped the tree (smbcontrol only queues the message), so the next request meets it. */
  async function settle(): Promise<void> {
    for (const until = Date.now() + 10000; shareInUse(); ) {
      if (Date.now() > until) throw new Error('smbd did not close the share within 10 s');
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  it('a rename, a flush by name, an exclusive create and a new file each go out again after the share was closed under them; a handle\'s flush does not', async () => {
    const store = server.store(client);
    const data = randomBytes(1 << 20);
    const f = await store.createExclusive('/closed.bin');
    let generation = client.generation;
    try {
      await f.write(0, data);
      const again = async (what: string, op: () => Promise<void>): Promise<void> => {
        expect(shareInUse()).toBe(true);
        closeShare();
        await settle();
        await expect(op()).resolves.toBeUndefined();
        // Each was refused once (NETWORK_NAME_DELETED), then sent on a new connection.
        expect([what, client.generation]).toEqual([what, generation + 1]);
        generation = client.generation;
      };
      // Closing the share closed the file on the server, and on a share over NFS, Ceph or CIFS that close may have
      // taken a write-back error no later FLUSH would see: the handle's flush says it cannot tell.
      closeShare();
      await settle();
      const line = await f.flush().then(() => 'flushed', (e: VhdsyncError) => e.describe());
      expect(line).toMatch(/closed\.bin: SMB share connection on .* ended during a flush; whether the file's data is stored is unknown$/);
      // The next request connects again (the file's handle is reopened by its next call).
      expect(await store.stat('/closed.bin')).toMatchObject({ size: 1 << 20 });
      generation = client.generation;
      await again('rename', () => store.rename('/closed.bin', '/renamed.bin'));
      await again('flush by name', () => store.flushByName!('/renamed.bin'));
      await again('exclusive create', async () => {
        const g = await store.createExclusive('/fresh.bin');
        await g.close();
      });
      await again('new file', () => store.writeNew!('/small.bin', Buffer.from('small'), { flush: true }));
    } finally {
      await f.close();
    }
    const share = server.shareDir;
    expect(readdirSync(share).filter((n) => /closed|renamed|fresh|small/.test(n)).sort()).toEqual(['fresh.bin', 'renamed.bin', 'small.bin']);
    expect(readFileSync(path.join(share, 'renamed.bin')).equals(data)).toBe(true);
    expect(readFileSync(path.join(share, 'small.bin'), 'utf8')).toBe('small');
    expect(existsSync(path.join(share, 'closed.bin'))).toBe(false);
  });

  it('requests waiting for credits when the connection dies are NotRunError; those sent are not', async () => {
    const before = new Set(children(server));
    const own = server.client();
    const conn = await own.connection();
    const mine = children(server).filter((p) => !before.has(p));
    expect(mine).toHaveLength(1);
    // The server takes no more requests off the socket and answers none; then it dies with requests unread.
    process.kill(mine[0], 'SIGSTOP');
    try {
      const echoes = Array.from({ length: 100 }, () => conn.request(Command.ECHO, [serializeEmptyRequest()]).then(() => null, (e: unknown) => e));
      await new Promise((r) => setTimeout(r, 200));
      process.kill(mine[0], 'SIGKILL');
      const outcomes = await Promise.all(echoes);
      const notRun = outcomes.filter((e) => e instanceof NotRunError).length;
      const sent = outcomes.filter((e) => e instanceof ConnectionLostError && !(e instanceof NotRunError)).length;
      // At most the credit window (32) was sent; every request either waited or was sent, and none was answered.
      expect(notRun + sent).toBe(100);
      expect(sent).toBeGreaterThan(0);
      expect(sent).toBeLessThanOrEqual(32);
      expect(notRun).toBeGreaterThanOrEqual(68);
    } finally {
      try {
        process.kill(mine[0], 'SIGKILL');
      } catch {
        // already gone
      }
      await own.shutdown();
    }
  });
});
