/**
 * Crash safety of QCOW2 writes: `merge` of a QCOW2 diff into a QCOW2 target (our writer, on an image qemu made with
 * a snapshot so shared clusters are copied on write) is killed with SIGKILL before its N-th mutating store operation
 * at 24 points spread over the whole run. After each kill `qemu-img check` finds no corruption in the target (leaks
 * are allowed after a crash), and a rerun finishes with the expected content and no leaks (the dirty bit our writer
 * sets makes the rerun's writable open rebuild the refcounts).
 */
import { readdirSync, rmSync } from 'node:fs';
import * as path from 'node:path';
import { makeTempDir } from '../helpers/tmp.js';
import { HAVE_QEMU, requireTool, run, runStatus } from '../helpers/tools.js';
import { cliAt, cliWithHook, cpSparse, privateCli, spread, MiB } from '../cli/sync-helpers.js';

const ok = requireTool(HAVE_QEMU, 'qemu-img and qemu-io');
const d = ok ? describe : describe.skip;
const POINTS = 24;

d('QCOW2 merge killed with SIGKILL', () => {
  let tmp: ReturnType<typeof makeTempDir>;
  let bin: string;
  let target: string;
  let source: string;
  let diff: string;
  const pristine = (f: string) => f + '.pristine';
  const cli = (args: string[]) => cliAt(bin, args);

  beforeAll(() => {
    tmp = makeTempDir('qcow2-crash-');
    bin = privateCli(tmp.dir);
    target = path.join(tmp.dir, 'target.qcow2');
    source = path.join(tmp.dir, 'source.qcow2');
    diff = path.join(tmp.dir, 'target_diff.qcow2');
    run('qemu-img', ['create', '-q', '-f', 'qcow2', target, '24M']);
    run('qemu-io', ['-f', 'qcow2', '-c', 'write -q -P 0xa5 0 6M', '-c', 'write -q -P 0x33 12M 8M', target]);
    run('qemu-img', ['snapshot', '-c', 'before', target]);
    run('qemu-img', ['convert', '-O', 'qcow2', target, source]);
    const cmds = Array.from({ length: 10 }, (_, i) => ['-c', `write -q -P ${0x10 + i} ${i * 2 * MiB + 3 * 65536} 65536`]).flat();
    run('qemu-io', ['-f', 'qcow2', ...cmds, '-c', `write -q -z ${13 * MiB} ${256 << 10}`, '-c', `write -q -P 0x55 ${17 * MiB} ${3 * MiB}`, source]);
    expect(cli(['createmeta', '--block-size', '64K', source, target]).status).toBe(0);
    expect(cli(['copy', source, target]).status).toBe(0);
    for (const f of [target, `${target}.blocklist.bin`, diff, `${diff}.blocklist.bin`]) cpSparse(f, pristine(f));
  });
  afterAll(() => tmp.cleanup());

  function restore(): void {
    for (const f of readdirSync(tmp.dir)) if (/^\.?target/.test(f) && !f.endsWith('.pristine')) rmSync(path.join(tmp.dir, f));
    for (const f of [target, `${target}.blocklist.bin`, diff, `${diff}.blocklist.bin`]) cpSparse(pristine(f), f);
  }

  /** qemu-img check: 0 (clean) or 3 (leaks only); never corruption. */
  function noCorruption(n: number): void {
    const r = runStatus('qemu-img', ['check', '--output=json', target]);
    const report = JSON.parse(r.stdout || '{}');
    expect({ n, status: r.status === 3 ? 0 : r.status, corruptions: report.corruptions ?? 0 }).toEqual({ n, status: 0, corruptions: 0 });
  }

  it(`after a kill at any of ${POINTS} points the target has no corruption and a rerun finishes the merge`, () => {
    restore();
    const full = cliWithHook(['merge', diff], 1e9, bin);
    expect(full.stderr).toMatch(/^vhdsync-test-hook: \d+ mutations\n$/);
    expect(runStatus('qemu-img', ['compare', '-q', target, source]).status).toBe(0);
    expect(runStatus('qemu-img', ['check', '-q', target]).status).toBe(0);
    const points = spread(full.mutations!, POINTS);
    expect(points.length).toBe(POINTS);
    for (const n of points) {
      restore();
      const r = cliWithHook(['merge', diff], n, bin);
      expect({ n, signal: r.signal }).toEqual({ n, signal: 'SIGKILL' });
      noCorruption(n);
      const again = cli(['merge', diff]);
      // Our writer leaves the dirty bit while it writes: the rerun's writable open rebuilds the refcounts.
      expect({ n, stderr: again.stderr }).toEqual({ n, stderr: expect.stringMatching(/^(|vhdsync: .*target\.qcow2: warning: the image was left dirty by a writer that stopped; refcounts rebuilt \(\d+ clusters corrected\)\n)$/) });
      expect({ n, check: runStatus('qemu-img', ['check', '-q', target]).status }).toEqual({ n, check: 0 });
      expect({ n, same: runStatus('qemu-img', ['compare', '-q', target, source]).status }).toEqual({ n, same: 0 });
    }
    // The snapshot taken before the merge still reads as it was.
    run('qemu-img', ['snapshot', '-a', 'before', target]);
    expect(runStatus('qemu-img', ['compare', '-q', target, pristine(target)]).status).toBe(0);
  }, 600_000);
});
