/**
 * smbd killed while `vhdsync copy` writes its diff onto the share. The CLI is frozen (SIGSTOP) once the diff's
 * temp file holds data, so the kill lands mid-transfer every time. If the server stays down the copy fails
 * with one line and nothing finished-looking exists under the diff's final name; a rerun after the restart
 * cleans up and completes. A merge on the share stopped the same way resumes on the rerun. If the server comes
 * back in time the copy reconnects and completes correctly.
 */
import { existsSync, mkdirSync, readdirSync, statSync } from 'node:fs';
import * as path from 'node:path';
import { expectOneLineError } from '../helpers/cli.js';
import { makeTempDir } from '../helpers/tmp.js';
import { run, runStatus } from '../helpers/tools.js';
import { qemuSame } from '../cli/sync-helpers.js';
import { SambaServer } from './samba-server.js';
import { BASE_CHANGES, changedBlocks, expectNoSecrets, haveWorkflowTools, makeImagePair, MiB, partials, passwordEnv, smbBase, startCli, usePrivateCli, vsOk, type ImagePair } from './workflow-helpers.js';

const go = haveWorkflowTools() ? describe : describe.skip;

/** Polls `ready` every 5 ms; false if `done` settles (the run ended) first. */
async function waitFor(ready: () => boolean, done: Promise<unknown>): Promise<boolean> {
  let finished = false;
  void done.then(() => (finished = true));
  const deadline = Date.now() + 30000;
  while (!finished && Date.now() < deadline) {
    if (ready()) return true;
    await new Promise((r) => setTimeout(r, 5));
  }
  return false;
}

/** True when a hidden `.partial` temp file for `name` in `dir` has at least `bytes` allocated. */
function partialHolds(dir: string, name: string, bytes: number): boolean {
  return readdirSync(dir).some((n) => {
    if (!n.startsWith(`.${name}.`) || !n.endsWith('.partial')) return false;
    const st = statSync(path.join(dir, n), { throwIfNoEntry: false });
    return !!st && st.blocks * 512 >= bytes;
  });
}

