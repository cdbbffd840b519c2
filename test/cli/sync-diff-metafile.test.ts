import { copyFileSync, existsSync, mkdirSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import * as path from 'node:path';
import { makeTempDir } from '../helpers/tmp.js';
import { HAVE_QEMU, requireTool } from '../helpers/tools.js';
import { cli, expectOneLineError } from '../helpers/cli.js';
import { MiB, qemuImage, qemuRaw, qemuSame, qemuWrite } from './sync-helpers.js';

const ok = requireTool(HAVE_QEMU, 'qemu-img and qemu-io');
const d = ok ? describe : describe.skip;

d("a diff's metafile must be its own", () => {
  let tmp: ReturnType<typeof makeTempDir>;
  beforeAll(() => (tmp = makeTempDir()));
  afterAll(() => tmp.cleanup());
  const p = (n: string) => path.join(tmp.dir, n);

  it('merge refuses a list recorded for another diff, before touching the parent; copy --force replaces diff and list together', () => {
    qemuImage(p('t.vhdx'), 'vhdx', 16 * MiB, [{ offset: 0, length: MiB, fill: 0x21 }], 'subformat=dynamic,block_size=1M');
    qemuRaw(p('t.vhdx'), 'vhdx', p('s.raw'));
    qemuWrite(p('s.raw'), 'raw', [{ offset: 2 * MiB, length: 65536, fill: 0x42 }]);
    expect(cli(['createmeta', '--block-size', '64K', p('t.vhdx'), p('s.raw')]).status).toBe(0);
    mkdirSync(p('a'));
    mkdirSync(p('b'));
    expect(cli(['copy', '--diffdir', p('a'), p('s.raw'), p('t.vhdx')]).status).toBe(0);
    expect(cli(['copy', '--diffdir', p('b'), p('s.raw'), p('t.vhdx')]).status).toBe(0);
    // Two diffs with the same content but different ids: give diff A the list made for diff B.
    copyFileSync(p('b/t_diff.vhdx.blocklist.bin'), p('a/t_diff.vhdx.blocklist.bin'));
    const parentBefore = readFileSync(p('t.vhdx'));
    expectOneLineError(cli(['merge', p('a/t_diff.vhdx')]), 1, /t_diff\.vhdx\.blocklist\.bin: was written for another diff/);
    expect(readFileSync(p('t.vhdx')).equals(parentBefore)).toBe(true);
    expect(existsSync(p('t.vhdx.merge-state.json'))).toBe(false);

    // While another run holds the target (here: this test process, alive), copy and merge refuse and touch nothing.
    writeFileSync(p('t.vhdx.vhdsync-lock'), JSON.stringify({ pid: process.pid, host: hostname(), op: 'merge', since: 'now' }));
    expectOneLineError(cli(['merge', p('b/t_diff.vhdx')]), 1, /t\.vhdx: in use by a merge \(pid \d+ on .*\); if that run is gone, delete .*t\.vhdx\.vhdsync-lock$/);
    expectOneLineError(cli(['copy', '--force', '--diffdir', p('a'), p('s.raw'), p('t.vhdx')]), 1, /in use by a merge/);
    expect(readFileSync(p('t.vhdx')).equals(parentBefore)).toBe(true);
    unlinkSync(p('t.vhdx.vhdsync-lock'));

    // --force over an existing diff: the new diff and its own list, which merge accepts.
    expect(cli(['copy', '--force', '--diffdir', p('a'), p('s.raw'), p('t.vhdx')]).status).toBe(0);
    const m = cli(['merge', p('a/t_diff.vhdx')]);
    expect(m.stderr).toBe('');
    expect(qemuSame(p('t.vhdx'), 'vhdx', p('s.raw'), 'raw').same).toBe(true);
    expect(JSON.parse(cli(['check', '--json', p('s.raw'), p('t.vhdx')]).stdout).changedBlocks).toBe(0);
    expect(existsSync(p('t.vhdx.vhdsync-lock'))).toBe(false);
  });
});
