/**
 * A resumed merge re-checks its parent (issue 13, item 4): a merge killed mid-way, whose parent someone then wrote
 * to (qemu-io), must refuse with one line instead of finishing and stamping the parent with the source's list; an
 * untouched parent must still resume to the right content.
 */
import { existsSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import * as path from 'node:path';
import { makeTempDir } from '../helpers/tmp.js';
import { HAVE_QEMU, requireTool } from '../helpers/tools.js';
import { expectOneLineError } from '../helpers/cli.js';
import { cliAt, cliWithHook, cpSparse, privateCli, MiB, qemuImage, qemuRaw, qemuSame, qemuWrite, type Change } from '../cli/sync-helpers.js';

const ok = requireTool(HAVE_QEMU, 'qemu-img and qemu-io');
const d = ok ? describe : describe.skip;

const SIZE = 48 * MiB;
const CHANGES: Change[] = [
  ...Array.from({ length: 8 }, (_, i) => ({ offset: i * 4 * MiB + 65536, length: 2 * 65536, fill: 0x20 + i })),
  { offset: 40 * MiB, length: 2 * MiB, fill: 0x66 },
];
/** A write the diff does not cover, so the resumed merge cannot paper over it. */
const INTRUDER: Change = { offset: 46 * MiB, length: 4096, fill: 0x5a };
const QF = { vhd: 'vpc', vhdx: 'vhdx' } as const;

d.each(['vhd', 'vhdx'] as const)('resumed merge into a %s parent', (fmt) => {
  let tmp: ReturnType<typeof makeTempDir>;
  let bin: string;
  let target: string;
  let source: string;
  let diff: string;
  const files = () => [target, target + '.blocklist.bin', diff, diff + '.blocklist.bin'];
  const state = () => target + '.merge-state.json';
  const cli = (args: string[]) => cliAt(bin, args);

  beforeAll(() => {
    tmp = makeTempDir('vhdsync-resume-');
    bin = privateCli(tmp.dir);
    target = path.join(tmp.dir, `t.${fmt}`);
    source = path.join(tmp.dir, 's.raw');
    diff = path.join(tmp.dir, `t_diff.${fmt}`);
    qemuImage(target, QF[fmt], SIZE, [{ offset: 0, length: 8 * MiB, fill: 0xa5 }], fmt === 'vhd' ? 'subformat=dynamic,force_size=on' : 'subformat=dynamic,block_size=8M');
    qemuRaw(target, QF[fmt], source);
    qemuWrite(source, 'raw', CHANGES);
    expect(cli(['createmeta', '--block-size', '64K', source, target]).status).toBe(0);
    expect(cli(['copy', source, target]).status).toBe(0);
    for (const f of files()) cpSparse(f, f + '.pristine');
  });
  afterAll(() => tmp.cleanup());

  function restore() {
    for (const f of readdirSync(tmp.dir)) if (/^\.?t[._]/.test(f) && !f.endsWith('.pristine')) rmSync(path.join(tmp.dir, f));
    for (const f of files()) cpSparse(f + '.pristine', f);
  }

  /** Kills a merge at `n` mutations and returns the step its state file was left at (null: none). */
  function killAt(n: number): string | null {
    restore();
    expect(cliWithHook(['merge', diff], n, bin).signal).toBe('SIGKILL');
    return existsSync(state()) ? JSON.parse(readFileSync(state(), 'utf8')).step : null;
  }

  /** The first kill point, scanning from `from`, that leaves the state at `step`. */
  function pointAt(step: string, from: number, total: number): number {
    for (let n = from; n < total; n += Math.max(1, Math.floor(total / 40))) if (killAt(n) === step) return n;
    throw new Error(`no kill point leaves the merge at step ${step}`);
  }

  let total = 0;
  const points: Record<string, number> = {};

  it('the kill points: one before the new id reached the parent, one mid-merge, one after the data step', () => {
    restore();
    const full = cliWithHook(['merge', diff], 1e9, bin);
    total = full.mutations!;
    // The first mutation after the state file's is the new id going into the parent.
    for (let n = 0; n < total; n++) {
      if (killAt(n) === 'merging') {
        points.beforeId = n;
        break;
      }
    }
    points.merging = pointAt('merging', Math.floor(total / 3), total);
    // The data step ends a few mutations before the run does: scan back from the end to the first `rotating` point
    // (later ones may already have replaced the parent's list before the kill).
    let n = total - 1;
    while (n > points.merging && killAt(n) !== 'rotating') n--;
    while (n > points.merging && killAt(n - 1) === 'rotating') n--;
    points.rotating = n;
    expect(points.beforeId).toBeLessThan(points.merging);
  }, 300_000);

  it.each(['beforeId', 'merging', 'rotating'])('killed at %s, then the parent written to: the rerun refuses with one line', (at) => {
    killAt(points[at]);
    qemuWrite(target, QF[fmt], [INTRUDER]);
    const written = readFileSync(target);
    const r = cli(['merge', diff]);
    expectOneLineError(r, 1, /parent .* was written to while its merge was interrupted \(.*\).*restore it from a backup.*delete .*merge-state\.json and run vhdsync createmeta/);
    // Refused before writing, except a VHD mid-merge, which only its content can tell (checked before rotating).
    if (!(fmt === 'vhd' && at === 'merging')) expect(readFileSync(target).equals(written)).toBe(true);
    // The parent's list was not replaced with one claiming the source's content, and the state stays for the way out.
    expect(readFileSync(target + '.blocklist.bin').equals(readFileSync(target + '.blocklist.bin.pristine'))).toBe(true);
    expect(existsSync(state())).toBe(true);
    expectOneLineError(cli(['merge', diff]), 1, /was written to while its merge was interrupted/);
  }, 120_000);

  it.each(['beforeId', 'merging', 'rotating'])('killed at %s, parent untouched: the rerun finishes with the source content', (at) => {
    killAt(points[at]);
    const r = cli(['merge', diff]);
    expect(r.stderr).toBe('');
    expect(qemuSame(target, QF[fmt], source, 'raw').output).toContain('identical');
    expect(cli(['check', source, target]).stdout).toMatch(/no blocks differ/);
    expect(existsSync(state())).toBe(false);
  }, 120_000);
});
