/**
 * The run lock on a real Samba share: there, creating exclusively, renaming aside and deleting go through our SMB
 * client (CREATE with FILE_CREATE, SET_INFO rename and disposition), not the local file system's calls.
 */
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { parseLocation } from '../../src/io/location.js';
import { closeAllSmbSessions } from '../../src/io/schemes.js';
import { lockImage } from '../../src/sync/lock.js';
import { AlreadyExistsError, BusyError } from '../../src/util/errors.js';
import { raceRounds, Racers } from '../unit/sync/lock-racers.js';
import { haveSamba, PASSWORD, SambaServer, USER } from './samba-server.js';

const go = haveSamba() ? describe : describe.skip;

go('image locks on an SMB share', () => {
  let server: SambaServer;
  const url = (name: string) => `smb://${USER}@127.0.0.1:${server.port}/share/${name}`;
  beforeAll(async () => {
    server = await SambaServer.start();
    process.env.VHDSYNC_SMB_PASSWORD = PASSWORD;
  });
  afterAll(async () => {
    await closeAllSmbSessions();
    delete process.env.VHDSYNC_SMB_PASSWORD;
    server?.stop();
  });

  it("lets exactly one of several processes take over a killed run's lock, every time (60 rounds)", async () => {
    const racers = new Racers(path.resolve('dist'), url('race.vhdx'), 3, { VHDSYNC_SMB_PASSWORD: PASSWORD });
    try {
      await racers.ready();
      expect(await raceRounds(racers, path.join(server.shareDir, 'race.vhdx.vhdsync-lock'), 60)).toEqual([]);
    } finally {
      await racers.quit();
    }
    expect(readdirSync(server.shareDir).filter((n) => n.startsWith('race.'))).toEqual([]);
  });

  it('renews the lease on the share and refuses a second run; release removes the lock', async () => {
    const img = await parseLocation(url('held.vhdx'));
    const timing = { leaseMs: 3000, renewMs: 100, authorityMs: 1000 };
    const held = await lockImage(img, 'merge', timing);
    await new Promise((r) => setTimeout(r, 1500));
    const lockFile = path.join(server.shareDir, 'held.vhdx.vhdsync-lock');
    expect(JSON.parse(readFileSync(lockFile, 'utf8')).generation).toBeGreaterThan(2);
    await expect(lockImage(img, 'copy', timing)).rejects.toBeInstanceOf(BusyError);
    held.check();
    await held.release();
    expect(existsSync(lockFile)).toBe(false);
  });

  it('renames without replacing on the share (ReplaceIfExists = 0), as the lock and copy rely on', async () => {
    const loc = await parseLocation(url('x'));
    const store = loc.store;
    writeFileSync(path.join(server.shareDir, 'r1'), 'one');
    writeFileSync(path.join(server.shareDir, 'r2'), 'two');
    const err = await store.rename('/r1', '/r2', { replace: false }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AlreadyExistsError);
    expect((err as AlreadyExistsError).describe()).toMatch(/share\/r2: already exists$/);
    expect(readFileSync(path.join(server.shareDir, 'r2'), 'utf8')).toBe('two');
    await store.rename('/r1', '/r3', { replace: false });
    expect(readFileSync(path.join(server.shareDir, 'r3'), 'utf8')).toBe('one');
    await store.rename('/r3', '/r2');
    expect(readFileSync(path.join(server.shareDir, 'r2'), 'utf8')).toBe('one');
  });
});
