/**
 * kill -9 inside `backup` (with --keep, so its retention fold is covered too) and inside `prune`, at points spread
 * over every mutating store call (the VHDSYNC_TEST_KILL_AFTER_WRITES hook). After each kill every point `list`
 * reports as ok restores exactly, none reported done before is lost, and a rerun finishes with no stray files.
 */
import { closeSync, cpSync, existsSync, openSync, readFileSync, rmSync, statSync, truncateSync, writeSync } from 'node:fs';
import * as path from 'node:path';
import { makeTempDir } from '../helpers/tmp.js';
import { cliAt, cliWithHook, privateCli, spread, MiB } from '../cli/sync-helpers.js';
import { backupDisk, openRepository, pruneDisk, restorePoint } from '../../src/repo/index.js';
import { parseLocation } from '../../src/io/location.js';
import { RepositoryDamageError } from '../../src/util/errors.js';
import { listed, restoredSha, sha256File, strays } from './repo-helpers.js';

const SIZE = 8 * MiB;
const POINTS = 20;

/** Writes `length` bytes of `fill` at `offset` of a raw file (a guest's writes between backups). */
function scribble(file: string, writes: Array<[number, number, number]>): void {
  const fd = openSync(file, 'r+');
  try {
    for (const [offset, length, fill] of writes) writeSync(fd, Buffer.alloc(length, fill), 0, length, offset);
  } finally {
    closeSync(fd);
  }
}

