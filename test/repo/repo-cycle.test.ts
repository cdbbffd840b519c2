/**
 * The backup cycle (issue 12): six backups of a changing disk with --keep 3, for a VHDX, a raw and a qcow2 source.
 * After each, every kept point restores byte-identical (SHA-256) to the source as it was then, `list` shows exactly
 * the kept points, and the repository grows by about the changed bytes. qemu-img and libvhdi check restored images.
 */
import * as path from 'node:path';
import { existsSync } from 'node:fs';
import { makeTempDir } from '../helpers/tmp.js';
import { cli, expectOneLineError } from '../helpers/cli.js';
import { HAVE_QEMU, PYTHON_VHDI, pyvhdiRead, requireTool, run, runStatus } from '../helpers/tools.js';
import { MiB, qemuWrite, type Change } from '../cli/sync-helpers.js';
import { contentSha, duTree, listed, restoredSha, strays } from './repo-helpers.js';
import { openRepository, backupDisk } from '../../src/repo/index.js';
import { parseLocation } from '../../src/io/location.js';
import { createHash } from 'node:crypto';

const ok = requireTool(HAVE_QEMU && PYTHON_VHDI !== null, 'qemu-img, qemu-io and pyvhdi');
const d = ok ? describe : describe.skip;
const SIZE = 32 * MiB;

/** Round r's changes: a few scattered 64 KiB writes, one larger run, and zeros over earlier data. */
function changesOf(r: number): Change[] {
  return [
    ...Array.from({ length: 4 }, (_, i) => ({ offset: ((r * 7 + i * 5) % 30) * MiB + 4096 * r, length: 65536, fill: 0x20 + r * 4 + i })),
    { offset: ((r * 3) % 28) * MiB, length: 2 * MiB, fill: 0x80 + r },
    ...(r > 1 ? [{ offset: (((r - 1) * 3) % 28) * MiB, length: MiB, fill: 'zero' as const }] : []),
  ];
}

const QEMU_FORMAT = { vhdx: 'vhdx', raw: 'raw', qcow2: 'qcow2' } as const;

d.each(['vhdx', 'raw', 'qcow2'] as const)('backup cycle of a %s source with --keep 3', (fmt) => {
  let tmp: ReturnType<typeof makeTempDir>;
  beforeAll(() => (tmp = makeTempDir('vhdsync-repo-cycle-')));
  afterAll(() => tmp.cleanup());

  it('keeps exactly the newest three points, each restoring to the source as it was', async () => {
    const source = path.join(tmp.dir, `vm.${fmt}`);
    const repo = path.join(tmp.dir, 'repo');
    run('qemu-img', ['create', '-q', '-f', QEMU_FORMAT[fmt], source, String(SIZE)]);
    const expected = new Map<string, string>();
    const ids: string[] = [];
    const figures: string[] = [];
    for (let r = 0; r < 6; r++) {
      qemuWrite(source, QEMU_FORMAT[fmt] as 'raw', changesOf(r));
      expected.set(`round${r}`, contentSha(source, QEMU_FORMAT[fmt], tmp.dir));
      const before = existsSync(repo) ? duTree(repo) : 0;
      // The VHDX cycle runs the CLI; the other two call the library (the same code without a process start each).
      let s: { point: string; kind: string; changedBytes: number; dropped: string[]; disk: string };
      if (fmt === 'vhdx') {
        const b = cli(['backup', source, '--repo', repo, '--keep', '3', '--json']);
        expect({ r, status: b.status, stderr: b.stderr }).toEqual({ r, status: 0, stderr: '' });
        s = JSON.parse(b.stdout);
      } else {
        s = await backupDisk(await openRepository(repo, false), await parseLocation(source), 'vm', { retention: { keep: 3 } });
      }
      expect(s.disk).toBe('vm');
      expect(s.kind).toBe(r === 0 ? 'full' : 'diff');
      ids.push(s.point);
      expected.set(s.point, expected.get(`round${r}`)!);
      figures.push(`round ${r}: ${(s.changedBytes / MiB).toFixed(1)} MiB changed, repository ${((duTree(repo) - before) / MiB).toFixed(1)} MiB larger (${s.dropped.length} dropped)`);
      const kept = ids.slice(-3);
      const disks = await listed(repo);
      expect(disks.map((x) => x.name)).toEqual(['vm']);
      expect(disks[0].points.map((p) => p.id)).toEqual(kept);
      expect(disks[0].points.every((p) => p.state === 'ok')).toBe(true);
      // Every kept point after every round for VHDX; the newest each round and all of them at the end for the others.
      for (const id of fmt === 'vhdx' || r === 5 ? kept : [s.point]) expect({ r, id, sha: await restoredSha(repo, 'vm', id, tmp.dir) }).toEqual({ r, id, sha: expected.get(id) });
      expect(strays(path.join(repo, 'vm'))).toEqual([]);
    }
    // eslint-disable-next-line no-console
    console.log(`${fmt} source, 32 MiB disk, 2 MiB blocks:\n${figures.join('\n')}`);
    if (fmt !== 'vhdx') return;

    // The `list` command itself: oldest first, with id and time.
    const l = cli(['list', '--repo', repo, '--json']);
    expect(l.status).toBe(0);
    const listing = JSON.parse(l.stdout) as { disks: Array<{ name: string; points: Array<{ id: string; time: string }> }> };
    expect(listing.disks[0].points.map((p) => p.id)).toEqual(ids.slice(-3));
    expect(listing.disks[0].points.every((p, i, a) => i === 0 || Date.parse(p.time) >= Date.parse(a[i - 1].time))).toBe(true);

    // Restored through the CLI as VHDX and qcow2: qemu-img checks and compares them, libvhdi reads the VHDX.
    const vhdx = path.join(tmp.dir, 'restored.vhdx');
    const r1 = cli(['restore', '--repo', repo, 'vm', '--at', ids[4], '--to', vhdx]);
    expect(r1.stderr).toBe('');
    run('qemu-img', ['check', '-q', '-f', 'vhdx', vhdx]);
    expect(createHash('sha256').update(pyvhdiRead(vhdx)).digest('hex')).toBe(expected.get(ids[4]));
    const q = path.join(tmp.dir, 'restored.qcow2');
    expect(cli(['restore', '--repo', repo, 'vm', '--to', q]).status).toBe(0);
    run('qemu-img', ['check', '-q', '-f', 'qcow2', q]);
    expect(runStatus('qemu-img', ['compare', '-f', 'qcow2', '-F', QEMU_FORMAT[fmt], q, source]).status).toBe(0);

    // The oldest kept point is a full VHDX that qemu-img opens and reads as the source was (qemu reads no differencing
    // VHDX; libvhdi 20210425 misreads a differencing VHDX whose sector bitmap block is not allocated, so the others
    // are checked through restore above).
    const file = path.join(repo, 'vm', `${ids[3]}.vhdx`);
    run('qemu-img', ['check', '-q', '-f', 'vhdx', file]);
    expect(contentSha(file, 'vhdx', tmp.dir)).toBe(expected.get(ids[3]));
    // A time picks the newest point at or before it; one before the first point is refused in one line.
    expect(cli(['restore', '--repo', repo, 'vm', '--at', new Date().toISOString(), '--to', path.join(tmp.dir, 'now.raw')]).status).toBe(0);
    expectOneLineError(cli(['restore', '--repo', repo, 'vm', '--at', '2001-01-01', '--to', path.join(tmp.dir, 'x.raw')]), 2, /no restore point at or before/);
    expect(cli(['verify', '--repo', repo]).status).toBe(0);
  }, 120_000);
});
