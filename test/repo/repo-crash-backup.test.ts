/**
 * kill -9 inside `backup --keep 3` (so the fold its retention does is covered too), at points spread over every
 * mutating store call (the VHDSYNC_TEST_KILL_AFTER_WRITES hook): every point `list` then reports as ok restores
 * exactly, none reported done before is lost, and a rerun finishes with no stray files.
 */
import * as path from 'node:path';
import { cliWithHook, spread } from '../cli/sync-helpers.js';
import { backupDisk, openRepository } from '../../src/repo/index.js';
import { parseLocation } from '../../src/io/location.js';
import { strays } from './repo-helpers.js';
import { POINTS, useCrashFixture } from './crash-fixture.js';

describe('backup killed with SIGKILL', () => {
  const fixture = useCrashFixture();

  it(`backup --keep 3: a kill at any of ${POINTS} points loses nothing reported done; a rerun completes cleanly`, async () => {
    const f = fixture();
    f.reset();
    const args = ['backup', f.source, '--repo', f.repo, '--keep', '3', '--reflink', 'never'];
    const full = cliWithHook(args, 1e9, f.bin);
    expect(full.status).toBe(0);
    const total = full.mutations!;
    expect(total).toBeGreaterThan(POINTS);
    for (const n of spread(total, POINTS)) {
      f.reset();
      const r = cliWithHook(args, n, f.bin);
      expect({ n, signal: r.signal }).toEqual({ n, signal: 'SIGKILL' });
      const ids = await f.checkListed(n);
      // Retention runs after the backup and drops the two oldest, oldest first: a point may be gone only once the new
      // one was recorded and every older point is gone; the two newest stay.
      const gone = f.pristineIds.filter((id) => !ids.includes(id));
      expect({ n, gone }).toEqual({ n, gone: f.pristineIds.slice(0, Math.min(gone.length, 2)) });
      if (gone.length) expect({ n, fresh: ids.filter((id) => !f.pristineIds.includes(id)).length }).toEqual({ n, fresh: 1 });
      // The rerun (in-process: the killed run's lock belongs to a dead process here, so it is taken over at once).
      await backupDisk(await openRepository(f.repo), await parseLocation(f.source), 'vm', { reflink: 'never', retention: { keep: 3 } });
      const after = await f.checkListed(n);
      expect({ n, count: after.length }).toEqual({ n, count: 3 });
      expect({ n, strays: strays(path.join(f.repo, 'vm')) }).toEqual({ n, strays: [] });
    }
  }, 600_000);
});