describe('backup repositories killed with SIGKILL', () => {
  let tmp: ReturnType<typeof makeTempDir>;
  let bin: string;
  let source: string;
  let repo: string;
  const pristine = () => path.join(tmp.dir, 'repo.pristine');
  /** SHA-256 of the disk content each point id claims. */
  const expected = new Map<string, string>();
  let pristineIds: string[] = [];
  let nextSha = '';

  const reset = () => {
    rmSync(repo, { recursive: true, force: true });
    cpSync(pristine(), repo, { recursive: true, preserveTimestamps: true });
  };

  /** Size and mtime of each pristine point's image and metafile: a point whose files still match was not touched. */
  const pristineStat = new Map<string, string>();
  const statKey = (dir: string, image: string) =>
    [image, image + '.blocklist.bin'].map((f) => (existsSync(path.join(dir, f)) ? `${statSync(path.join(dir, f)).size}:${statSync(path.join(dir, f)).mtimeMs}` : '-')).join('/');

  /**
   * Every point list reports ok restores to its content; returns the ids listed. Points whose files the run did not
   * touch (same size and mtime as in the pristine copy, whose points were all checked) are not restored again.
   */
  async function checkListed(n: number): Promise<string[]> {
    const disks = await listed(repo);
    const points = disks[0]?.points ?? [];
    for (const p of points) {
      if (pristineStat.get(p.id) === statKey(path.join(repo, 'vm'), p.image) && p.state === 'ok') continue;
      if (p.state === 'pruning') {
        // Refused with the way out, never restored wrong.
        await expect(restorePoint(await openRepository(repo), 'vm', await parseLocation(path.join(tmp.dir, 'x.raw')), { at: p.id, format: 'raw' })).rejects.toThrow(RepositoryDamageError);
        continue;
      }
      const want = expected.get(p.id) ?? nextSha;
      expect({ n, id: p.id, state: p.state, sha: await restoredSha(repo, 'vm', p.id, tmp.dir) }).toEqual({ n, id: p.id, state: 'ok', sha: want });
    }
    return points.map((p) => p.id);
  }

  beforeAll(async () => {
    tmp = makeTempDir('vhdsync-repo-crash-');
    bin = privateCli(tmp.dir);
    source = path.join(tmp.dir, 'vm.raw');
    repo = path.join(tmp.dir, 'repo');
    closeSync(openSync(source, 'w'));
    truncateSync(source, SIZE);
    const rounds: Array<Array<[number, number, number]>> = [
      [[0, 3 * MiB, 0x11], [5 * MiB, 256 << 10, 0x12]],
      [[256 << 10, 256 << 10, 0x21], [6 * MiB, 512 << 10, 0x22]],
      [[MiB, 64 << 10, 0x31], [7 * MiB, 256 << 10, 0x32], [0, 256 << 10, 0]],
      [[2 * MiB, 512 << 10, 0x41], [4 * MiB, 256 << 10, 0x42]],
    ];
    const r = await openRepository(repo, false);
    for (const w of rounds) {
      scribble(source, w);
      const s = await backupDisk(r, await parseLocation(source), 'vm', { reflink: 'never', blockSize: 256 << 10 });
      expected.set(s.point, sha256File(source));
      pristineIds.push(s.point);
      // Distinct ids without waiting a second between backups.
      await new Promise((res) => setTimeout(res, 1000));
    }
    for (const id of pristineIds) expect(await restoredSha(repo, 'vm', id, tmp.dir)).toBe(expected.get(id));
    cpSync(repo, pristine(), { recursive: true, preserveTimestamps: true });
    // Taken from the copy: resets copy it again with the same (rounded) timestamps.
    for (const id of pristineIds) pristineStat.set(id, statKey(path.join(pristine(), 'vm'), `${id}.vhdx`));
    scribble(source, [[3 * MiB, 512 << 10, 0x51], [7 * MiB + 4096, 4096, 0x52]]);
    nextSha = sha256File(source);
  }, 120_000);
  afterAll(() => tmp.cleanup());

  it(`backup --keep 3: a kill at any of ${POINTS} points loses nothing reported done; a rerun completes cleanly`, async () => {
    reset();
    const args = ['backup', source, '--repo', repo, '--keep', '3', '--reflink', 'never'];
    const full = cliWithHook(args, 1e9, bin);
    expect(full.status).toBe(0);
    const total = full.mutations!;
    expect(total).toBeGreaterThan(POINTS);
    for (const n of spread(total, POINTS)) {
      reset();
      const r = cliWithHook(args, n, bin);
      expect({ n, signal: r.signal }).toEqual({ n, signal: 'SIGKILL' });
      const ids = await checkListed(n);
      // The oldest point may be gone only once the new one was recorded (retention runs after the backup).
      for (const id of pristineIds.slice(1)) expect({ n, id, kept: ids.includes(id) }).toEqual({ n, id, kept: true });
      if (!ids.includes(pristineIds[0])) expect(ids.length).toBe(4);
      // The rerun (in-process: the killed run's lock belongs to a dead process here, so it is taken over at once).
      await backupDisk(await openRepository(repo), await parseLocation(source), 'vm', { reflink: 'never', retention: { keep: 3 } });
      const after = await checkListed(n);
      expect({ n, count: after.length }).toEqual({ n, count: 3 });
      expect({ n, strays: strays(path.join(repo, 'vm')) }).toEqual({ n, strays: [] });
    }
  }, 300_000);

  it(`prune --keep 2: a kill at any of ${POINTS} points leaves every listed point restorable; a rerun finishes the folds`, async () => {
    reset();
    const args = ['prune', '--repo', repo, 'vm', '--keep', '2'];
    const full = cliWithHook(args, 1e9, bin);
    expect(full.status).toBe(0);
    const total = full.mutations!;
    expect(total).toBeGreaterThan(POINTS);
    const steps = new Set<string>();
    for (const n of spread(total, POINTS)) {
      reset();
      const r = cliWithHook(args, n, bin);
      expect({ n, signal: r.signal }).toEqual({ n, signal: 'SIGKILL' });
      const ids = await checkListed(n);
      // The two newest points are never touched by their own drop.
      for (const id of pristineIds.slice(2)) expect(ids).toContain(id);
      for (const id of pristineIds.slice(0, 2)) {
        const state = path.join(repo, 'vm', `${id}.vhdx.merge-state.json`);
        if (existsSync(state)) steps.add(JSON.parse(readFileSync(state, 'utf8')).step);
      }
      const again = await pruneDisk(await openRepository(repo), 'vm', { keep: 2 });
      expect(again.kept).toEqual(pristineIds.slice(2));
      expect(await checkListed(n)).toEqual(pristineIds.slice(2));
      expect({ n, strays: strays(path.join(repo, 'vm')) }).toEqual({ n, strays: [] });
    }
    // The kills reached the merge inside the fold at each of its steps.
    expect([...steps].sort()).toEqual(['cleanup', 'merging', 'rotating']);
    // The CLI's own rerun reports the finished state too.
    expect(cliAt(bin, ['verify', '--repo', repo]).status).toBe(0);
  }, 300_000);
});
