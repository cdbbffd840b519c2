/**
 * The whole vhdsync workflow with the target on an SMB share, through the built CLI against a private Samba:
 * convert onto the share, createmeta of the remote target (a quoted wildcard expanded by vhdsync), check, copy
 * (the diff written onto the share), merge on the share, then check again. The oracles are qemu-img compare /
 * check and pyvhdi run on the server's own local path, and qemu-made source images.
 */
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { makeTempDir } from '../helpers/tmp.js';
import { pyvhdiRead, run, runStatus } from '../helpers/tools.js';
import { qemuSame } from '../cli/sync-helpers.js';
import { FlushFaultProxy } from './fault-proxy.js';
import { SambaServer, USER } from './samba-server.js';
import { Status } from '../../src/io/smb/status.js';
import { changedBlocks, haveWorkflowTools, makeImagePair, passwordEnv, partials, smbBase, vs, vsOk, usePrivateCli, type ImagePair } from './workflow-helpers.js';

const go = haveWorkflowTools() ? describe : describe.skip;

go('vhdsync workflow with the target on an SMB share', () => {
  let server: SambaServer;
  let S: string;
  let img: ImagePair;
  const { dir, cleanup } = makeTempDir('vhdsync-smb-wf-');
  const env = passwordEnv();
  const local = (...p: string[]) => path.join(server.shareDir, ...p);

  beforeAll(async () => {
    usePrivateCli(dir);
    server = await SambaServer.start();
    S = smbBase(server);
    img = makeImagePair(dir);
    for (const d of ['dir', 'vhd']) mkdirSync(local(d));
  });
  afterAll(() => {
    server?.stop();
    cleanup();
  });

  it('VHDX target: convert onto the share, createmeta by wildcard, check, copy, merge on the share; identical after', async () => {
    // 64 KiB metafile blocks leave partly present 2 MiB diff blocks, so the diff carries sector bitmaps. (libvhdi
    // 20210425 cannot read a differencing VHDX whose chunk has no sector bitmap block: it takes the bitmap from
    // file offset 0, so whole-block diffs are not a fair test of it.)
    const expected = changedBlocks(img.baseRaw, img.srcRaw, 64 * 1024);
    expect(expected).toBeGreaterThanOrEqual(4);

    // convert local -> share (our writer, on the share), checked by qemu on the server's path.
    await vsOk(['convert', img.baseRaw, `${S}/dir/target.vhdx`], env);
    expect(qemuSame(local('dir/target.vhdx'), 'vhdx', img.baseRaw, 'raw').same).toBe(true);
    // A second VHDX the server holds, made by qemu, so the wildcard has two matches.
    run('qemu-img', ['convert', '-f', 'raw', '-O', 'vhdx', img.baseRaw, local('dir/other.vhdx')]);

    const [meta] = await Promise.all([vsOk(['createmeta', '--block-size', '64K', `${S}/dir/*.vhdx`], env), vsOk(['createmeta', '--block-size', '64K', img.srcVhdx])]);
    expect(meta.stdout.trim().split('\n')).toHaveLength(2);
    expect(meta.stdout).toContain(`${S}/dir/other.vhdx.blocklist.bin`);
    expect(meta.stdout).toContain(`${S}/dir/target.vhdx.blocklist.bin`);
    expect(existsSync(local('dir/target.vhdx.blocklist.bin')) && existsSync(local('dir/other.vhdx.blocklist.bin'))).toBe(true);

    const before = JSON.parse((await vsOk(['check', img.srcVhdx, `${S}/dir/target.vhdx`, '--json'], env)).stdout);
    expect(before.changedBlocks).toBe(expected);

    const copy = JSON.parse((await vsOk(['copy', img.srcVhdx, `${S}/dir/target.vhdx`, '--json'], env)).stdout);
    expect(copy).toMatchObject({ diff: `${S}/dir/target_diff.vhdx`, diffFinalLocation: `${S}/dir/target_diff.vhdx`, changedBlocks: expected });
    expect(existsSync(local('dir/target_diff.vhdx')) && existsSync(local('dir/target_diff.vhdx.blocklist.bin'))).toBe(true);
    expect(partials(local('dir'))).toEqual([]);
    // The diff as libvhdi reads it on the server, parented on the target there: exactly the source.
    expect(pyvhdiRead(local('dir/target_diff.vhdx'), local('dir/target.vhdx')).equals(readFileSync(img.srcRaw))).toBe(true);
    // qemu refuses a differencing VHDX: proof that the diff on the share is marked as one.
    expect(runStatus('qemu-img', ['info', '-f', 'vhdx', local('dir/target_diff.vhdx')]).stderr).toMatch(/not supported/i);

    // Locators as Hyper-V reads them: relative, and the UNC path (no smb:// URL, user or port in the file).
    const [infoRun, getRun] = await Promise.all([vsOk(['info', `${S}/dir/target_diff.vhdx`, '--json'], env), vsOk(['get', `${S}/dir/target_diff.vhdx`, 'type'], env)]);
    const info = JSON.parse(infoRun.stdout);
    expect(getRun.stdout.trim()).toBe('differencing');
    expect(info.parentLocator).toMatchObject({ relative_path: '.\\target.vhdx', absolute_win32_path: '\\\\127.0.0.1\\share\\dir\\target.vhdx' });
    expect(run('vhdiinfo', [local('dir/target_diff.vhdx')]).toString()).toContain('Parent filename\t\t: \\\\127.0.0.1\\share\\dir\\target.vhdx\n');

    const merged = await vsOk(['merge', `${S}/dir/target_diff.vhdx`], env);
    expect(merged.stdout).toContain('metafile rotated');
    expect(existsSync(local('dir/target_diff.vhdx'))).toBe(false);
    expect(qemuSame(local('dir/target.vhdx'), 'vhdx', img.srcRaw, 'raw')).toEqual({ same: true, output: 'Images are identical.\n' });
    expect(runStatus('qemu-img', ['check', '-q', '-f', 'vhdx', local('dir/target.vhdx')]).status).toBe(0);

    // check finds nothing, validate re-hashes the merged target on the share, and convert share -> local gives
    // qemu's view of the source through our reader over SMB.
    const [after] = await Promise.all([
      vsOk(['check', img.srcVhdx, `${S}/dir/target.vhdx`, '--json'], env),
      vsOk(['validate', `${S}/dir/target.vhdx`], env),
      vsOk(['convert', `${S}/dir/target.vhdx`, path.join(dir, 'back.raw')], env),
    ]);
    expect(JSON.parse(after.stdout).changedBlocks).toBe(0);
    expect(readFileSync(path.join(dir, 'back.raw')).equals(readFileSync(img.srcRaw))).toBe(true);
  });

  it('VHD target: convert VHDX -> VHD on the share, copy --createmeta from a raw source, merge; identical after', async () => {
    await vsOk(['convert', img.baseVhdx, `${S}/vhd/disk.vhd`], env);
    expect(qemuSame(local('vhd/disk.vhd'), 'vpc', img.baseRaw, 'raw').same).toBe(true);
    await vsOk(['createmeta', `${S}/vhd/disk.vhd`], env);

    const copy = JSON.parse((await vsOk(['copy', '--createmeta', img.srcRaw, `${S}/vhd/disk.vhd`, '--json'], env)).stdout);
    expect(copy.changedBlocks).toBe(changedBlocks(img.baseRaw, img.srcRaw));
    expect(existsSync(`${img.srcRaw}.blocklist.bin`)).toBe(true);
    expect(existsSync(local('vhd/disk_diff.vhd'))).toBe(true);
    const info = JSON.parse((await vsOk(['info', `${S}/vhd/disk_diff.vhd`, '--json'], env)).stdout);
    expect(info.parentLocators).toEqual(['W2ku: \\\\127.0.0.1\\share\\vhd\\disk.vhd', 'W2ru: .\\disk.vhd']);

    await vsOk(['merge', `${S}/vhd/disk_diff.vhd`], env);
    expect(qemuSame(local('vhd/disk.vhd'), 'vpc', img.srcRaw, 'raw')).toEqual({ same: true, output: 'Images are identical.\n' });
    expect(partials(local('vhd'))).toEqual([]);
    const after = JSON.parse((await vsOk(['check', img.srcRaw, `${S}/vhd/disk.vhd`, '--json'], env)).stdout);
    expect(after.changedBlocks).toBe(0);
  });

  it("a copy whose diff's FLUSH fails publishes no diff, says why in one line, and a rerun then succeeds", async () => {
    mkdirSync(local('ff'));
    run('qemu-img', ['convert', '-f', 'raw', '-O', 'vhdx', '-o', 'subformat=dynamic', img.baseRaw, local('ff/target.vhdx')]);
    await vsOk(['createmeta', '--block-size', '64K', `${S}/ff/target.vhdx`], env);
    // Only the diff's own FLUSH fails (its temp name), as a server's failed fsync would answer it.
    const proxy = await FlushFaultProxy.start(server.port, (name) => /target_diff\.vhdx\.[0-9a-f]{8}\.partial$/.test(name), Status.DISK_FULL);
    try {
      const args = ['copy', '--createmeta', img.srcRaw, `smb://${USER}@127.0.0.1:${proxy.port}/share/ff/target.vhdx`];
      const r = await vs(args, env);
      expect(proxy.failed).toBe(1);
      expect(r.status).not.toBe(0);
      expect(r.stderr).toMatch(/^vhdsync: smb:\/\/\S+\/ff\/target_diff\.vhdx: no space left on share\n$/);
      expect(existsSync(local('ff/target_diff.vhdx'))).toBe(false);
      // Nor its list, which went out beside the FLUSH.
      expect(existsSync(local('ff/target_diff.vhdx.blocklist.bin'))).toBe(false);
      expect(partials(local('ff'))).toEqual([]);
    } finally {
      await proxy.stop();
    }
    const copy = JSON.parse((await vsOk(['copy', '--createmeta', img.srcRaw, `${S}/ff/target.vhdx`, '--json'], env)).stdout);
    expect(copy.changedBlocks).toBe(changedBlocks(img.baseRaw, img.srcRaw, 64 * 1024));
    expect(pyvhdiRead(local('ff/target_diff.vhdx'), local('ff/target.vhdx')).equals(readFileSync(img.srcRaw))).toBe(true);
  });
});
