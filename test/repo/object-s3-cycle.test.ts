/**
 * Repositories on a real S3 engine (issue 15), a private Ceph radosgw per file: the backup cycle (6 backups of a
 * changing VHDX with --keep 3; every kept point restores byte-identical, `list` shows exactly them, the bucket, listed
 * with the SDK, holds nothing no manifest references), bad input (wrong keys, missing bucket, endpoint down, objects
 * deleted or altered by hand with the SDK), and two processes at once.
 */
import { DeleteObjectCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import * as path from 'node:path';
import { createServer } from 'node:net';
import { makeTempDir } from '../helpers/tmp.js';
import { cli, cliAsync, expectOneLineError } from '../helpers/cli.js';
import { describeRgw, useRadosgw } from '../helpers/radosgw.js';
import { HAVE_QEMU, requireTool, run } from '../helpers/tools.js';
import { MiB, qemuWrite, type Change } from '../cli/sync-helpers.js';
import { contentSha } from './repo-helpers.js';
import { restoredObjectSha } from './object-helpers.js';
import { auditBucket, sdkGet, useObjectRepositories } from './object-s3-helpers.js';
import { listRepository } from '../../src/repo/index.js';

const d = requireTool(HAVE_QEMU, 'qemu-img and qemu-io') ? describeRgw : describe.skip;
const SIZE = 16 * MiB;
const BLOCK = '256K';

/** Round r's changes: scattered 64 KiB writes, a larger run, and zeros over earlier data. */
function changesOf(r: number): Change[] {
  return [
    ...Array.from({ length: 3 }, (_, i) => ({ offset: ((r * 5 + i * 3) % 15) * MiB + 4096 * r, length: 65536, fill: 0x20 + r * 4 + i })),
    { offset: ((r * 3) % 14) * MiB, length: MiB, fill: 0x80 + r },
    ...(r > 1 ? [{ offset: (((r - 1) * 3) % 14) * MiB, length: MiB / 2, fill: 'zero' as const }] : []),
  ];
}

/** A TCP port nothing listens on (bound, then closed). */
async function closedPort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const port = (srv.address() as { port: number }).port;
  await new Promise((resolve) => srv.close(resolve));
  return port;
}

