/**
 * Fault tests: copy and merge run in a child process (the built CLI) that kills itself with SIGKILL before its
 * N-th mutating store operation (the VHDSYNC_TEST_KILL_AFTER_WRITES hook in src/sync/kill-hook.ts), at points
 * spread over data writes, allocation-table/log/header updates, the state file and the metafile rotation.
 * After each kill the images must still open, and a rerun must finish with the expected content.
 */
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import * as path from 'node:path';
import { makeTempDir } from '../helpers/tmp.js';
import { HAVE_QEMU, PYTHON_VHDI, requireTool, pyvhdiRead, run, runStatus } from '../helpers/tools.js';
import { cliAt, cliWithHook, cpSparse, privateCli, spread, MiB, qemuImage, qemuRaw, qemuSame, qemuWrite, type Change } from '../cli/sync-helpers.js';
import { openDisk } from '../../src/formats/index.js';
import { checkFresh, compareMetafiles, metafileLocationFor, readMetafile } from '../../src/meta/index.js';

/** What `check SOURCE TARGET` decides, in-process (no CLI start per kill point): both lists fresh, how many blocks differ. */
async function changedBlocks(source: string, target: string): Promise<number> {
  const s = await openDisk(source);
  const t = await openDisk(target);
  const ms = await readMetafile(metafileLocationFor(s.location), { virtualSize: s.virtualSize });
  const mt = await readMetafile(metafileLocationFor(t.location), { virtualSize: t.virtualSize });
  try {
    await checkFresh(ms, s);
    await checkFresh(mt, t);
    return (await compareMetafiles(ms, mt)).changedBlocks;
  } finally {
    for (const x of [ms, mt, s, t]) await x.close();
  }
}

const ok = requireTool(HAVE_QEMU && PYTHON_VHDI !== null, 'qemu-img, qemu-io and pyvhdi');
const d = ok ? describe : describe.skip;

const SIZE = 64 * MiB;
/** Kill points per run: 20 for VHDX targets; VHD targets (simpler metadata, no log) get 12 to keep the suite lean. */
const POINTS_FOR = { vhdx: 20, vhd: 12 } as const;
const BASE: Change[] = [
  { offset: 0, length: 6 * MiB, fill: 0xa5 },
  { offset: 36 * MiB, length: 10 * MiB, fill: 0x33 },
];
// Scattered 64 KiB changes, zeros over data, and a larger run: many extents, several blocks of the diff.
const CHANGES: Change[] = [
  ...Array.from({ length: 10 }, (_, i) => ({ offset: i * 5 * MiB + 3 * 65536, length: 65536, fill: 0x10 + i })),
  { offset: 37 * MiB, length: 256 << 10, fill: 'zero' as const },
  { offset: 50 * MiB, length: 3 * MiB, fill: 0x55 },
];

const QF = { vhdx: 'vhdx', vhd: 'vpc' } as const;

