/**
 * Kills on a real S3 engine (issue 15), a private Ceph radosgw: SIGKILL of vhdsync at 10 points of a backup (with
 * --keep, so its sweep too) and at up to 10 of a prune dropping three points, through the kill hook's shared budget;
 * SIGKILL of radosgw in the middle of an upload, kept down until the run gave up, then a restart. After each: every
 * object the manifest references is there and every point is restored once (objects never change), nothing reported
 * done is lost, the rerun completes, and the bucket then holds nothing unreferenced (listed and read with the SDK).
 */
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { makeTempDir } from '../helpers/tmp.js';
import { BIN, cli, cliAsync, expectOneLineError } from '../helpers/cli.js';
import { describeRgw, useRadosgw } from '../helpers/radosgw.js';
import { MiB, spread } from '../cli/sync-helpers.js';
import { parseLocation } from '../../src/io/location.js';
import { backupDisk, listRepository, type RepoBackend } from '../../src/repo/index.js';
import { rawDisk, scribble, sha256File } from './repo-helpers.js';
import { restoredObjectSha } from './object-helpers.js';
import { auditBucket, useObjectRepositories } from './object-s3-helpers.js';

const BLOCK = '256K';
const KILLS = 10;

/** Runs the CLI with the kill hook armed; returns how it ended and how many mutations it counted. */
function cliKilled(args: string[], budget: number, env: NodeJS.ProcessEnv): { signal: string | null; status: number | null; mutations: number | null; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', env: { ...process.env, ...env, VHDSYNC_TEST_KILL_AFTER_WRITES: String(budget) } });
  const m = /vhdsync-test-hook: (\d+) mutations/.exec(r.stderr);
  return { signal: r.signal, status: r.status, mutations: m ? Number(m[1]) : null, stderr: r.stderr };
}

/** The ids `list` shows for disk vm. */
async function listedIds(repo: RepoBackend): Promise<string[]> {
  return (await listRepository(repo)).disks.find((d) => d.name === 'vm')?.points.map((p) => p.id) ?? [];
}

