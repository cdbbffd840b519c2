/**
 * `verify --repair`: a truncated, edited or deleted manifest is rebuilt from the disk's folder alone, and every point
 * restores again; what the folder cannot prove (a chain with a missing link) is refused without writing anything.
 * `--wait`: backup, prune and verify wait for a disk's lock held by another run instead of failing at once.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { BIN, cli, cliAsync, expectOneLineError } from '../helpers/cli.js';
import { makeTempDir } from '../helpers/tmp.js';
import { parseLocation } from '../../src/io/location.js';
import { backupDisk, openRepository, type DiskSession, type RestorePoint } from '../../src/repo/index.js';
import { listed, rawDisk, restoredSha, scribble, sha256File } from './repo-helpers.js';

const MiB = 1 << 20;

describe('manifest repair and waiting for a lock', () => {
  let tmp: ReturnType<typeof makeTempDir>;
  let repo: string;
  let src: string;
  const sha = new Map<string, string>();
  let original: RestorePoint[];
  const manifest = () => path.join(repo, 'vm', 'manifest.json');
  const t0 = Date.parse('2026-12-01T10:00:00Z');

  beforeAll(async () => {
    tmp = makeTempDir('repo-repair-');
    repo = path.join(tmp.dir, 'repo');
    src = rawDisk(path.join(tmp.dir, 'vm.raw'), 8 * MiB, [[0, MiB, 0x10]]);
    const r = await openRepository(repo, false);
    const writes: Array<Array<[number, number, number]>> = [[], [[3 * MiB, 4096, 0x20]], [[6 * MiB, MiB, 0x30]], [[0, 4096, 0]]];
    for (const [i, w] of writes.entries()) {
      scribble(src, w);
      const s = await backupDisk(r, await parseLocation(src), 'vm', { reflink: 'never', now: () => new Date(t0 + i * 3_600_000) });
      sha.set(s.point, sha256File(src));
    }
    original = JSON.parse(fs.readFileSync(manifest(), 'utf8')).points;
  }, 120_000);
  afterAll(() => tmp.cleanup());

  /** Every point restores as it was backed up, and the manifest says what the original said (but the source). */
  async function expectRestored(): Promise<void> {
    const points = JSON.parse(fs.readFileSync(manifest(), 'utf8')).points as RestorePoint[];
    const strip = (p: RestorePoint) => ({ id: p.id, image: p.image, kind: p.kind, parent: p.parent, virtualSize: p.virtualSize, changedBytes: p.changedBytes, time: Date.parse(p.time) - (Date.parse(p.time) % 1000) });
    expect(points.map(strip)).toEqual(original.map(strip));
    for (const p of points) expect(await restoredSha(repo, 'vm', p.id, tmp.dir)).toBe(sha.get(p.id));
  }

  it('rebuilds a truncated, an edited and a deleted manifest; leaves an intact one alone', async () => {
    const good = fs.readFileSync(manifest());
    const damage: Array<[string, () => void]> = [
      ['truncated', () => fs.writeFileSync(manifest(), good.subarray(0, good.length >> 1))],
      ['edited', () => fs.writeFileSync(manifest(), good.toString().replace('"diff"', '"full"'))],
      ['deleted', () => fs.unlinkSync(manifest())],
    ];
    for (const [what, doIt] of damage) {
      doIt();
      expect(cli(['verify', '--repo', repo, 'vm']).status).toBe(1);
      const r = cli(['verify', '--repo', repo, '--repair', 'vm']);
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      expect(r.stdout).toMatch(new RegExp(`vm: manifest rebuilt \\((manifest missing|manifest damaged: .+)\\) from 4 restore points`));
      expect(r.stdout).toContain('4 restore points intact');
      await expectRestored();
      if (what === 'deleted') expect(r.stdout).toContain('manifest missing');
    }
    const again = cli(['verify', '--repo', repo, '--repair', 'vm', '--json']);
    expect(again.status).toBe(0);
    expect(JSON.parse(again.stdout).repaired).toMatchObject({ rebuilt: false });
    // The next backup builds on the rebuilt manifest as on the original.
    scribble(src, [[MiB, 4096, 0x40]]);
    const b = cli(['backup', src, '--repo', repo, '--name', 'vm', '--json']);
    expect(b.status).toBe(0);
    expect(JSON.parse(b.stdout)).toMatchObject({ kind: 'diff', changedBytes: 2 * MiB });
    sha.set(JSON.parse(b.stdout).point, sha256File(src));
    original = JSON.parse(fs.readFileSync(manifest(), 'utf8')).points;
    expectOneLineError(cli(['verify', '--repo', repo, '--repair']), 2, /--repair needs the name/);
  }, 240_000);

  it('refuses a chain with a missing link and an image without its metafile, writing nothing; ignores an interrupted backup', async () => {
    const dir = path.join(repo, 'vm');
    const good = fs.readFileSync(manifest());
    fs.unlinkSync(manifest());
    const middle = path.join(dir, `${original[1].image}`);
    fs.renameSync(middle, path.join(tmp.dir, 'aside.vhdx'));
    expectOneLineError(cli(['verify', '--repo', repo, '--repair', 'vm']), 1, /cannot rebuild the manifest: .*(parent|does not open).*missing link|cannot rebuild the manifest: .*does not open/);
    expect(fs.existsSync(manifest())).toBe(false);
    fs.renameSync(path.join(tmp.dir, 'aside.vhdx'), middle);
    const meta = path.join(dir, `${original[2].image}.blocklist.bin`);
    fs.renameSync(meta, path.join(tmp.dir, 'aside.bin'));
    expectOneLineError(cli(['verify', '--repo', repo, '--repair', 'vm']), 1, new RegExp(`${original[2].image} has no metafile`));
    expect(fs.existsSync(manifest())).toBe(false);
    fs.renameSync(path.join(tmp.dir, 'aside.bin'), meta);
    // A backup killed before its metafile was written leaves its image and incoming list: not a point.
    fs.writeFileSync(path.join(dir, '20991231T235959Z.vhdx'), 'partial');
    fs.writeFileSync(path.join(dir, '20991231T235959Z.vhdx.incoming.blocklist.bin'), 'partial');
    const r = cli(['verify', '--repo', repo, '--repair', 'vm']);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/ignored 20991231T235959Z\.vhdx/);
    await expectRestored();
    expect(fs.readFileSync(manifest()).equals(good)).toBe(false);
  }, 240_000);

  it('--wait: fails at once by default, waits for the holder, gives up after --wait=SECONDS', async () => {
    // Only cliAsync here: a blocked event loop would stop this process renewing the lock it holds.
    const r = await openRepository(repo);
    let held: DiskSession | null = await r.lockDisk('vm', 'test-holder');
    let child: ReturnType<typeof spawn> | null = null;
    try {
      expectOneLineError(await cliAsync(['backup', src, '--repo', repo, '--name', 'vm']), 1, /in use by a test-holder/);
      for (const cmd of [['backup', src, '--name', 'vm'], ['prune', 'vm', '--keep', '9'], ['verify', 'vm']]) {
        expectOneLineError(await cliAsync([...cmd, '--repo', repo, '--wait=1', '-q']), 1, /in use by a test-holder.*\(waited 1 s for it\)/);
      }
      const noisy = await cliAsync(['prune', 'vm', '--repo', repo, '--wait=1']);
      expect(noisy.stderr).toMatch(/^vhdsync: disk 'vm': in use by a test-holder .*: waiting for it \(at most 1 s\)\n/);
      expectOneLineError(await cliAsync(['prune', 'vm', '--repo', repo, '--wait=soon']), 2, /--wait takes a number of seconds/);
      // A waiting backup goes ahead once the holder lets go (released when it says it waits).
      scribble(src, [[2 * MiB, 4096, 0x50]]);
      child = spawn(process.execPath, [BIN, 'backup', src, '--repo', repo, '--name', 'vm', '--wait', '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      child.stdout!.on('data', (d) => (out += d));
      const done = new Promise<number | null>((resolve) => child!.on('close', resolve));
      await new Promise<void>((resolve) => {
        child!.stderr!.on('data', (d) => {
          err += d;
          if (/waiting for it/.test(err)) resolve();
        });
        void done.then(() => resolve());
      });
      held.check();
      await held.release();
      held = null;
      expect(await done).toBe(0);
      child = null;
      expect(err).toMatch(/waiting for it\n$/);
      expect((await listed(repo))[0].points.map((p) => p.id)).toContain(JSON.parse(out).point);
    } finally {
      child?.kill();
      await held?.release();
    }
  }, 300_000);
});
