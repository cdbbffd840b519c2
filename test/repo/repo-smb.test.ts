/**
 * The backup cycle on an SMB share (our own client against a private Samba on loopback): six backups with --keep 3,
 * each kept point checked against the source as it was (read from the share's folder on this machine, the bytes the
 * server stored), restore, verify and prune over SMB, and two backups of different disks into the share at once.
 */
import * as path from 'node:path';
import { makeTempDir } from '../helpers/tmp.js';
import { MiB } from '../cli/sync-helpers.js';
import { SambaServer } from '../smb/samba-server.js';
import { haveWorkflowTools, passwordEnv, smbBase, startCli, usePrivateCli, vs, vsOk } from '../smb/workflow-helpers.js';
import { expectOneLineError } from '../helpers/cli.js';
import { listed, rawDisk as makeRaw, restoredSha, sha256File, strays } from './repo-helpers.js';

const rawDisk = (file: string, writes: Array<[number, number, number]>) => makeRaw(file, 8 * MiB, writes);

const ok = haveWorkflowTools();
const d = ok ? describe : describe.skip;

d('backup repositories on an SMB share', () => {
  let tmp: ReturnType<typeof makeTempDir>;
  let server: SambaServer;
  let repo: string;
  let local: string;
  beforeAll(async () => {
    tmp = makeTempDir('vhdsync-repo-smb-');
    usePrivateCli(tmp.dir);
    server = await SambaServer.start();
    repo = `${smbBase(server)}/repo`;
    local = path.join(server.shareDir, 'repo');
  }, 60_000);
  afterAll(() => {
    server?.stop();
    tmp?.cleanup();
  });

  it('six backups with --keep 3: each kept point restores as the source was; restore, verify and prune over SMB', async () => {
    const source = path.join(tmp.dir, 'vm.raw');
    const ids: string[] = [];
    const sha = new Map<string, string>();
    for (let r = 0; r < 6; r++) {
      rawDisk(source, [[r * MiB + 4096 * r, 256 << 10, 0x30 + r], [((r * 5) % 7) * MiB, 64 << 10, r % 2 ? 0 : 0x60 + r]]);
      const b = await vsOk(['backup', source, '--repo', repo, '--keep', '3', '--json'], passwordEnv());
      const s = JSON.parse(b.stdout) as { point: string; kind: string };
      expect(s.kind).toBe(r === 0 ? 'full' : 'diff');
      ids.push(s.point);
      sha.set(s.point, sha256File(source));
      const points = (await listed(local))[0].points;
      expect(points.map((p) => p.id)).toEqual(ids.slice(-3));
      for (const id of ids.slice(-3)) expect({ r, id, sha: await restoredSha(local, 'vm', id, tmp.dir) }).toEqual({ r, id, sha: sha.get(id) });
      expect(strays(path.join(local, 'vm'))).toEqual([]);
      if (r === 0) await new Promise((res) => setTimeout(res, 1000));
    }
    // Over SMB: list, restore from the share to a local file and to the share, verify, prune.
    const l = JSON.parse((await vsOk(['list', '--repo', repo, '--json'], passwordEnv())).stdout) as { repository: string; disks: Array<{ points: Array<{ id: string }> }> };
    expect(l.repository).not.toContain('Secret');
    expect(l.disks[0].points.map((p) => p.id)).toEqual(ids.slice(-3));
    const out = path.join(tmp.dir, 'restored.raw');
    await vsOk(['restore', '--repo', repo, 'vm', '--at', ids[4], '--to', out], passwordEnv());
    expect(sha256File(out)).toBe(sha.get(ids[4]));
    await vsOk(['restore', '--repo', repo, 'vm', '--to', `${smbBase(server)}/restored.vhdx`], passwordEnv());
    await vsOk(['verify', '--repo', repo], passwordEnv());
    await vsOk(['prune', '--repo', repo, '--keep', '1'], passwordEnv());
    expect((await listed(local))[0].points.map((p) => p.id)).toEqual(ids.slice(-1));
    expect(await restoredSha(local, 'vm', ids[5], tmp.dir)).toBe(sha.get(ids[5]));
    // --reflink always cannot work on a share: one line, nothing stored.
    expectOneLineError(await vs(['backup', source, '--repo', repo, '--reflink', 'always'], passwordEnv()), 1, /cannot share blocks/);
    expect(strays(path.join(local, 'vm'))).toEqual([]);
  }, 240_000);

  it('two backups of different disks into the share at once both succeed', async () => {
    const a = rawDisk(path.join(tmp.dir, 'a.raw'), [[0, MiB, 0xa1]]);
    const b = rawDisk(path.join(tmp.dir, 'b.raw'), [[MiB, MiB, 0xb1]]);
    const runs = await Promise.all([startCli(['backup', a, '--repo', repo], passwordEnv()).done, startCli(['backup', b, '--repo', repo], passwordEnv()).done]);
    expect(runs.map((r) => r.stderr)).toEqual(['', '']);
    expect(await restoredSha(local, 'a', 'latest', tmp.dir)).toBe(sha256File(a));
    expect(await restoredSha(local, 'b', 'latest', tmp.dir)).toBe(sha256File(b));
  }, 120_000);
});
