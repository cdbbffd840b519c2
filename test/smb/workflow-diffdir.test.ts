/**
 * `copy --diffdir` across the local/SMB boundary, both ways: the diff is written where the user asks (on the
 * share for a local target, locally for a target on the share), moved with smbclient (a client nobody here
 * wrote) to where its parent locators expect it, and merged there. qemu-img compare is the oracle.
 */
import { existsSync, mkdirSync } from 'node:fs';
import * as path from 'node:path';
import { makeTempDir } from '../helpers/tmp.js';
import { run } from '../helpers/tools.js';
import { qemuSame } from '../cli/sync-helpers.js';
import { PASSWORD, SambaServer, USER } from './samba-server.js';
import { haveWorkflowTools, makeImagePair, passwordEnv, partials, smbBase, vsOk, usePrivateCli, type ImagePair } from './workflow-helpers.js';

const go = haveWorkflowTools() ? describe : describe.skip;

go('copy --diffdir between a local disk and an SMB share', () => {
  let server: SambaServer;
  let S: string;
  let img: ImagePair;
  const { dir, cleanup } = makeTempDir('vhdsync-smb-diffdir-');
  const env = passwordEnv();
  const local = (...p: string[]) => path.join(server.shareDir, ...p);
  /** Runs smbclient commands on the test share (how a user would move files by hand). */
  const smbclient = (cmds: string) =>
    run('smbclient', ['-s', path.join(server.dir, 'smb.conf'), '-p', String(server.port), '//127.0.0.1/share', '-U', `${USER}%${PASSWORD}`, '-c', cmds]);

  beforeAll(async () => {
    usePrivateCli(dir);
    server = await SambaServer.start();
    S = smbBase(server);
    img = makeImagePair(dir);
    for (const d of ['dd', 'dd2']) mkdirSync(local(d));
  });
  afterAll(() => {
    server?.stop();
    cleanup();
  });

  it('local VHDX target, diff written onto the share, fetched back and merged locally', async () => {
    const work = path.join(dir, 'a');
    mkdirSync(work);
    const target = path.join(work, 'lt.vhdx');
    run('qemu-img', ['convert', '-f', 'raw', '-O', 'vhdx', '-o', 'subformat=dynamic,block_size=1M', img.baseRaw, target]);
    await vsOk(['createmeta', target]);

    const r = await vsOk(['copy', '--createmeta', img.srcRaw, target, '--diffdir', `${S}/dd`], env);
    expect(r.stdout).toContain(`${S}/dd/lt_diff.vhdx: `);
    expect(r.stdout).toContain(`move it (and ${S}/dd/lt_diff.vhdx.blocklist.bin) to ${path.join(work, 'lt_diff.vhdx')}`);
    expect(existsSync(local('dd/lt_diff.vhdx')) && existsSync(local('dd/lt_diff.vhdx.blocklist.bin'))).toBe(true);
    expect(existsSync(path.join(work, 'lt_diff.vhdx'))).toBe(false);
    expect(partials(local('dd'))).toEqual([]);

    smbclient(`cd dd; lcd ${work}; get lt_diff.vhdx; get lt_diff.vhdx.blocklist.bin`);
    await vsOk(['merge', path.join(work, 'lt_diff.vhdx')]);
    expect(qemuSame(target, 'vhdx', img.srcRaw, 'raw').same).toBe(true);
    expect(JSON.parse((await vsOk(['check', '--json', img.srcRaw, target])).stdout).changedBlocks).toBe(0);
  });

  it('VHD target on the share, diff written locally, put onto the share with smbclient and merged there', async () => {
    const work = path.join(dir, 'b');
    mkdirSync(work);
    await vsOk(['convert', img.baseRaw, `${S}/dd2/t.vhd`], env);
    await vsOk(['createmeta', `${S}/dd2/t.vhd`], env);

    const r = await vsOk(['copy', '--createmeta', img.srcVhdx, `${S}/dd2/t.vhd`, '--diffdir', work], env);
    expect(r.stdout).toContain(`to ${S}/dd2/t_diff.vhd, then run vhdsync merge there`);
    expect(existsSync(path.join(work, 't_diff.vhd'))).toBe(true);
    expect(existsSync(local('dd2/t_diff.vhd'))).toBe(false);

    smbclient(`cd dd2; lcd ${work}; put t_diff.vhd; put t_diff.vhd.blocklist.bin`);
    await vsOk(['merge', `${S}/dd2/t_diff.vhd`], env);
    expect(qemuSame(local('dd2/t.vhd'), 'vpc', img.srcRaw, 'raw').same).toBe(true);
    expect(existsSync(local('dd2/t_diff.vhd'))).toBe(false);
    expect(JSON.parse((await vsOk(['check', '--json', img.srcVhdx, `${S}/dd2/t.vhd`], env)).stdout).changedBlocks).toBe(0);
  });
});
