/**
 * Credentials and failures through the CLI against a private Samba: `--smb-credentials FILE`, environment
 * variables with UNC paths, signing and encryption switches; wrong password, unknown share, missing file and
 * the like each end with one clear line. No run ever prints a password (every run is checked by `vs`).
 */
import { copyFileSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { expectOneLineError } from '../helpers/cli.js';
import { makeTempDir } from '../helpers/tmp.js';
import { run } from '../helpers/tools.js';
import { qemuSame } from '../cli/sync-helpers.js';
import { PASSWORD, SambaServer, USER } from './samba-server.js';
import { haveWorkflowTools, makeImagePair, passwordEnv, secret, smbBase, vs, vsOk, usePrivateCli, type ImagePair } from './workflow-helpers.js';

const go = haveWorkflowTools() ? describe : describe.skip;

go('SMB credentials and failures through the CLI', () => {
  let server: SambaServer;
  let S: string;
  let img: ImagePair;
  const { dir, cleanup } = makeTempDir('vhdsync-smb-creds-');
  const local = (...p: string[]) => path.join(server.shareDir, ...p);
  const file = (name: string, text: string) => {
    const f = path.join(dir, name);
    writeFileSync(f, text, { mode: 0o600 });
    return f;
  };

  beforeAll(async () => {
    usePrivateCli(dir);
    server = await SambaServer.start();
    S = smbBase(server);
    img = makeImagePair(dir);
    mkdirSync(local('vm'));
    run('qemu-img', ['convert', '-f', 'raw', '-O', 'vhdx', img.baseRaw, local('vm/disk.vhdx')]);
  });
  afterAll(() => {
    server?.stop();
    cleanup();
  });

  it('--smb-credentials FILE (mount.cifs style, DOMAIN/user too), environment variables with UNC paths', async () => {
    const creds = file('creds', `username=${USER}\npassword=${PASSWORD}\n`);
    const domainCreds = file('creds-domain', `username=TESTGROUP/${USER}\npassword=${PASSWORD}\n`);
    const unc = `\\\\127.0.0.1\\share\\vm\\disk.vhdx`;
    const [a, b, c, d] = await Promise.all([
      vsOk(['--smb-credentials', creds, 'info', `${S}/vm/disk.vhdx`]),
      vsOk(['--smb-credentials', domainCreds, 'get', `smb://127.0.0.1:${server.port}/share/vm/disk.vhdx`, 'format']),
      vsOk(['get', unc, 'virtual-size'], { VHDSYNC_SMB_USER: USER, VHDSYNC_SMB_PASSWORD: PASSWORD, VHDSYNC_SMB_PORT: String(server.port) }),
      vsOk(['get', unc, 'virtual-size'], { VHDSYNC_SMB_CREDENTIALS: creds, VHDSYNC_SMB_PORT: String(server.port) }),
    ]);
    expect(a.stdout).toContain(`File:                   ${S}/vm/disk.vhdx`);
    expect(b.stdout.trim()).toBe('vhdx');
    expect(c.stdout.trim()).toBe(String(64 << 20));
    expect(d.stdout.trim()).toBe(String(64 << 20));
  });

  it('VHDSYNC_SMB_SIGN and VHDSYNC_SMB_ENCRYPT; the whole cycle on the share that requires encryption', async () => {
    const E = `smb://${USER}@127.0.0.1:${server.port}/enc`;
    const signed = { ...passwordEnv(), VHDSYNC_SMB_SIGN: '1' };
    await vsOk(['convert', img.baseRaw, `${E}/e.vhdx`], signed);
    expect(qemuSame(path.join(server.dir, 'enc/e.vhdx'), 'vhdx', img.baseRaw, 'raw').same).toBe(true);
    await vsOk(['createmeta', `${E}/e.vhdx`], signed);
    await vsOk(['copy', '--createmeta', img.srcVhdx, `${E}/e.vhdx`], signed);
    await vsOk(['merge', `${E}/e_diff.vhdx`], passwordEnv());
    expect(qemuSame(path.join(server.dir, 'enc/e.vhdx'), 'vhdx', img.srcRaw, 'raw').same).toBe(true);
    const r = await vsOk(['createmeta', `${S}/vm/disk.vhdx`], { ...passwordEnv(), VHDSYNC_SMB_ENCRYPT: 'yes' });
    expect(r.stdout).toContain(`${S}/vm/disk.vhdx.blocklist.bin`);
  });

  it('wrong password, unknown share, missing file, and the rest: one line each, no password shown', async () => {
    const wrong = secret('Wrong-Pass-77');
    const inUrl = secret('Url-Pass-99');
    const wrongCreds = file('wrong', `username=${USER}\npassword=${wrong}\n`);
    const closed = await closedPort();
    const cases: Array<[string[], NodeJS.ProcessEnv, number, RegExp]> = [
      [['--smb-credentials', wrongCreds, 'info', `${S}/vm/disk.vhdx`], {}, 1, new RegExp(`^vhdsync: ${USER}@127.0.0.1:${server.port}: logon failure \\(wrong user name or password\\)$`)],
      [['info', `${S}/vm/disk.vhdx`], { VHDSYNC_SMB_PASSWORD: wrong }, 1, /logon failure \(wrong user name or password\)$/],
      [['info', `smb://${USER}@127.0.0.1:${server.port}/nosuchshare/disk.vhdx`], passwordEnv(), 1, new RegExp(`//127.0.0.1:${server.port}/nosuchshare: no such share$`)],
      [['info', `${S}/vm/missing.vhdx`], passwordEnv(), 1, new RegExp(`^vhdsync: ${S}/vm/missing.vhdx: no such file or directory$`)],
      [['copy', img.srcRaw, `${S}/vm/missing.vhdx`], passwordEnv(), 1, /missing\.vhdx: no such file or directory$/],
      [['convert', img.srcRaw, `${S}/nodir/x.vhdx`], passwordEnv(), 1, new RegExp(`${S}/nodir: no such directory$`)],
      [['info', `${S}/vm/disk.vhdx`], {}, 2, /no SMB password: set VHDSYNC_SMB_PASSWORD or use --smb-credentials FILE$/],
      [['info', `smb://127.0.0.1:${server.port}/share/vm/disk.vhdx`], passwordEnv(), 2, /no SMB user/],
      [['info', `smb://${USER}:${inUrl}@127.0.0.1:${server.port}/share/vm/disk.vhdx`], passwordEnv(), 2, /passwords are not accepted in URLs/],
      [['--smb-credentials', path.join(dir, 'none'), 'info', `${S}/vm/disk.vhdx`], {}, 2, /none: cannot read SMB credentials file$/],
      [['info', `smb://${USER}@127.0.0.1:${closed}/share/disk.vhdx`], passwordEnv(), 1, new RegExp(`cannot connect to 127.0.0.1:${closed}: connection refused$`)],
      [['info', `${S}/vm/disk.vhdx`], { ...passwordEnv(), VHDSYNC_SMB_TIMEOUT: 'soon' }, 2, /bad VHDSYNC_SMB_TIMEOUT 'soon'/],
      [['info', `${S}/vm/100%.vhdx`], passwordEnv(), 2, /bad %-escape in '100%\.vhdx' \(write a literal % as %25\) in SMB location/],
    ];
    const results = await Promise.all(cases.map(([args, env]) => vs(args, env)));
    results.forEach((r, i) => {
      const [args, , status, pattern] = cases[i];
      try {
        expectOneLineError(r, status, pattern);
      } catch (err) {
        throw new Error(`vhdsync ${args.join(' ')}: ${(err as Error).message}`);
      }
    });
    // Even a stack trace (--debug) does not carry the password.
    const debug = await vs(['--debug', 'info', `${S}/vm/disk.vhdx`], { VHDSYNC_SMB_PASSWORD: wrong });
    expect(debug.status).toBe(1);
    expect(debug.stderr).toMatch(/logon failure/);
  });

  it('copy onto a read-only share: permission denied, nothing left behind', async () => {
    const ro = path.join(server.dir, 'ro');
    run('qemu-img', ['convert', '-f', 'raw', '-O', 'vhdx', img.baseRaw, path.join(ro, 't.vhdx')]);
    // The target's metafile, made locally and placed on the server beside it.
    const there = path.join(dir, 'ro-t.vhdx');
    copyFileSync(path.join(ro, 't.vhdx'), there);
    await vsOk(['createmeta', there]);
    copyFileSync(`${there}.blocklist.bin`, path.join(ro, 't.vhdx.blocklist.bin'));
    const roUrl = `smb://${USER}@127.0.0.1:${server.port}/ro/t.vhdx`;
    const r = await vs(['copy', '--createmeta', img.srcRaw, roUrl], passwordEnv());
    expectOneLineError(r, 1, /\/ro\/.*: permission denied$/);
    expect(readdirSync(ro).sort()).toEqual(['t.vhdx', 't.vhdx.blocklist.bin']);
  });
});

/** A port with nothing listening on it. */
async function closedPort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}
