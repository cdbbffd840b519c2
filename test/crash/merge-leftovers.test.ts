/**
 * An interrupted merge is found from either side (issue 13, item 6): with the diff kept in another folder
 * (`copy --diffdir`), a merge killed during its cleanup is finished by a rerun of `merge DIFF` or by the next
 * `copy`; one whose diff was deleted mid-merge is named with its way out (`merge --discard`), and the discard
 * frees the parent. Merge also holds the diff's name, so no copy replaces the diff under it.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import * as path from 'node:path';
import { makeTempDir } from '../helpers/tmp.js';
import { HAVE_QEMU, requireTool } from '../helpers/tools.js';
import { cliAt, cliWithHook, cpSparse, privateCli, MiB, qemuImage, qemuRaw, qemuSame, qemuWrite, type Change } from '../cli/sync-helpers.js';
import { parseLocation } from '../../src/io/location.js';
import { lockImage } from '../../src/sync/lock.js';

const ok = requireTool(HAVE_QEMU, 'qemu-img and qemu-io');
const d = ok ? describe : describe.skip;

const SIZE = 16 * MiB;
const BASE: Change[] = [{ offset: 0, length: 3 * MiB, fill: 0xa5 }];
const CHANGES: Change[] = [
  ...Array.from({ length: 6 }, (_, i) => ({ offset: i * 2 * MiB + 65536, length: 65536, fill: 0x20 + i })),
  { offset: 1 * MiB, length: 128 << 10, fill: 'zero' as const },
];
/** The last mutations of a merge: the whole cleanup step (diff metafile, diff, marker, state, marker) and a margin. */
const TAIL = 12;