go('smbd killed in the middle of a copy onto the share', () => {
  let server: SambaServer;
  let S: string;
  let img: ImagePair;
  const { dir, cleanup } = makeTempDir('vhdsync-smb-kill-');
  const env = passwordEnv();
  const vm = () => path.join(server.shareDir, 'vm');
  /** Runs this test started that may still be alive (stopped, if an assertion failed in between). */
  const running = new Set<number>();
  const start = (args: string[], e: NodeJS.ProcessEnv) => {
    const c = startCli(args, e);
    running.add(c.pid);
    void c.done.then(() => running.delete(c.pid));
    return c;
  };
  afterEach(() => {
    for (const pid of running) process.kill(pid, 'SIGKILL');
  });

  beforeAll(async () => {
    usePrivateCli(dir);
    server = await SambaServer.start();
    S = smbBase(server);
    // 48 MiB of new data: long enough a transfer to stop in the middle of.
    img = makeImagePair(dir, 64 * MiB, BASE_CHANGES, [{ offset: 8 * MiB, length: 48 * MiB, fill: 0x5c }]);
    mkdirSync(vm());
    for (const t of ['t1.vhdx', 't2.vhdx']) run('qemu-img', ['convert', '-f', 'raw', '-O', 'vhdx', img.baseRaw, path.join(vm(), t)]);
    await Promise.all([vsOk(['createmeta', `${S}/vm/t?.vhdx`], env), vsOk(['createmeta', img.srcVhdx])]);
  });
  afterAll(() => {
    server?.stop();
    cleanup();
  });

  /** Starts the copy onto `target` and freezes it once its diff's temp file holds 4 MiB of data. */
  async function copyFrozenMidway(target: string, extraEnv: NodeJS.ProcessEnv = {}) {
    const args = ['copy', img.srcVhdx, `${S}/vm/${target}.vhdx`];
    const c = start(args, { ...env, ...extraEnv });
    const midway = await waitFor(() => partialHolds(vm(), `${target}_diff.vhdx`, 4 * MiB), c.done);
    if (!midway) throw new Error(`the copy ended before it could be interrupted: ${JSON.stringify(await c.done)}`);
    process.kill(c.pid, 'SIGSTOP');
    expect(existsSync(path.join(vm(), `${target}_diff.vhdx`))).toBe(false);
    return { args, ...c };
  }

  it('server stays down: one line, no diff or diff metafile under the final names, target intact; a rerun completes; the same for merge, which resumes', async () => {
    const c = await copyFrozenMidway('t1', { VHDSYNC_SMB_RECONNECT: '1' });
    server.kill();
    const resumedAt = Date.now();
    process.kill(c.pid, 'SIGCONT');
    const r = await c.done;
    // VHDSYNC_SMB_RECONNECT=1 cut the default 30 s of reconnect attempts short.
    expect(Date.now() - resumedAt).toBeLessThan(10000);
    expectNoSecrets(r, c.args);
    // Whichever use of the dead connection fails first is reported: the diff's next write (which names it) or the
    // lock's renewal (which does not); both are one line.
    expectOneLineError(r, 1, /^vhdsync: (\S+t1_diff\.vhdx: )?cannot connect to 127\.0\.0\.1:\d+: connection refused$/);
    const names = readdirSync(vm());
    // The run's locks (the target's and the diff name's) could not be removed from a server that is gone; the next run
    // on this host takes them over.
    expect(names.filter((n) => !n.startsWith('.')).sort()).toEqual(['t1.vhdx', 't1.vhdx.blocklist.bin', 't1.vhdx.vhdsync-lock', 't1_diff.vhdx.vhdsync-lock', 't2.vhdx', 't2.vhdx.blocklist.bin']);
    expect(qemuSame(path.join(vm(), 't1.vhdx'), 'vhdx', img.baseRaw, 'raw').same).toBe(true);

    server.restart();
    const again = JSON.parse((await vsOk(['copy', '--json', img.srcVhdx, `${S}/vm/t1.vhdx`], env)).stdout);
    expect(again.changedBlocks).toBe(changedBlocks(img.baseRaw, img.srcRaw));
    expect(partials(vm())).toEqual([]);
    expect(existsSync(path.join(vm(), 't1.vhdx.vhdsync-lock'))).toBe(false);

    // Now the merge on the share, frozen once its state file is there (it has begun changing the target).
    const mergeArgs = ['merge', '--json', `${S}/vm/t1_diff.vhdx`];
    const m = start(mergeArgs, { ...env, VHDSYNC_SMB_RECONNECT: '1' });
    const state = path.join(vm(), 't1.vhdx.merge-state.json');
    if (!(await waitFor(() => existsSync(state), m.done))) throw new Error(`the merge ended before it could be interrupted: ${JSON.stringify(await m.done)}`);
    process.kill(m.pid, 'SIGSTOP');
    server.kill();
    process.kill(m.pid, 'SIGCONT');
    const mr = await m.done;
    expectNoSecrets(mr, mergeArgs);
    expectOneLineError(mr, 1, /^vhdsync: (\S+t1(_diff)?\.vhdx: )?cannot connect to 127\.0\.0\.1:\d+: connection refused$/);
    expect(existsSync(state)).toBe(true);

    server.restart();
    const resumed = JSON.parse((await vsOk(mergeArgs, env)).stdout);
    expect(resumed.resumed).toBe(true);
    expect(existsSync(state) || existsSync(path.join(vm(), 't1_diff.vhdx')) || existsSync(path.join(vm(), 't1.vhdx.vhdsync-lock'))).toBe(false);
    expect(qemuSame(path.join(vm(), 't1.vhdx'), 'vhdx', img.srcRaw, 'raw').same).toBe(true);
    expect(runStatus('qemu-img', ['check', '-q', '-f', 'vhdx', path.join(vm(), 't1.vhdx')]).status).toBe(0);
    expect(JSON.parse((await vsOk(['check', '--json', img.srcVhdx, `${S}/vm/t1.vhdx`], env)).stdout).changedBlocks).toBe(0);
  });

  it('server restarted while the copy waits: it reconnects and the diff is complete and correct', async () => {
    server.restart(); // whatever the test before left
    const c = await copyFrozenMidway('t2');
    server.kill();
    server.restart();
    process.kill(c.pid, 'SIGCONT');
    const r = await c.done;
    expectNoSecrets(r, c.args);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(partials(vm())).toEqual([]);
    await vsOk(['merge', `${S}/vm/t2_diff.vhdx`], env);
    expect(qemuSame(path.join(vm(), 't2.vhdx'), 'vhdx', img.srcRaw, 'raw').same).toBe(true);
    expect(JSON.parse((await vsOk(['check', '--json', img.srcVhdx, `${S}/vm/t2.vhdx`], env)).stdout).changedBlocks).toBe(0);
  });
});
