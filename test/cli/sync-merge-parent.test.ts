/**
 * merge refuses a parent written to after the diff was made (issue 13, item 3): the review's reproduction was a
 * qemu-io write into a VHD target between copy and merge, which kept its UniqueId and was merged into.
 */
import { existsSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import * as path from 'node:path';
import { makeTempDir } from '../helpers/tmp.js';
import { HAVE_QEMU, requireTool } from '../helpers/tools.js';
import { cli, expectOneLineError } from '../helpers/cli.js';
import { MiB, ourDiff, qemuImage, qemuRaw, qemuSame, qemuWrite, type Change } from './sync-helpers.js';
import { metafileLocationFor, readMetafile } from '../../src/meta/index.js';
import { openDisk } from '../../src/formats/index.js';

const ok = requireTool(HAVE_QEMU, 'qemu-img and qemu-io');
const d = ok ? describe : describe.skip;

const SIZE = 16 * MiB;
const BLOCK = 64 << 10;
const BASE: Change[] = [{ offset: 0, length: 4 * MiB, fill: 0xa5 }];
const CHANGES: Change[] = [
  { offset: 2 * BLOCK, length: BLOCK, fill: 0x11 },
  { offset: 9 * MiB, length: 3 * BLOCK, fill: 0x22 },
];
/** The review's write: one sector pattern into block 16, which the diff does not hold. */
const INTRUDER: Change = { offset: 16 * BLOCK, length: 4096, fill: 0x5a };

d('merge refuses a parent changed after copy', () => {
  let tmp: ReturnType<typeof makeTempDir>;
  beforeEach(() => (tmp = makeTempDir()));
  afterEach(() => tmp.cleanup());

  it.each([
    ['vhd', 'vpc', 'subformat=dynamic,force_size=on'],
    ['vhd', 'vpc', 'subformat=fixed,force_size=on'],
    ['vhdx', 'vhdx', 'subformat=dynamic'],
  ] as const)('%s target (%s %s): copy, qemu-io write into the target, merge refuses and leaves it untouched', async (fmt, qf, opts) => {
    const target = path.join(tmp.dir, `t.${fmt}`);
    const source = path.join(tmp.dir, 's.raw');
    const diff = path.join(tmp.dir, `t_diff.${fmt}`);
    qemuImage(target, qf, SIZE, BASE, opts);
    qemuRaw(target, qf, source);
    qemuWrite(source, 'raw', CHANGES);
    expect(cli(['createmeta', '--block-size', '64K', source, target]).status).toBe(0);
    expect(cli(['copy', source, target]).status).toBe(0);
    const t = await openDisk(target);
    const checked = await t.identity();
    await t.close();

    qemuWrite(target, qf, [INTRUDER]);
    const written = readFileSync(target);
    expectOneLineError(cli(['merge', diff]), 1, /changed after the diff was made.*delete the diff, run vhdsync createmeta .*, then copy again/);
    expect(readFileSync(target).equals(written)).toBe(true);
    expect(existsSync(target + '.merge-state.json')).toBe(false);
    // What merge compared: the diff's metafile records the target as copy checked it.
    const meta = await readMetafile(metafileLocationFor({ store: t.location.store, path: diff }));
    expect(meta.summary.parentIdentity).toEqual(checked);
    await meta.close();

    // The way out the message names: a new metafile, a new diff, then the merge gives the source's content.
    rmSync(diff);
    rmSync(diff + '.blocklist.bin');
    expect(cli(['createmeta', '--block-size', '64K', target]).status).toBe(0);
    expect(cli(['copy', source, target]).status).toBe(0);
    const before = cli(['get', target, 'uuid']).stdout.trim();
    expect(cli(['merge', diff]).stderr).toBe('');
    expect(qemuSame(target, qf, source, 'raw').output).toContain('identical');
    // Merging gives the target a new id (VHD UniqueId too), and the rotated metafile records it: fresh, nothing differs.
    expect(cli(['get', target, 'uuid']).stdout.trim()).not.toBe(before);
    expect(cli(['check', source, target]).stdout).toMatch(/no blocks differ/);
    expect(cli(['validate', target]).status).toBe(0);
  });

  it('raw parent (a diff made with create, no metafile): a parent written after the diff is refused', async () => {
    const parent = path.join(tmp.dir, 'p.raw');
    const diff = path.join(tmp.dir, 'p_diff.vhd');
    qemuImage(parent, 'raw', SIZE, BASE);
    await ourDiff(parent, diff, 'vhd', CHANGES);
    qemuWrite(parent, 'raw', [INTRUDER]);
    const written = readFileSync(parent);
    expectOneLineError(cli(['merge', diff]), 1, /parent .*p\.raw changed after the diff was made \(it was modified at/);
    expect(readFileSync(parent).equals(written)).toBe(true);
    expect(readdirSync(tmp.dir).sort()).toEqual(['p.raw', 'p_diff.vhd']);
  });

  it('raw parent left alone: the merge goes through', async () => {
    const parent = path.join(tmp.dir, 'p.raw');
    const diff = path.join(tmp.dir, 'p_diff.vhd');
    const expected = path.join(tmp.dir, 'e.raw');
    qemuImage(parent, 'raw', SIZE, BASE);
    qemuImage(expected, 'raw', SIZE, [...BASE, ...CHANGES]);
    await ourDiff(parent, diff, 'vhd', CHANGES);
    expect(cli(['merge', diff]).stderr).toBe('');
    expect(qemuSame(parent, 'raw', expected, 'raw').output).toContain('identical');
  });
});