d('interrupted merges of a diff kept in another folder', () => {
  let tmp: ReturnType<typeof makeTempDir>;
  let bin: string;
  let parentDir: string;
  let diffDir: string;
  let target: string;
  let source: string;
  let diff: string;
  const cli = (args: string[]) => cliAt(bin, args);
  const pristine = (f: string) => f + '.pristine';
  const saved = () => [target, target + '.blocklist.bin', diff, diff + '.blocklist.bin'];
  const leftovers = (dir: string) => readdirSync(dir).filter((f) => !f.endsWith('.pristine')).sort();

  beforeAll(() => {
    tmp = makeTempDir('vhdsync-leftovers-');
    bin = privateCli(tmp.dir);
    parentDir = path.join(tmp.dir, 'vms');
    diffDir = path.join(tmp.dir, 'transfer');
    mkdirSync(parentDir);
    mkdirSync(diffDir);
    target = path.join(parentDir, 'disk.vhdx');
    source = path.join(tmp.dir, 'source.raw');
    diff = path.join(diffDir, 'disk_diff.vhdx');
    qemuImage(target, 'vhdx', SIZE, BASE, 'subformat=dynamic,block_size=1M');
    qemuRaw(target, 'vhdx', source);
    qemuWrite(source, 'raw', CHANGES);
    expect(cli(['createmeta', '--block-size', '64K', source, target]).status).toBe(0);
    const copied = cli(['copy', '--diffdir', diffDir, source, target]);
    expect(copied.stderr).toBe('');
    for (const f of saved()) cpSparse(f, pristine(f));
  });
  afterAll(() => tmp.cleanup());

  /** Back to the state right after copy: parent and its list, the diff and its list, nothing else. */
  function reset() {
    for (const dir of [parentDir, diffDir]) for (const f of leftovers(dir)) rmSync(path.join(dir, f));
    for (const f of saved()) cpSparse(pristine(f), f);
  }

  function assertMerged() {
    expect(qemuSame(target, 'vhdx', source, 'raw').output).toContain('identical');
    expect(leftovers(parentDir)).toEqual(['disk.vhdx', 'disk.vhdx.blocklist.bin']);
    expect(leftovers(diffDir)).toEqual([]);
    // The rotated list is the parent's: check finds nothing to copy.
    const c = cli(['check', '--json', source, target]);
    expect(c.stderr).toBe('');
    expect(JSON.parse(c.stdout).changedBlocks).toBe(0);
  }

  it(`a merge killed at any of its last ${TAIL} mutations (the cleanup) is finished by a rerun, or by the next copy`, () => {
    reset();
    const full = cliWithHook(['merge', diff], 1e9, bin);
    expect(full.stderr).toMatch(/^vhdsync-test-hook: \d+ mutations\n$/);
    assertMerged();
    const total = full.mutations!;
    let diffGoneStatePresent = 0;
    for (let n = total - TAIL; n < total; n++) {
      // Each point is finished one way; neighbouring points (often the same step) the other way.
      for (const finisher of [n % 2 ? 'merge' : 'copy'] as const) {
        reset();
        const r = cliWithHook(['merge', diff], n, bin);
        expect({ n, signal: r.signal }).toEqual({ n, signal: 'SIGKILL' });
        if (!existsSync(diff) && existsSync(target + '.merge-state.json')) diffGoneStatePresent++;
        if (finisher === 'merge') {
          const again = cli(['merge', '--json', diff]);
          expect({ n, status: again.status, stderr: again.stderr }).toEqual({ n, status: 0, stderr: '' });
          assertMerged();
        } else if (!existsSync(diff)) {
          // The next backup cycle's copy finds the finished merge's leftovers beside the parent and clears them.
          const c = cli(['copy', '--diffdir', diffDir, source, target]);
          expect({ n, status: c.status, stderr: c.stderr }).toEqual({ n, status: 0, stderr: '' });
          expect(qemuSame(target, 'vhdx', source, 'raw').output).toContain('identical');
          expect(cli(['merge', diff]).stderr).toBe('');
          assertMerged();
        }
      }
    }
    // The window the issue is about (diff deleted, state still beside the parent) was hit.
    expect(diffGoneStatePresent).toBeGreaterThan(0);
  }, 300_000);

  it('a merge whose diff was deleted mid-merge is named with its way out, and --discard frees the parent', () => {
    reset();
    const full = cliWithHook(['merge', diff], 1e9, bin);
    reset();
    const killed = cliWithHook(['merge', diff], Math.floor(full.mutations! / 2), bin);
    expect(killed.signal).toBe('SIGKILL');
    expect(existsSync(target + '.merge-state.json')).toBe(true);
    rmSync(diff);
    rmSync(diff + '.blocklist.bin', { force: true });

    for (const args of [['copy', '--diffdir', diffDir, source, target], ['merge', diff]]) {
      const r = cli(args);
      expect(r.status).toBe(1);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toContain(`vhdsync merge --discard ${target}`);
    }
    // Discard works from the diff's name (through its marker) as well as from the parent.
    const discarded = cli(['merge', '--discard', '--json', diff]);
    expect(discarded.stderr).toBe('');
    expect(JSON.parse(discarded.stdout)).toMatchObject({ step: 'merging', finished: false });
    expect(leftovers(diffDir)).toEqual([]);
    expect(existsSync(target + '.merge-state.json')).toBe(false);
    // The parent is usable again once its list is remade; the next cycle brings it to the source.
    expect(cli(['createmeta', '--block-size', '64K', target]).status).toBe(0);
    expect(cli(['copy', '--diffdir', diffDir, source, target]).stderr).toBe('');
    expect(cli(['merge', diff]).stderr).toBe('');
    assertMerged();
  }, 120_000);

  it('--discard refuses a merge whose diff is still there (it can be finished, not undone)', () => {
    reset();
    const full = cliWithHook(['merge', diff], 1e9, bin);
    reset();
    expect(cliWithHook(['merge', diff], Math.floor(full.mutations! / 2), bin).signal).toBe('SIGKILL');
    const r = cli(['merge', '--discard', target]);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain(`run vhdsync merge ${diff} to finish`);
    expect(cli(['merge', diff]).stderr).toBe('');
    assertMerged();
  }, 120_000);

  it('a diff moved after the interruption is merged at its new place (matched by its id, not its path)', () => {
    reset();
    const full = cliWithHook(['merge', diff], 1e9, bin);
    reset();
    expect(cliWithHook(['merge', diff], Math.floor(full.mutations! / 2), bin).signal).toBe('SIGKILL');
    const moved = path.join(parentDir, 'disk_diff.vhdx');
    for (const f of [diff, diff + '.blocklist.bin']) renameSync(f, path.join(parentDir, path.basename(f)));
    const r = cli(['merge', moved]);
    expect(r.stderr).toBe('');
    expect(qemuSame(target, 'vhdx', source, 'raw').output).toContain('identical');
    expect(leftovers(parentDir)).toEqual(['disk.vhdx', 'disk.vhdx.blocklist.bin']);
    expect(leftovers(diffDir)).toEqual([]);
  }, 120_000);

  it('a --keep-diff merge killed after its state file went is reported done, and keeps the diff', () => {
    reset();
    const full = cliWithHook(['merge', '--keep-diff', diff], 1e9, bin);
    for (let n = full.mutations! - 4; n < full.mutations!; n++) {
      reset();
      expect(cliWithHook(['merge', '--keep-diff', diff], n, bin).signal).toBe('SIGKILL');
      const r = cli(['merge', '--keep-diff', diff]);
      expect({ n, status: r.status, stderr: r.stderr }).toEqual({ n, status: 0, stderr: '' });
      expect(qemuSame(target, 'vhdx', source, 'raw').output).toContain('identical');
      expect(leftovers(diffDir)).toEqual(['disk_diff.vhdx', 'disk_diff.vhdx.blocklist.bin']);
      expect(leftovers(parentDir)).toEqual(['disk.vhdx', 'disk.vhdx.blocklist.bin']);
    }
  }, 120_000);

  it('a finished marker that comes back over a parent the diff was never merged into does not pass for a done merge', () => {
    // A --keep-diff merge's last step, the marker's removal, is not flushed (decision 0003): a crash can bring the
    // marker back. If the parent is then put back as it was before the merge (restored from a copy), a rerun must
    // merge, not report the old merge as done and leave the parent unmerged.
    reset();
    const full = cliWithHook(['merge', '--keep-diff', diff], 1e9, bin);
    reset();
    expect(cliWithHook(['merge', '--keep-diff', diff], full.mutations! - 1, bin).signal).toBe('SIGKILL');
    expect(JSON.parse(readFileSync(diff + '.merging.json', 'utf8'))).toMatchObject({ finished: true, keepDiff: true });
    expect(qemuSame(target, 'vhdx', source, 'raw').output).toContain('identical');
    for (const f of [target, target + '.blocklist.bin']) cpSparse(pristine(f), f);
    expect(qemuSame(target, 'vhdx', source, 'raw').output).not.toContain('identical');
    const r = cli(['merge', diff]);
    expect({ status: r.status, stderr: r.stderr }).toEqual({ status: 0, stderr: '' });
    assertMerged();
  }, 120_000);

  it("another target's diff of the same name is never deleted or replaced by an interrupted merge's leftovers", () => {
    // A second disk with the same file name, backed up through the same --diffdir.
    const dir2 = path.join(tmp.dir, 'vms2');
    mkdirSync(dir2, { recursive: true });
    const target2 = path.join(dir2, 'disk.vhdx');
    const source2 = path.join(tmp.dir, 'source2.raw');
    rmSync(target2, { force: true });
    qemuImage(target2, 'vhdx', SIZE, [{ offset: 4 * MiB, length: MiB, fill: 0x71 }], 'subformat=dynamic,block_size=1M');
    qemuRaw(target2, 'vhdx', source2);
    qemuWrite(source2, 'raw', [{ offset: 9 * MiB, length: 65536, fill: 0x72 }]);
    expect(cli(['createmeta', '--block-size', '64K', source2, target2]).status).toBe(0);

    // Mid-merge of disk's diff: a copy for the other disk must not replace it, even with --force.
    reset();
    const full = cliWithHook(['merge', diff], 1e9, bin);
    reset();
    expect(cliWithHook(['merge', diff], Math.floor(full.mutations! / 2), bin).signal).toBe('SIGKILL');
    const refused = cli(['copy', '--force', '--diffdir', diffDir, source2, target2]);
    expect(refused.status).toBe(1);
    expect(refused.stderr).toContain(`is being merged into ${target} (interrupted); run vhdsync merge ${diff} first`);
    expect(cli(['merge', diff]).stderr).toBe('');
    assertMerged();

    // Killed in the cleanup after the diff went: the other disk's new diff of that name is left alone by
    // everything that settles the first merge.
    let n = full.mutations! - 12;
    for (; n < full.mutations!; n++) {
      reset();
      cliWithHook(['merge', diff], n, bin);
      if (!existsSync(diff) && existsSync(target + '.merge-state.json')) break;
    }
    expect(n).toBeLessThan(full.mutations!);
    expect(cli(['copy', '--diffdir', diffDir, source2, target2]).stderr).toBe('');
    const other = readFileSync(diff);
    for (const settle of [['merge', '--discard', target], ['copy', '--diffdir', diffDir, source, target]]) {
      const r = cli(settle);
      if (settle[0] === 'merge') expect(r.stderr).toBe('');
      expect(readFileSync(diff).equals(other)).toBe(true);
    }
    expect(existsSync(target + '.merge-state.json')).toBe(false);
    expect(cli(['merge', diff]).stderr).toBe('');
    expect(qemuSame(target2, 'vhdx', source2, 'raw').output).toContain('identical');
  }, 180_000);

  it("merge holds the diff's name: it waits for no copy and is refused while another run holds it", async () => {
    reset();
    const lock = await lockImage(await parseLocation(diff), 'copy');
    try {
      const r = cli(['merge', diff]);
      expect(r.status).not.toBe(0);
      expect(r.stderr).toMatch(/lock|busy|in use/i);
      // Refused before touching anything: no state, no marker, the parent untouched.
      expect(existsSync(target + '.merge-state.json')).toBe(false);
      expect(leftovers(diffDir)).toEqual(['disk_diff.vhdx', 'disk_diff.vhdx.blocklist.bin', 'disk_diff.vhdx.vhdsync-lock']);
    } finally {
      await lock.release();
    }
    expect(cli(['merge', diff]).stderr).toBe('');
    assertMerged();
  }, 120_000);
});
