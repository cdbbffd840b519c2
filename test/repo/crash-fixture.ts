/**
 * The repository the kill tests start from (four points of an 8 MiB raw disk, a chain with 256 KiB metafile blocks),
 * a pristine copy to reset to before each kill, and the check run after each: every point `list` reports as ok
 * restores to its content, a `pruning` one is refused with the fix, never restored wrong.
 */
import { cpSync, existsSync, rmSync, statSync } from 'node:fs';
import * as path from 'node:path';
import { makeTempDir } from '../helpers/tmp.js';
import { privateCli, MiB } from '../cli/sync-helpers.js';
import { backupDisk, openRepository, restorePoint } from '../../src/repo/index.js';
import { parseLocation } from '../../src/io/location.js';
import { RepositoryDamageError } from '../../src/util/errors.js';
import { listed, rawDisk, restoredSha, scribble, sha256File } from './repo-helpers.js';

/** Kill points per test: 20, as issue 12 asks; VHDSYNC_REPO_KILL_POINTS sets another number (a quick local run). */
export const POINTS = Number(process.env.VHDSYNC_REPO_KILL_POINTS) || 20;

/** Size and mtime of a point's image and metafile. */
const statKey = (dir: string, image: string) =>
  [image, image + '.blocklist.bin'].map((f) => (existsSync(path.join(dir, f)) ? `${statSync(path.join(dir, f)).size}:${statSync(path.join(dir, f)).mtimeMs}` : '-')).join('/');

/** A repository with four points, its pristine copy and what each point must restore to. */
export class CrashFixture {
  readonly tmp = makeTempDir('vhdsync-repo-crash-');
  readonly bin = privateCli(this.tmp.dir);
  readonly source = path.join(this.tmp.dir, 'vm.raw');
  readonly repo = path.join(this.tmp.dir, 'repo');
  readonly pristineIds: string[] = [];
  /** SHA-256 of the content each point id claims. */
  readonly expected = new Map<string, string>();
  /** The content a new point made from the source now must have. */
  nextSha = '';
  /** A pristine point whose files still have these sizes and mtimes was not touched by a run (and was checked). */
  private readonly pristineStat = new Map<string, string>();
  private readonly pristine = path.join(this.tmp.dir, 'repo.pristine');

  /** Makes the four points in-process, checks them, keeps a pristine copy, then changes the source once more. */
  async setUp(): Promise<void> {
    rawDisk(this.source, 8 * MiB);
    const rounds: Array<Array<[number, number, number]>> = [
      [[0, 3 * MiB, 0x11], [5 * MiB, 256 << 10, 0x12]],
      [[256 << 10, 256 << 10, 0x21], [6 * MiB, 512 << 10, 0x22]],
      [[MiB, 64 << 10, 0x31], [7 * MiB, 256 << 10, 0x32], [0, 256 << 10, 0]],
      [[2 * MiB, 512 << 10, 0x41], [4 * MiB, 256 << 10, 0x42]],
    ];
    const r = await openRepository(this.repo, false);
    let t = Date.parse('2026-06-01T00:00:00Z');
    for (const w of rounds) {
      scribble(this.source, w);
      const s = await backupDisk(r, await parseLocation(this.source), 'vm', { reflink: 'never', blockSize: 256 << 10, now: () => new Date((t += 3_600_000)) });
      this.expected.set(s.point, sha256File(this.source));
      this.pristineIds.push(s.point);
    }
    for (const id of this.pristineIds) {
      const got = await restoredSha(this.repo, 'vm', id, this.tmp.dir);
      if (got !== this.expected.get(id)) throw new Error(`fixture point ${id} does not restore`);
    }
    cpSync(this.repo, this.pristine, { recursive: true, preserveTimestamps: true });
    // Taken from the copy: resets copy it again with the same (rounded) timestamps.
    for (const id of this.pristineIds) this.pristineStat.set(id, statKey(path.join(this.pristine, 'vm'), `${id}.vhdx`));
    scribble(this.source, [[3 * MiB, 512 << 10, 0x51], [7 * MiB + 4096, 4096, 0x52]]);
    this.nextSha = sha256File(this.source);
  }

  /** Puts the pristine repository back. */
  reset(): void {
    rmSync(this.repo, { recursive: true, force: true });
    cpSync(this.pristine, this.repo, { recursive: true, preserveTimestamps: true });
  }

  /** Checks every point `list` reports (see the file comment) and returns the ids listed; `n` labels failures. */
  async checkListed(n: number): Promise<string[]> {
    const points = (await listed(this.repo))[0]?.points ?? [];
    for (const p of points) {
      if (p.state === 'ok' && this.pristineStat.get(p.id) === statKey(path.join(this.repo, 'vm'), p.image)) continue;
      if (p.state === 'pruning') {
        const out = await parseLocation(path.join(this.tmp.dir, 'x.raw'));
        await expect(restorePoint(await openRepository(this.repo), 'vm', out, { at: p.id, format: 'raw' })).rejects.toThrow(RepositoryDamageError);
        continue;
      }
      const want = this.expected.get(p.id) ?? this.nextSha;
      expect({ n, id: p.id, state: p.state, sha: await restoredSha(this.repo, 'vm', p.id, this.tmp.dir) }).toEqual({ n, id: p.id, state: 'ok', sha: want });
    }
    return points.map((p) => p.id);
  }
}

/** Registers the fixture's set-up and clean-up around the calling `describe`; the getter is valid inside its tests. */
export function useCrashFixture(): () => CrashFixture {
  let f: CrashFixture;
  beforeAll(async () => {
    f = new CrashFixture();
    await f.setUp();
  }, 120_000);
  afterAll(() => f?.tmp.cleanup());
  return () => f;
}