describeRgw('kills on radosgw', () => {
  const gw = useRadosgw();
  const open = useObjectRepositories(gw);
  let tmp: ReturnType<typeof makeTempDir>;
  beforeAll(() => (tmp = makeTempDir('vhdsync-s3crash-')));
  afterAll(() => tmp.cleanup());

  /** A 4 MiB raw source, a repository for it in a new bucket, and the guest's writes (four blocks, new bytes each time). */
  async function setting(name: string) {
    const g = gw();
    const bucket = await g.newBucket();
    const url = `s3://${bucket}/r`;
    const repo = await open(url);
    const source = rawDisk(path.join(tmp.dir, `${name}.raw`), 4 * MiB, [[0, 4 * MiB, 0x10]]);
    let round = 0;
    const change = () => {
      round++;
      scribble(source, Array.from({ length: 4 }, (_, i) => [((round * 5 + i * 3) % 16) * (256 << 10) + 512 * round, 4096, (round * 13 + i) & 0xff] as [number, number, number]));
    };
    /** A backup in this process (the same code as the CLI's, without a process start). */
    const backup = async (keep?: number) => (await backupDisk(repo, await parseLocation(source), 'vm', { blockSize: 256 << 10, retention: keep ? { keep } : undefined })).point;
    return { g, bucket, url, repo, source, change, backup };
  }

  it(`kill -9 of vhdsync at ${KILLS} points of a backup --keep 2: every listed point restores, the rerun completes, nothing left over`, async () => {
    const { g, bucket, url, repo, source, change, backup } = await setting('b');
    const expected = new Map<string, string>();
    expected.set(await backup(), sha256File(source));
    const args = ['backup', source, '--repo', url, '--name', 'vm', '--block-size', BLOCK, '--keep', '2'];
    change();
    const probe = cliKilled(args, 1_000_000, g.env);
    expect(probe.status).toBe(0);
    const total = probe.mutations!;
    for (const id of await listedIds(repo)) if (!expected.has(id)) expected.set(id, sha256File(source));
    for (const k of spread(total, KILLS)) {
      change();
      const sha = sha256File(source);
      const before = await listedIds(repo);
      const r = cliKilled(args, k, g.env);
      // A run with fewer mutations than the probe's (its sweep found less) may finish before point k.
      if (r.signal !== 'SIGKILL') expect({ k, status: r.status, stderr: r.stderr }).toEqual({ k, status: 0, stderr: expect.any(String) });
      const after = await listedIds(repo);
      // Nothing reported done is lost (the newest point before stays: --keep 2), at most the killed run's point is new.
      expect(after).toContain(before[before.length - 1]);
      const added = after.filter((id) => !expected.has(id));
      expect(added.length).toBeLessThanOrEqual(1);
      for (const id of added) {
        expect({ k, id, sha: await restoredObjectSha(repo, 'vm', id, tmp.dir) }).toEqual({ k, id, sha });
        expected.set(id, sha);
      }
      const audited = await auditBucket(g, bucket, 'r/');
      expect({ k, missing: audited.missing }).toEqual({ k, missing: [] });
      // Killed between its map and its manifest: the rerun records the killed run's point (a resume).
      for (const key of audited.unreferenced) {
        const id = /^disks\/vm\/(.+)\.map$/.exec(key)?.[1];
        if (id) expected.set(id, sha);
      }
      const rerun = await backup(2);
      expected.set(rerun, sha);
      expect({ k, sha: await restoredObjectSha(repo, 'vm', rerun, tmp.dir) }).toEqual({ k, sha });
      expect({ k, ...(await auditBucket(g, bucket, 'r/')) }).toEqual({ k, unreferenced: [], missing: [] });
    }
    for (const id of await listedIds(repo)) expect({ id, sha: await restoredObjectSha(repo, 'vm', id, tmp.dir) }).toEqual({ id, sha: expected.get(id) });
    // eslint-disable-next-line no-console
    console.log(`backup --keep 2 of a 4 MiB disk (4 of 16 blocks changed): ${total} mutations; killed at ${spread(total, KILLS).join(', ')}`);
  }, 600_000);

  it(`kill -9 of vhdsync at up to ${KILLS} points of a prune dropping three points`, async () => {
    const { g, bucket, url, repo, source, change, backup } = await setting('p');
    const expected = new Map<string, string>();
    const threeMore = async () => {
      for (let i = 0; i < 3; i++) {
        change();
        const id = await backup();
        expected.set(id, sha256File(source));
        expect({ id, sha: await restoredObjectSha(repo, 'vm', id, tmp.dir) }).toEqual({ id, sha: expected.get(id) });
      }
    };
    expected.set(await backup(), sha256File(source));
    await threeMore();
    const args = ['prune', '--repo', url, 'vm', '--keep', '1'];
    const probe = cliKilled(args, 1_000_000, g.env);
    expect(probe.status).toBe(0);
    const total = probe.mutations!;
    for (const k of spread(total, KILLS)) {
      await threeMore();
      const before = await listedIds(repo);
      const r = cliKilled(args, k, g.env);
      if (r.signal !== 'SIGKILL') expect({ k, status: r.status }).toEqual({ k, status: 0 });
      const after = await listedIds(repo);
      // Only dropped points may be gone; the newest is always kept; what is listed is all there.
      expect(after.every((id) => before.includes(id))).toBe(true);
      expect(after).toContain(before[before.length - 1]);
      expect({ k, missing: (await auditBucket(g, bucket, 'r/')).missing }).toEqual({ k, missing: [] });
      const rerun = cli(args, { env: g.env });
      expect({ k, status: rerun.status, stderr: rerun.stderr }).toEqual({ k, status: 0, stderr: '' });
      const kept = await listedIds(repo);
      expect(kept).toEqual([before[before.length - 1]]);
      expect({ k, sha: await restoredObjectSha(repo, 'vm', kept[0], tmp.dir) }).toEqual({ k, sha: expected.get(kept[0]) });
      expect({ k, ...(await auditBucket(g, bucket, 'r/')) }).toEqual({ k, unreferenced: [], missing: [] });
    }
    // eslint-disable-next-line no-console
    console.log(`prune --keep 1 of 4 points: ${total} mutations; killed at ${spread(total, KILLS).join(', ')}`);
  }, 600_000);

  it('kill -9 of radosgw mid-backup, kept down past the retries: one line, then the rerun completes and nothing is lost', async () => {
    const g = gw();
    const bucket = await g.newBucket();
    const url = `s3://${bucket}/r`;
    const blocks = 48;
    const source = rawDisk(path.join(tmp.dir, 'big.raw'), blocks * (256 << 10));
    /** New, distinct bytes in every block, so each backup sends every block as its own object. */
    const rewrite = (round: number) => {
      scribble(source, Array.from({ length: blocks }, (_, i) => [i * (256 << 10), 256 << 10, (i * 37 + round) & 0xff] as [number, number, number]));
      scribble(source, Array.from({ length: blocks }, (_, i) => [i * (256 << 10) + 7, 2, i + round] as [number, number, number]));
    };
    rewrite(1);
    const first = JSON.parse(cli(['backup', source, '--repo', url, '--block-size', BLOCK, '--json'], { env: g.env }).stdout) as { point: string };
    const firstSha = sha256File(source);
    rewrite(2);
    // Two attempts per request (AWS_MAX_ATTEMPTS): the retries give up within a second, so the gateway, kept down
    // until the run has ended, outlasts them.
    const run = cliAsync(['backup', source, '--repo', url, '--block-size', BLOCK, '--json'], { env: { ...g.env, AWS_MAX_ATTEMPTS: '2' } });
    const arrived = async () => (await g.keys(bucket, 'r/disks/big/blocks/')).length;
    for (let i = 0; i < 1200 && (await arrived()) < blocks + 8; i++) await new Promise((r) => setTimeout(r, 25));
    await g.killGateway();
    const r = await run;
    await g.restartGateway();
    const sentBefore = (await arrived()) - blocks;
    expect({ status: r.status, stdout: r.stdout }).toEqual({ status: 1, stdout: '' });
    // eslint-disable-next-line no-console
    console.log(`the backup gave up after ${sentBefore} of ${blocks} blocks: ${r.stderr.trim()}`);
    expectOneLineError(r, 1, /cannot reach .*ECONNREFUSED \(after 2 attempts\)/);
    expect(sentBefore).toBeGreaterThanOrEqual(8);
    expect(sentBefore).toBeLessThan(blocks);
    // The rerun completes; the point reported before the failure is still there and both restore exactly.
    const again = cli(['backup', source, '--repo', url, '--block-size', BLOCK, '--json'], { env: g.env });
    expect({ status: again.status, stderr: again.stderr }).toEqual({ status: 0, stderr: '' });
    const second = (JSON.parse(again.stdout) as { point: string }).point;
    const repo = await open(url);
    expect((await listRepository(repo)).disks.map((x) => [x.name, x.points.map((p) => p.id)])).toEqual([['big', [first.point, second]]]);
    expect(await restoredObjectSha(repo, 'big', first.point, tmp.dir)).toBe(firstSha);
    expect(await restoredObjectSha(repo, 'big', second, tmp.dir)).toBe(sha256File(source));
    expect(cli(['prune', '--repo', url, 'big', '--keep', '2'], { env: g.env }).status).toBe(0);
    expect(await auditBucket(g, bucket, 'r/')).toEqual({ unreferenced: [], missing: [] });
  }, 400_000);
});
