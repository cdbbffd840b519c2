/**
 * Two copies whose diffs share a name and a --diffdir (two targets called disk.vhdx in different folders), started
 * at the same moment as real processes: one writes the diff, the other is refused in one line; neither deletes the
 * other's temp file, and the diff left behind is whole and merges into its own target (qemu-img is the oracle).
 */
import { mkdirSync, readdirSync } from 'node:fs';
import * as path from 'node:path';
import { makeTempDir } from '../helpers/tmp.js';
import { HAVE_QEMU, requireTool } from '../helpers/tools.js';
import { cli, cliAsync, expectOneLineError } from '../helpers/cli.js';
import { cpSparse, MiB, qemuImage, qemuSame } from './sync-helpers.js';

const d = requireTool(HAVE_QEMU, 'qemu-img and qemu-io') ? describe : describe.skip;

d('two copies racing for one diff name', () => {
  const { dir, cleanup } = makeTempDir('vhdsync-copy-race-');
  const SIZE = 32 * MiB;
  afterAll(cleanup);

  beforeAll(() => {
    for (const side of ['a', 'b']) {
      mkdirSync(path.join(dir, side));
      const fill = side === 'a' ? 1 : 2;
      qemuImage(path.join(dir, side, 'disk.vhdx'), 'vhdx', SIZE, [{ offset: 0, length: 8 * MiB, fill }], 'subformat=dynamic,block_size=1M');
      // Many changed blocks, so the two runs overlap for a while.
      qemuImage(path.join(dir, `s${side}.raw`), 'raw', SIZE, [{ offset: 0, length: 8 * MiB, fill }, { offset: 8 * MiB, length: 20 * MiB, fill: fill + 10 }]);
    }
    const r = cli(['createmeta', path.join(dir, 'a/disk.vhdx'), path.join(dir, 'b/disk.vhdx'), path.join(dir, 'sa.raw'), path.join(dir, 'sb.raw')]);
    expect(r.status).toBe(0);
  });

  it.each([1, 2, 3])('round %i: exactly one wins, the other is refused, the diff is the winner\'s', async (round) => {
    const work = path.join(dir, `round${round}`);
    const dd = path.join(work, 'dd');
    mkdirSync(dd, { recursive: true });
    for (const side of ['a', 'b']) {
      mkdirSync(path.join(work, side));
      for (const f of ['disk.vhdx', 'disk.vhdx.blocklist.bin']) cpSparse(path.join(dir, side, f), path.join(work, side, f));
    }
    const runs = await Promise.all(['a', 'b'].map((side) => cliAsync(['copy', '--json', `--diffdir=${dd}`, path.join(dir, `s${side}.raw`), path.join(work, side, 'disk.vhdx')])));
    const winners = runs.map((r, i) => (r.status === 0 ? ['a', 'b'][i] : null)).filter((s): s is string => s !== null);
    expect(winners).toHaveLength(1);
    const loser = runs.find((r) => r.status !== 0)!;
    expectOneLineError(loser, 1, /disk_diff\.vhdx: (in use by a copy|the diff already exists)/);
    expect(readdirSync(dd).sort()).toEqual(['disk_diff.vhdx', 'disk_diff.vhdx.blocklist.bin']);

    // The diff and its list belong together and to the winner: merged next to its target, it makes the source.
    const side = winners[0];
    for (const f of ['disk_diff.vhdx', 'disk_diff.vhdx.blocklist.bin']) cpSparse(path.join(dd, f), path.join(work, side, f));
    const m = cli(['merge', path.join(work, side, 'disk_diff.vhdx')]);
    expect(m.stderr).toBe('');
    expect(qemuSame(path.join(work, side, 'disk.vhdx'), 'vhdx', path.join(dir, `s${side}.raw`), 'raw').same).toBe(true);
  });
});
