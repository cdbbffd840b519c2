/**
 * kill -9 inside `prune --keep 2` (two folds: the merge of each dropped point's child into it, then renames), at points
 * spread over every mutating store call: every point `list` then reports as ok restores exactly (points a fold holds
 * are refused, never restored wrong), and a rerun finishes the folds with no stray files. Then kills around the end of
 * a fold followed by a lost manifest: `verify --repair` finishes the fold and lists the right content.
 */
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import * as path from 'node:path';
import { cliAt, cliWithHook, spread } from '../cli/sync-helpers.js';
import { openRepository, pruneDisk } from '../../src/repo/index.js';
import { strays } from './repo-helpers.js';
import { POINTS, useCrashFixture } from './crash-fixture.js';

describe('prune killed with SIGKILL', () => {
  const fixture = useCrashFixture();

  it(`prune --keep 2: a kill at any of ${POINTS} points leaves every listed point restorable; a rerun finishes the folds`, async () => {
    const f = fixture();
    f.reset();
    const args = ['prune', '--repo', f.repo, 'vm', '--keep', '2'];
    const full = cliWithHook(args, 1e9, f.bin);
    expect(full.status).toBe(0);
    const total = full.mutations!;
    expect(total).toBeGreaterThan(POINTS);
    const steps = new Set<string>();
    for (const n of spread(total, POINTS)) {
      f.reset();
      const r = cliWithHook(args, n, f.bin);
      expect({ n, signal: r.signal }).toEqual({ n, signal: 'SIGKILL' });
      const ids = await f.checkListed(n);
      // The two newest points are never touched by their own drop.
      for (const id of f.pristineIds.slice(2)) expect(ids).toContain(id);
      for (const id of f.pristineIds.slice(0, 2)) {
        const state = path.join(f.repo, 'vm', `${id}.vhdx.merge-state.json`);
        if (existsSync(state)) steps.add(JSON.parse(readFileSync(state, 'utf8')).step);
      }
      const again = await pruneDisk(await openRepository(f.repo), 'vm', { keep: 2 });
      expect(again.kept).toEqual(f.pristineIds.slice(2));
      expect(await f.checkListed(n)).toEqual(f.pristineIds.slice(2));
      expect({ n, strays: strays(path.join(f.repo, 'vm')) }).toEqual({ n, strays: [] });
    }
    // The kills reached the merge inside the fold at each of its steps.
    expect([...steps].sort()).toEqual(['cleanup', 'merging', 'rotating']);
    expect(cliAt(f.bin, ['verify', '--repo', f.repo]).status).toBe(0);
  }, 600_000);

  it('prune --keep 1 killed near the end of its last fold, then the manifest lost: verify --repair finishes the fold', async () => {
    const f = fixture();
    f.reset();
    const args = ['prune', '--repo', f.repo, 'vm', '--keep', '1'];
    const full = cliWithHook(args, 1e9, f.bin);
    expect(full.status).toBe(0);
    const total = full.mutations!;
    // The last fold drops x into the newest point s, which no image reads through: once the merge has deleted s's
    // image and its own files, x's image (s's content, fresh metafile) looks like an untouched point x.
    const [x, s] = f.pristineIds.slice(2);
    const dir = path.join(f.repo, 'vm');
    const mergeFiles = () => readdirSync(dir).filter((n) => n.endsWith('.merge-state.json') || n.endsWith('.merging.json'));
    let window = 0;
    let mergeState = false;
    // Backwards from the end: past the fold's renames and through the merge's cleanup, until a kill left its state.
    for (let n = total - 1; n >= 0 && !mergeState; n--) {
      f.reset();
      const r = cliWithHook(args, n, f.bin);
      expect({ n, signal: r.signal }).toEqual({ n, signal: 'SIGKILL' });
      if (existsSync(path.join(dir, `${x}.vhdx`)) && !existsSync(path.join(dir, `${s}.vhdx`)) && !mergeFiles().length) window++;
      mergeState = existsSync(path.join(dir, `${x}.vhdx.merge-state.json`));
      rmSync(path.join(dir, 'manifest.json'));
      const repaired = cliAt(f.bin, ['verify', '--repo', f.repo, '--repair', 'vm']);
      expect({ n, status: repaired.status, stderr: repaired.stderr }).toEqual({ n, status: 0, stderr: '' });
      expect(await f.checkListed(n)).toEqual([s]);
      expect({ n, foldMarker: existsSync(path.join(dir, 'folding.json')) }).toEqual({ n, foldMarker: false });
      // The killed run's temp files are the next run's to sweep, as after any kill.
      expect((await pruneDisk(await openRepository(f.repo), 'vm', { keep: 1 })).kept).toEqual([s]);
      expect({ n, strays: strays(dir) }).toEqual({ n, strays: [] });
    }
    // The window between the merge's last deletion and the fold's rename was hit, and the scan reached the merge.
    expect(window).toBeGreaterThan(0);
    expect(mergeState).toBe(true);
  }, 600_000);
});
