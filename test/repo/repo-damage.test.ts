/**
 * Damage and concurrency: a flipped byte in a restore point, a truncated manifest, a deleted metafile; `verify` and
 * `restore` name the damaged point (or manifest) and the fix in one line, the other points stay restorable. Two
 * backups into one repository at once: different disks both succeed; the same disk never interleaves.
 */
import { copyFileSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { makeTempDir } from '../helpers/tmp.js';
import { cli, cliAsync, expectOneLineError } from '../helpers/cli.js';
import { MiB } from '../cli/sync-helpers.js';
import { backupDisk, openRepository } from '../../src/repo/index.js';
import { parseLocation } from '../../src/io/location.js';
import { listed, rawDisk as makeRaw, restoredSha, scribble, sha256File, strays } from './repo-helpers.js';

const SIZE = 8 * MiB;
const rawDisk = (file: string) => makeRaw(file, SIZE);

describe('a damaged repository', () => {
  let tmp: ReturnType<typeof makeTempDir>;
  let repo: string;
  let dir: string;
  const ids: string[] = [];
  const sha = new Map<string, string>();
  const file = (id: string) => path.join(dir, `${id}.vhdx`);

  beforeAll(async () => {
    tmp = makeTempDir('vhdsync-repo-damage-');
    repo = path.join(tmp.dir, 'repo');
    dir = path.join(repo, 'vm');
    const source = rawDisk(path.join(tmp.dir, 'vm.raw'));
    const r = await openRepository(repo, false);
    const rounds: Array<Array<[number, number, number]>> = [[[0, 2 * MiB, 0x11]], [[3 * MiB, MiB, 0x22]], [[5 * MiB, MiB, 0x77]]];
    let t = Date.parse('2026-01-01T00:00:00Z');
    for (const w of rounds) {
      scribble(source, w);
      const s = await backupDisk(r, await parseLocation(source), 'vm', { reflink: 'never', now: () => new Date((t += 3_600_000)) });
      ids.push(s.point);
      sha.set(s.point, sha256File(source));
    }
    // A second disk, which damage to the first must not affect.
    const other = rawDisk(path.join(tmp.dir, 'other.raw'));
    scribble(other, [[MiB, MiB, 0x99]]);
    await backupDisk(r, await parseLocation(other), 'other', { reflink: 'never' });
    sha.set('other', sha256File(other));
  }, 120_000);
  afterAll(() => tmp.cleanup());

  it('a flipped byte in a point: verify and restore name it, the points before it restore', async () => {
    const image = file(ids[2]);
    copyFileSync(image, image + '.keep');
    const bytes = readFileSync(image);
    const at = bytes.indexOf(Buffer.alloc(4096, 0x77));
    expect(at).toBeGreaterThan(0);
    scribble(image, [[at + 100, 1, 0x78]]);
    const v = cli(['verify', '--repo', repo]);
    expectOneLineError(v, 1, new RegExp(`restore point ${ids[2]} of disk 'vm' is damaged \\(block \\d+ at offset \\d+ differs from its metafile\\).*back up again with --full`));
    expect(v.stdout).toContain(`${ids[2]}: `);
    const j = JSON.parse(cli(['verify', '--repo', repo, '--json']).stdout) as { ok: boolean; disks: Array<{ disk: string; points: Array<{ id: string; ok: boolean }> }> };
    expect(j.ok).toBe(false);
    expect(j.disks.find((x) => x.disk === 'vm')!.points.map((p) => p.ok)).toEqual([true, true, false]);
    expect(j.disks.find((x) => x.disk === 'other')!.points.every((p) => p.ok)).toBe(true);
    const out = path.join(tmp.dir, 'r.raw');
    expectOneLineError(cli(['restore', '--repo', repo, 'vm', '--to', out]), 1, new RegExp(`restore point ${ids[2]} .* is damaged`));
    expect(() => readFileSync(out)).toThrow(); // nothing left under DST
    for (const id of ids.slice(0, 2)) expect(await restoredSha(repo, 'vm', id, tmp.dir)).toBe(sha.get(id));
    copyFileSync(image + '.keep', image);
    rmSync(image + '.keep');
    expect(cli(['verify', '--repo', repo]).status).toBe(0);
  }, 120_000);

  it('a truncated manifest: every command names it and where the images are; other disks are unaffected', async () => {
    const manifest = path.join(dir, 'manifest.json');
    const good = readFileSync(manifest);
    writeFileSync(manifest, good.subarray(0, good.length >> 1));
    const why = /manifest damaged: truncated or not a manifest .*plain VHDX images in .*vm/;
    expectOneLineError(cli(['restore', '--repo', repo, 'vm', '--to', path.join(tmp.dir, 'm.raw')]), 1, why);
    expectOneLineError(cli(['verify', '--repo', repo, 'vm']), 1, why);
    expectOneLineError(cli(['backup', path.join(tmp.dir, 'vm.raw'), '--repo', repo]), 1, why);
    const l = cli(['list', '--repo', repo, '--json']);
    expect(l.status).toBe(1);
    const disks = JSON.parse(l.stdout).disks as Array<{ name: string; error: string | null; points: unknown[] }>;
    expect(disks.find((x) => x.name === 'vm')!.error).toMatch(why);
    expect(disks.find((x) => x.name === 'other')!.points.length).toBe(1);
    expect(await restoredSha(repo, 'other', 'latest', tmp.dir)).toBe(sha.get('other'));
    // One changed byte fails the checksum as well.
    writeFileSync(manifest, Buffer.from(good.toString('utf8').replace('"changedBytes": 2097152', '"changedBytes": 2097153')));
    expectOneLineError(cli(['verify', '--repo', repo, 'vm']), 1, /manifest damaged: checksum mismatch/);
    writeFileSync(manifest, good);
  }, 120_000);

  it('a deleted metafile: the point is named with the fix; --no-verify restores it; a backup after a lost newest list is full', async () => {
    const meta = file(ids[1]) + '.blocklist.bin';
    const keep = readFileSync(meta);
    rmSync(meta);
    expectOneLineError(cli(['verify', '--repo', repo, 'vm']), 1, new RegExp(`restore point ${ids[1]} .*its metafile is missing; restore --no-verify`));
    const out = path.join(tmp.dir, 'nv.raw');
    expectOneLineError(cli(['restore', '--repo', repo, 'vm', '--at', ids[1], '--to', out]), 1, /metafile is missing.*--no-verify/);
    expect(cli(['restore', '--repo', repo, 'vm', '--at', ids[1], '--to', out, '--no-verify']).status).toBe(0);
    expect(sha256File(out)).toBe(sha.get(ids[1]));
    // The point after it has its own list and reads through the image, which is intact.
    expect(await restoredSha(repo, 'vm', ids[2], tmp.dir)).toBe(sha.get(ids[2]));
    writeFileSync(meta, keep);
    // The newest point's list lost: the next backup cannot build on it and stores a full point, saying why.
    const newest = file(ids[2]) + '.blocklist.bin';
    const keepNewest = readFileSync(newest);
    rmSync(newest);
    const b = cli(['backup', path.join(tmp.dir, 'vm.raw'), '--repo', repo, '--json']);
    expect(b.stderr).toBe('');
    const s = JSON.parse(b.stdout) as { kind: string; note: string; point: string };
    expect(s.kind).toBe('full');
    expect(s.note).toMatch(new RegExp(`newest point ${ids[2]} cannot be built on .*metafile`));
    expect(await restoredSha(repo, 'vm', s.point, tmp.dir)).toBe(sha.get(ids[2]));
    writeFileSync(newest, keepNewest);
    expect(strays(dir)).toEqual([]);
  }, 120_000);
});

describe('two backups into one repository at once', () => {
  let tmp: ReturnType<typeof makeTempDir>;
  beforeAll(() => (tmp = makeTempDir('vhdsync-repo-parallel-')));
  afterAll(() => tmp.cleanup());

  it('different disks proceed in parallel; the same disk never interleaves', async () => {
    const repo = path.join(tmp.dir, 'repo');
    const a = rawDisk(path.join(tmp.dir, 'a.raw'));
    const b = rawDisk(path.join(tmp.dir, 'b.raw'));
    scribble(a, [[0, 3 * MiB, 0xaa]]);
    scribble(b, [[2 * MiB, 3 * MiB, 0xbb]]);
    const [ra, rb] = await Promise.all([cliAsync(['backup', a, '--repo', repo]), cliAsync(['backup', b, '--repo', repo])]);
    expect([ra.stderr, rb.stderr]).toEqual(['', '']);
    expect(await restoredSha(repo, 'a', 'latest', tmp.dir)).toBe(sha256File(a));
    expect(await restoredSha(repo, 'b', 'latest', tmp.dir)).toBe(sha256File(b));
    // The same disk from two processes: each either runs alone or is refused at once with one line; never both at once.
    scribble(a, [[5 * MiB, MiB, 0xac]]);
    const same = await Promise.all([cliAsync(['backup', a, '--repo', repo]), cliAsync(['backup', a, '--repo', repo])]);
    for (const r of same) if (r.status !== 0) expectOneLineError(r, 1, /in use by a backup \(pid \d+/);
    expect(same.some((r) => r.status === 0)).toBe(true);
    const points = (await listed(repo)).find((d) => d.name === 'a')!.points;
    expect(points.length).toBe(1 + same.filter((r) => r.status === 0).length);
    for (const p of points.slice(1)) expect(await restoredSha(repo, 'a', p.id, tmp.dir)).toBe(sha256File(a));
    expect(strays(path.join(repo, 'a'))).toEqual([]);
    // Several sources in one run, two at a time, each its own disk; --json lists each backup.
    scribble(a, [[6 * MiB, MiB, 0xad]]);
    scribble(b, [[6 * MiB, MiB, 0xbd]]);
    const many = cli(['backup', a, b, '--repo', repo, '--jobs', '2', '--json']);
    expect(many.stderr).toBe('');
    const out = JSON.parse(many.stdout) as { backups: Array<{ disk: string; kind: string; point: string }>; failed: unknown[] };
    expect(out.backups.map((x) => [x.disk, x.kind])).toEqual([['a', 'diff'], ['b', 'diff']]);
    expect(out.failed).toEqual([]);
    expect(await restoredSha(repo, 'a', 'latest', tmp.dir)).toBe(sha256File(a));
    expect(await restoredSha(repo, 'b', 'latest', tmp.dir)).toBe(sha256File(b));
    expectOneLineError(cli(['backup', a, b, '--repo', repo, '--name', 'x']), 2, /--name needs exactly one source/);
    // --reflink always where the file system has no reflinks (the test folder's, unless it is XFS or Btrfs): one line.
    const fs = readFileSync('/proc/mounts', 'utf8');
    if (!/ (xfs|btrfs) /.test(fs.split('\n').find((l) => l.split(' ')[1] === '/') ?? '')) {
      expectOneLineError(cli(['backup', b, '--repo', repo, '--reflink', 'always']), 1, /cannot share blocks between files/);
    }
  }, 120_000);
});