d.each(['vhdx', 'vhd'] as const)('killed with SIGKILL (%s target)', (tf) => {
  let tmp: ReturnType<typeof makeTempDir>;
  let target: string;
  let source: string;
  let expected: string;
  let diff: string;
  const pristine = (f: string) => f + '.pristine';
  const POINTS = POINTS_FOR[tf];
  let bin: string;
  const cli = (args: string[]) => cliAt(bin, args);
  const hooked = (args: string[], n: number) => cliWithHook(args, n, bin);

  beforeAll(() => {
    tmp = makeTempDir('vhdsync-crash-');
    bin = privateCli(tmp.dir);
    target = path.join(tmp.dir, `target.${tf}`);
    source = path.join(tmp.dir, 'source.raw');
    expected = path.join(tmp.dir, 'expected.raw');
    diff = path.join(tmp.dir, `target_diff.${tf}`);
    qemuImage(target, QF[tf], SIZE, BASE, tf === 'vhdx' ? 'subformat=dynamic,block_size=32M' : 'subformat=dynamic,force_size=on');
    qemuRaw(target, QF[tf], source);
    qemuWrite(source, 'raw', CHANGES);
    cpSparse(source, expected);
    expect(cli(['createmeta', '--block-size', '64K', source, target]).status).toBe(0);
    for (const f of [target, target + '.blocklist.bin']) cpSparse(f, pristine(f));
  });
  afterAll(() => tmp.cleanup());

  function restoreTarget() {
    for (const f of readdirSync(tmp.dir)) if (/^\.?target/.test(f) && !f.endsWith('.pristine')) rmSync(path.join(tmp.dir, f));
    for (const f of [target, target + '.blocklist.bin']) cpSparse(pristine(f), f);
  }

  /** The parent opens and reads in full with other implementations (qemu after its own log replay, libvhdi). */
  function assertReadable(image: string) {
    const copy = image + '.probe';
    cpSparse(image, copy);
    try {
      if (tf === 'vhdx') {
        // qemu refuses a dirty log read-only; `check -r all` replays it, as a reader must.
        const r = runStatus('qemu-img', ['check', '-r', 'all', '-f', 'vhdx', copy]);
        expect({ status: r.status, out: r.stderr }).toEqual({ status: 0, out: '' });
      } else {
        // qemu ignores VHD checksums of the header copy; libvhdi reads the whole disk through the BAT.
        expect(pyvhdiRead(copy).length).toBe(SIZE);
      }
    } finally {
      rmSync(copy, { force: true });
    }
  }

  async function assertFinal() {
    expect(qemuSame(target, QF[tf], expected, 'raw').output).toContain('identical');
    if (tf === 'vhdx') run('qemu-img', ['check', '-q', '-f', 'vhdx', target]);
    // The rotated metafile is fresh for the merged target and equal to the source's list.
    expect(await changedBlocks(source, target)).toBe(0);
    // No diff, state file or temp file is left behind.
    expect(readdirSync(tmp.dir).filter((f) => /^\.?target/.test(f) && !f.endsWith('.pristine')).sort()).toEqual([`target.${tf}`, `target.${tf}.blocklist.bin`]);
  }

  it(`copy: after a kill at any of ${POINTS} points there is no finished-looking diff, or a complete one; a rerun completes`, async () => {
    restoreTarget();
    const full = hooked(['copy', source, target], 1e9);
    expect(full.stderr).toMatch(/^vhdsync-test-hook: \d+ mutations\n$/);
    const total = full.mutations!;
    expect(total).toBeGreaterThan(POINTS);
    const points = spread(total, POINTS);
    expect(points.length).toBe(POINTS);
    for (const n of points) {
      restoreTarget();
      const r = hooked(['copy', source, target], n);
      expect({ n, signal: r.signal }).toEqual({ n, signal: 'SIGKILL' });
      // The target is never written by copy.
      expect(readFileSync(target).equals(readFileSync(pristine(target)))).toBe(true);
      if (!existsSync(diff)) {
        const again = cli(['copy', source, target]);
        expect({ n, stderr: again.stderr }).toEqual({ n, stderr: '' });
        // The killed run's temp files (an unfinished diff never has the final name) are gone after the rerun.
        expect(readdirSync(tmp.dir).filter((f) => f.endsWith('.partial'))).toEqual([]);
      }
      // A diff under the final name is complete: it reads as the source through its parent (libvhdi's view).
      expect(pyvhdiRead(diff, target).equals(readFileSync(expected))).toBe(true);
    }
    expect(cli(['merge', diff]).status).toBe(0);
    await assertFinal();
  }, 600_000);

  it(`merge: after a kill at any of ${POINTS} points the parent stays readable and a rerun finishes the job`, async () => {
    restoreTarget();
    expect(cli(['copy', source, target]).status).toBe(0);
    for (const f of [diff, diff + '.blocklist.bin']) cpSparse(f, pristine(f));
    const full = hooked(['merge', diff], 1e9);
    expect(full.stderr).toMatch(/^vhdsync-test-hook: \d+ mutations\n$/);
    await assertFinal();
    const total = full.mutations!;
    expect(total).toBeGreaterThan(POINTS);
    const points = spread(total, POINTS);
    expect(points.length).toBe(POINTS);
    const steps = new Set<string>();
    for (const n of points) {
      restoreTarget();
      for (const f of [diff, diff + '.blocklist.bin']) cpSparse(pristine(f), f);
      const r = hooked(['merge', diff], n);
      expect({ n, total, signal: r.signal, stderr: r.stderr }).toEqual({ n, total, signal: 'SIGKILL', stderr: '' });
      assertReadable(target);
      const statePath = target + '.merge-state.json';
      if (existsSync(statePath)) steps.add(JSON.parse(readFileSync(statePath, 'utf8')).step);
      const again = cli(['merge', '--json', diff]);
      expect({ n, stderr: again.stderr }).toEqual({ n, stderr: '' });
      await assertFinal();
    }
    // The kill points reached every step of the state machine.
    expect([...steps].sort()).toEqual(['cleanup', 'merging', 'rotating']);
  }, 600_000);
});

