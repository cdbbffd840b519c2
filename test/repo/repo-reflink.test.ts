/**
 * Reflinked restore points on a real XFS (mkfs.xfs -m reflink=1 on a loop device, mounted by the test as root): every
 * point is a full VHDX that shares its unchanged blocks with the previous one (filefrag shows shared extents) and the
 * file system grows by about the changed bytes per point. Skipped with the reason where XFS cannot be mounted.
 */
import { closeSync, mkdirSync, openSync, truncateSync, writeSync } from 'node:fs';
import * as path from 'node:path';
import { spawnSync } from 'node:child_process';
import { makeTempDir } from '../helpers/tmp.js';
import { cli } from '../helpers/cli.js';
import { haveTool, run, runStatus } from '../helpers/tools.js';
import { MiB } from '../cli/sync-helpers.js';
import { restoredSha, sha256File } from './repo-helpers.js';

/** Why this machine cannot mount a test XFS, or null when it can. */
function cannotMount(): string | null {
  if (process.getuid?.() !== 0) return 'not root (mounting a loop device needs root)';
  for (const t of ['mkfs.xfs', 'mount', 'umount', 'filefrag']) if (!haveTool(t)) return `${t} missing (apt-get install xfsprogs e2fsprogs)`;
  return null;
}

function usedBytes(mnt: string): number {
  run('sync', []);
  return Number(run('df', ['--output=used', '-B1', mnt]).toString().trim().split('\n')[1]);
}

/** Extents of a file that filefrag marks shared. */
function sharedExtents(file: string): number {
  return run('filefrag', ['-v', file]).toString().split('\n').filter((l) => /\bshared\b/.test(l)).length;
}

const why = cannotMount();
// eslint-disable-next-line no-console
if (why) console.warn(`skipping the reflink tests: ${why}`);
const d = why ? describe.skip : describe;

d('restore points as reflinked full images on XFS', () => {
  let tmp: ReturnType<typeof makeTempDir>;
  let mnt: string;
  let mounted = false;
  beforeAll(() => {
    tmp = makeTempDir('vhdsync-repo-reflink-');
    const img = path.join(tmp.dir, 'xfs.img');
    mnt = path.join(tmp.dir, 'mnt');
    mkdirSync(mnt);
    closeSync(openSync(img, 'w'));
    truncateSync(img, 320 * MiB);
    run('mkfs.xfs', ['-q', '-m', 'reflink=1', img]);
    const m = spawnSync('mount', ['-o', 'loop', img, mnt], { encoding: 'utf8' });
    if (m.status !== 0) throw new Error(`mount -o loop failed: ${m.stderr}`);
    mounted = true;
  });
  afterAll(() => {
    if (mounted) runStatus('umount', [mnt]);
    tmp?.cleanup();
  });

  it('--reflink always makes full points sharing unchanged blocks; the repository grows by about the changed bytes', async () => {
    const source = path.join(tmp.dir, 'vm.raw');
    const repo = path.join(mnt, 'repo');
    closeSync(openSync(source, 'w'));
    truncateSync(source, 64 * MiB);
    const fd = openSync(source, 'r+');
    for (let i = 0; i < 40; i++) writeSync(fd, Buffer.alloc(MiB, 0x10 + i), 0, MiB, i * MiB);
    const first = cli(['backup', source, '--repo', repo, '--reflink', 'always', '--json']);
    expect(first.stderr).toBe('');
    const shas = new Map<string, string>([[JSON.parse(first.stdout).point, sha256File(source)]]);
    const figures: string[] = [];
    for (let r = 1; r <= 3; r++) {
      // 1 MiB of changes in 4 places (each in its own 2 MiB block: 8 MiB of blocks change, 1 MiB... of bytes written).
      for (let k = 0; k < 4; k++) writeSync(fd, Buffer.alloc(256 << 10, 0x80 + r * 4 + k), 0, 256 << 10, (r * 9 + k * 13) % 60 * MiB);
      const before = usedBytes(mnt);
      const b = cli(['backup', source, '--repo', repo, '--reflink', 'always', '--json']);
      expect(b.stderr).toBe('');
      const s = JSON.parse(b.stdout) as { point: string; kind: string; parent: string | null; changedBytes: number };
      expect({ kind: s.kind, parent: s.parent }).toEqual({ kind: 'clone', parent: null });
      shas.set(s.point, sha256File(source));
      const grown = usedBytes(mnt) - before;
      figures.push(`point ${r}: ${(s.changedBytes / MiB).toFixed(1)} MiB of blocks changed, file system ${(grown / MiB).toFixed(2)} MiB more used (${(grown / s.changedBytes).toFixed(2)}x)`);
      // Growth: the changed blocks, plus the metafile, manifest, VHDX header/log/BAT pages the clone rewrote.
      expect(grown).toBeLessThanOrEqual(1.2 * s.changedBytes + 512 * 1024);
      const image = path.join(repo, 'vm', `${s.point}.vhdx`);
      expect(sharedExtents(image)).toBeGreaterThan(0);
      // A standalone full VHDX: qemu-img opens it and reads the source as it was.
      run('qemu-img', ['check', '-q', '-f', 'vhdx', image]);
      expect(runStatus('qemu-img', ['compare', '-q', '-f', 'vhdx', '-F', 'raw', image, source]).status).toBe(0);
    }
    closeSync(fd);
    // eslint-disable-next-line no-console
    console.log(`reflinked points of a 64 MiB disk (40 MiB data), 2 MiB blocks:\n${figures.join('\n')}`);
    for (const [id, sha] of shas) expect(await restoredSha(repo, 'vm', id, tmp.dir)).toBe(sha);
    // Dropping a clone point deletes its file; the others keep the shared blocks.
    expect(cli(['prune', '--repo', repo, '--keep', '2']).status).toBe(0);
    const kept = [...shas.keys()].slice(-2);
    for (const id of kept) expect(await restoredSha(repo, 'vm', id, tmp.dir)).toBe(shas.get(id));
  }, 180_000);
});
