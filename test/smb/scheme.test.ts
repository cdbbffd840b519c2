import { mkdirSync, writeFileSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { makeTempDir } from '../helpers/tmp.js';
import { haveSamba, PASSWORD, SambaServer, USER } from './samba-server.js';
import { closeAllSmbSessions, parseSmbLocation, readCredentialsFile, resolveCredentials } from '../../src/io/smb/scheme.js';
import { displayLocation, parseLocation, sibling } from '../../src/io/location.js';
import { writeAtomically } from '../../src/io/atomic.js';
import { smbName } from '../../src/io/smb/store.js';
import { UsageError } from '../../src/util/errors.js';

describe('SMB location parsing', () => {
  it('reads smb:// URLs with domain, user, port, share and path', () => {
    expect(parseSmbLocation('smb://CORP;alice@files.example:4455/backups/vm/disk.vhdx')).toEqual({
      host: 'files.example',
      port: 4455,
      user: 'alice',
      domain: 'CORP',
      share: 'backups',
      path: '/vm/disk.vhdx',
    });
    expect(parseSmbLocation('smb://nas/share')).toMatchObject({ host: 'nas', port: null, user: null, share: 'share', path: '/' });
    expect(parseSmbLocation('smb://bob@[::1]/s/a%20b.vhd')).toMatchObject({ host: '::1', user: 'bob', path: '/a b.vhd' });
  });
  it('reads UNC paths', () => {
    expect(parseSmbLocation('\\\\nas\\backups\\vm\\disk.vhdx')).toMatchObject({ host: 'nas', share: 'backups', path: '/vm/disk.vhdx' });
  });
  it('refuses passwords in URLs without echoing them', () => {
    let msg = '';
    try {
      parseSmbLocation('smb://alice:hunter2@nas/share/x');
    } catch (err) {
      expect(err).toBeInstanceOf(UsageError);
      msg = (err as UsageError).describe();
    }
    expect(msg).toMatch(/passwords are not accepted/);
    expect(msg).not.toContain('hunter2');
  });
  it('refuses a location without a share', () => {
    expect(() => parseSmbLocation('smb://nas/')).toThrow(/missing share/);
    expect(() => parseSmbLocation('\\\\nas')).toThrow(/missing host or share/);
  });
  it('maps store paths to SMB names', () => {
    expect(smbName('/a/b/c.vhdx')).toBe('a\\b\\c.vhdx');
    expect(smbName('/')).toBe('');
    expect(smbName('/a/../b/')).toBe('b');
  });
});

describe('SMB credentials', () => {
  const { dir, cleanup } = makeTempDir();
  afterAll(cleanup);
  it('reads a mount.cifs credentials file, DOMAIN/user form included', () => {
    const f = path.join(dir, 'creds');
    writeFileSync(f, '# comment\nusername=CORP/alice\npassword= spaced pass=\n');
    expect(readCredentialsFile(f)).toEqual({ user: 'alice', password: ' spaced pass=', domain: 'CORP' });
  });
  it('takes the URL user first, then the file, then the environment', () => {
    const f = path.join(dir, 'creds2');
    writeFileSync(f, 'username=fileuser\npassword=filepass\ndomain=FILEDOM\n');
    const parts = parseSmbLocation('smb://urluser@nas/share/x');
    expect(resolveCredentials(parts, { VHDSYNC_SMB_CREDENTIALS: f, VHDSYNC_SMB_PASSWORD: 'envpass' })).toEqual({
      user: 'urluser',
      password: 'filepass',
      domain: 'FILEDOM',
    });
    expect(resolveCredentials(parseSmbLocation('smb://nas/share/x'), { VHDSYNC_SMB_USER: 'u', VHDSYNC_SMB_PASSWORD: 'p', VHDSYNC_SMB_DOMAIN: 'D' })).toEqual({
      user: 'u',
      password: 'p',
      domain: 'D',
    });
  });
  it('says what is missing', () => {
    expect(() => resolveCredentials(parseSmbLocation('smb://nas/share/x'), {})).toThrow(/no SMB user/);
    expect(() => resolveCredentials(parseSmbLocation('smb://u@nas/share/x'), {})).toThrow(/no SMB password/);
    expect(() => resolveCredentials(parseSmbLocation('smb://u@nas/share/x'), { VHDSYNC_SMB_CREDENTIALS: path.join(dir, 'none') })).toThrow(
      /cannot read SMB credentials file/,
    );
  });
});

const run = haveSamba() ? describe : describe.skip;

run('smb:// locations end to end', () => {
  let server: SambaServer;
  beforeAll(async () => {
    server = await SambaServer.start();
    process.env.VHDSYNC_SMB_PASSWORD = PASSWORD;
    process.env.VHDSYNC_SMB_PORT = String(server.port);
  });
  afterAll(async () => {
    await closeAllSmbSessions();
    delete process.env.VHDSYNC_SMB_PASSWORD;
    delete process.env.VHDSYNC_SMB_PORT;
    server?.stop();
  });

  it('parseLocation gives an SMB store that writes atomically and displays without the password', async () => {
    const loc = await parseLocation(`smb://${USER}@127.0.0.1/share/vm/disk.raw`);
    expect(loc.store.kind).toBe('smb');
    expect(displayLocation(loc)).toBe(`smb://${USER}@127.0.0.1:${server.port}/share/vm/disk.raw`);
    await loc.store.mkdirp(loc.store.paths.dirname(loc.path));
    const data = Buffer.from('hello over smb');
    await writeAtomically(loc, async (temp) => {
      const f = await temp.store.createExclusive(temp.path);
      await f.write(0, data);
      await f.close();
    });
    expect(readFileSync(path.join(server.shareDir, 'vm/disk.raw'))).toEqual(data);
    const next = sibling(loc, 'disk_diff.raw');
    expect(displayLocation(next)).toBe(`smb://${USER}@127.0.0.1:${server.port}/share/vm/disk_diff.raw`);
    expect(await loc.store.list('/vm')).toEqual(['disk.raw']);
  });

  it('lists a directory that needs several QUERY_DIRECTORY replies', async () => {
    const dir = path.join(server.shareDir, 'many');
    mkdirSync(dir);
    const names = Array.from({ length: 1500 }, (_, i) => `file-with-a-longish-name-${String(i).padStart(5, '0')}.vhdx`);
    for (const n of names) writeFileSync(path.join(dir, n), '');
    const loc = await parseLocation(`smb://${USER}@127.0.0.1/share/many`);
    expect((await loc.store.list(loc.path)).sort()).toEqual(names);
  });

  it('UNC paths reach the same pooled store', async () => {
    const a = await parseLocation(`smb://${USER}@127.0.0.1/share/vm/disk.raw`);
    process.env.VHDSYNC_SMB_USER = USER;
    try {
      const b = await parseLocation(`\\\\127.0.0.1\\share\\vm\\disk.raw`);
      expect(b.store).toBe(a.store);
      expect(await b.store.stat(b.path)).toMatchObject({ size: 14 });
    } finally {
      delete process.env.VHDSYNC_SMB_USER;
    }
  });
});