d('repositories on radosgw', () => {
  const gw = useRadosgw();
  const open = useObjectRepositories(gw);
  let tmp: ReturnType<typeof makeTempDir>;
  beforeAll(() => (tmp = makeTempDir('vhdsync-s3repo-')));
  afterAll(() => tmp.cleanup());

  it('the cycle: 6 backups with --keep 3, every kept point restores, list shows them, no unreferenced object', async () => {
    const g = gw();
    const bucket = await g.newBucket();
    const repo = `s3://${bucket}/backups`;
    const source = path.join(tmp.dir, 'vm.vhdx');
    run('qemu-img', ['create', '-q', '-f', 'vhdx', source, String(SIZE)]);
    const expected = new Map<string, string>();
    const ids: string[] = [];
    const lib = await open(repo, false);
    for (let r = 0; r < 6; r++) {
      qemuWrite(source, 'vhdx', changesOf(r));
      const sha = contentSha(source, 'vhdx', tmp.dir);
      const b = cli(['backup', source, '--repo', repo, '--keep', '3', '--block-size', BLOCK, '--json'], { env: g.env });
      expect({ r, status: b.status, stderr: b.stderr }).toEqual({ r, status: 0, stderr: '' });
      const s = JSON.parse(b.stdout) as { point: string; kind: string; changedBytes: number; dropped: string[] };
      expect(s.kind).toBe(r === 0 ? 'full' : 'clone');
      ids.push(s.point);
      expected.set(s.point, sha);
      const kept = ids.slice(-3);
      expect({ r, listed: (await listRepository(lib)).disks.map((x) => [x.name, x.points.map((p) => p.id)]) }).toEqual({ r, listed: [['vm', kept]] });
      // The new point each round (objects are never changed afterwards), every kept one at the end.
      expect({ r, sha: await restoredObjectSha(lib, 'vm', s.point, tmp.dir) }).toEqual({ r, sha });
      // After each backup, nothing in the bucket is unreferenced and nothing referenced is missing.
      expect({ r, ...(await auditBucket(g, bucket, 'backups/')) }).toEqual({ r, unreferenced: [], missing: [] });
    }
    const l = cli(['list', '--repo', repo, '--json'], { env: g.env });
    expect(l.stderr).toBe('');
    const listing = JSON.parse(l.stdout) as { disks: Array<{ name: string; points: Array<{ id: string; state: string }> }> };
    expect(listing.disks[0].points.map((p) => [p.id, p.state])).toEqual(ids.slice(-3).map((id) => [id, 'ok']));
    for (const id of ids.slice(-3)) expect({ id, sha: await restoredObjectSha(lib, 'vm', id, tmp.dir) }).toEqual({ id, sha: expected.get(id) });
    // restore through the CLI into a VHDX that qemu-img checks and compares with the source.
    const out = path.join(tmp.dir, 'restored.vhdx');
    const rs = cli(['restore', '--repo', repo, 'vm', '--to', out], { env: g.env });
    expect(rs.stderr).toBe('');
    run('qemu-img', ['check', '-q', '-f', 'vhdx', out]);
    expect(run('qemu-img', ['compare', '-q', '-f', 'vhdx', '-F', 'vhdx', out, source]).toString()).toBe('');
    const v = cli(['verify', '--repo', repo], { env: g.env });
    expect({ status: v.status, stderr: v.stderr }).toEqual({ status: 0, stderr: '' });
    // A released lease of a disk that never got a manifest (a first backup killed before it, then released by a rerun
    // that failed): prune of every disk removes it.
    const ghost = { format: 'vhdsync-lease', host: 'elsewhere', pid: 1, op: 'backup', token: '0123456789abcdef', since: new Date().toISOString(), renewed: new Date().toISOString(), renewals: 0, leaseMs: 120000, released: true };
    await g.sdk.send(new PutObjectCommand({ Bucket: bucket, Key: 'backups/leases/ghost/000000000001.json', Body: JSON.stringify(ghost) }));
    // prune keeps one; the bucket then holds that point's objects only.
    const p = cli(['prune', '--repo', repo, '--keep', '1', '--json'], { env: g.env });
    expect({ status: p.status, stderr: p.stderr }).toEqual({ status: 0, stderr: '' });
    expect(JSON.parse(p.stdout)).toMatchObject({ failed: [], removedLeases: ['leases/ghost/000000000002.json'] });
    expect(await auditBucket(g, bucket, 'backups/')).toEqual({ unreferenced: [], missing: [] });
    expect(await restoredObjectSha(lib, 'vm', ids[5], tmp.dir)).toBe(expected.get(ids[5]));
  }, 400_000);

  it('bad input: wrong keys, a missing bucket, the endpoint down: one line each, never a key', async () => {
    const g = gw();
    const bucket = await g.newBucket();
    const wrong = cli(['list', '--repo', `s3://${bucket}/r`], { env: { ...g.env, AWS_SECRET_ACCESS_KEY: 'not-the-secret-4711' } });
    expectOneLineError(wrong, 1, /./);
    expect(wrong.stderr).not.toContain('not-the-secret-4711');
    expect(wrong.stderr).not.toContain(g.accessKey);
    expectOneLineError(cli(['list', '--repo', `s3://${bucket}-missing/r`], { env: g.env }), 1, /bucket/i);
    const down = cli(['list', '--repo', `s3://${bucket}/r`], { env: { ...g.env, AWS_ENDPOINT_URL: `http://127.0.0.1:${await closedPort()}`, AWS_MAX_ATTEMPTS: '2' } });
    expectOneLineError(down, 1, /./);
    // Not a repository yet: list and restore say so; backup makes it.
    expectOneLineError(cli(['list', '--repo', `s3://${bucket}/r`], { env: g.env }), 1, /not a vhdsync repository/);
  }, 200_000);

  it('damage by hand: a block or manifest altered or deleted: one line, verify names the point, others restore; verify --repair', async () => {
    const g = gw();
    const bucket = await g.newBucket();
    const repo = `s3://${bucket}/r`;
    const source = path.join(tmp.dir, 'dmg.raw');
    run('qemu-img', ['create', '-q', '-f', 'raw', source, String(8 * MiB)]);
    qemuWrite(source, 'raw', [{ offset: 0, length: 8 * MiB, fill: 0x11 }]);
    const shaA = contentSha(source, 'raw', tmp.dir);
    const a = JSON.parse(cli(['backup', source, '--repo', repo, '--block-size', BLOCK, '--json'], { env: g.env }).stdout) as { point: string };
    qemuWrite(source, 'raw', [{ offset: 3 * MiB, length: 4096, fill: 0x22 }]);
    const b = JSON.parse(cli(['backup', source, '--repo', repo, '--json'], { env: g.env }).stdout) as { point: string };
    const lib = await open(repo, true);
    // The one block only b has: where the two maps (read with the SDK) differ.
    const mapOf = async (id: string) => (await sdkGet(g, bucket, `r/disks/dmg/${id}.map`))!;
    const aMap = await mapOf(a.point);
    const bMap = await mapOf(b.point);
    let onlyB = '';
    for (let i = 64; i < bMap.length - 32; i += 32) {
      if (!bMap.subarray(i, i + 32).equals(aMap.subarray(i, i + 32))) onlyB = `r/disks/dmg/blocks/${bMap.subarray(i, i + 32).toString('hex')}`;
    }
    expect(onlyB).not.toBe('');
    const good = (await sdkGet(g, bucket, onlyB))!;
    const bad = Buffer.from(good);
    bad[17] ^= 0xff;
    await g.sdk.send(new PutObjectCommand({ Bucket: bucket, Key: onlyB, Body: bad }));
    const restoreB = cli(['restore', '--repo', repo, 'dmg', '--at', b.point, '--to', path.join(tmp.dir, 'b.raw')], { env: g.env });
    expectOneLineError(restoreB, 1, new RegExp(`restore point ${b.point}.*does not hold the bytes its name`));
    const v = cli(['verify', '--repo', repo, '--json'], { env: g.env });
    expect(v.status).toBe(1);
    const points = (JSON.parse(v.stdout) as { disks: Array<{ points: Array<{ id: string; ok: boolean }> }> }).disks[0].points;
    expect(points.map((p) => [p.id, p.ok])).toEqual([
      [a.point, true],
      [b.point, false],
    ]);
    expect(await restoredObjectSha(lib, 'dmg', a.point, tmp.dir)).toBe(shaA);
    await g.sdk.send(new DeleteObjectCommand({ Bucket: bucket, Key: onlyB }));
    expectOneLineError(cli(['restore', '--repo', repo, 'dmg', '--at', b.point, '--to', path.join(tmp.dir, 'b.raw')], { env: g.env }), 1, /block object is missing/);
    // The manifest altered by hand: every command says so in one line, naming it.
    const mk = (await g.keys(bucket, 'r/manifests/dmg/')).pop()!;
    const text = (await sdkGet(g, bucket, mk))!.toString('utf8').replace('"changedBytes": ', '"changedBytes": 1');
    await g.sdk.send(new PutObjectCommand({ Bucket: bucket, Key: mk, Body: text }));
    expectOneLineError(cli(['restore', '--repo', repo, 'dmg', '--to', path.join(tmp.dir, 'c.raw')], { env: g.env }), 1, /manifests\/dmg\/\d{12}\.json: manifest damaged/);
    // Deleted by hand: the disk is gone from the repository's catalogue.
    await g.sdk.send(new DeleteObjectCommand({ Bucket: bucket, Key: mk }));
    expectOneLineError(cli(['restore', '--repo', repo, 'dmg', '--to', path.join(tmp.dir, 'c.raw')], { env: g.env }), 1, /no disk 'dmg'/);
    // verify --repair rebuilds it from the points' maps and lists (the block put back first, so verify then passes).
    await g.sdk.send(new PutObjectCommand({ Bucket: bucket, Key: onlyB, Body: good }));
    const rep = cli(['verify', '--repo', repo, 'dmg', '--repair'], { env: g.env });
    expect({ status: rep.status, stderr: rep.stderr }).toEqual({ status: 0, stderr: '' });
    expect(rep.stdout).toContain(`dmg: manifest rebuilt (manifest missing) from 2 restore points: ${a.point} full, ${b.point} clone`);
    expect(await restoredObjectSha(lib, 'dmg', a.point, tmp.dir)).toBe(shaA);
  }, 300_000);

  it('two processes at once: different disks both succeed; the same disk, the second fails with one line', async () => {
    const g = gw();
    const bucket = await g.newBucket();
    const repo = `s3://${bucket}/r`;
    const a = path.join(tmp.dir, 'a.raw');
    const b = path.join(tmp.dir, 'b.raw');
    for (const [f, fill] of [[a, 0x31], [b, 0x32]] as const) {
      run('qemu-img', ['create', '-q', '-f', 'raw', f, String(8 * MiB)]);
      qemuWrite(f, 'raw', [{ offset: MiB, length: 4 * MiB, fill }]);
    }
    const [ra, rb] = await Promise.all([cliAsync(['backup', a, '--repo', repo, '--block-size', BLOCK], { env: g.env }), cliAsync(['backup', b, '--repo', repo, '--block-size', BLOCK], { env: g.env })]);
    expect([ra.stderr, rb.stderr]).toEqual(['', '']);
    const lib = await open(repo, true);
    expect(await restoredObjectSha(lib, 'a', 'latest', tmp.dir)).toBe(contentSha(a, 'raw', tmp.dir));
    expect(await restoredObjectSha(lib, 'b', 'latest', tmp.dir)).toBe(contentSha(b, 'raw', tmp.dir));
    // This process holds disk a (as a backup on another host would): a second run fails at once, naming it.
    const held = await lib.lockDisk('a', 'backup');
    try {
      expectOneLineError(cli(['backup', a, '--repo', repo], { env: g.env }), 1, new RegExp(`disk 'a' is in use by a backup \\(pid ${process.pid} on `));
    } finally {
      await held.release();
    }
    expect(cli(['backup', a, '--repo', repo], { env: g.env }).status).toBe(0);
  }, 200_000);
});
