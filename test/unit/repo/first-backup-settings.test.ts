/**
 * A first backup that fails after the disk's first (empty) manifest was written must not fix the disk's settings:
 * the next first backup's --hash and --block-size are the ones its point gets (second review of issue 15).
 */
import * as path from 'node:path';
import '../../../src/formats/index.js';
import { parseLocation } from '../../../src/io/location.js';
import { backupDisk, openRepository } from '../../../src/repo/index.js';
import { ObjectRepository } from '../../../src/repo/object/object-backend.js';
import type { RepoBackend } from '../../../src/repo/backend.js';
import { MemoryObjectStore } from '../../helpers/memory-object-store.js';
import { makeTempDir } from '../../helpers/tmp.js';
import { rawDisk } from '../../repo/repo-helpers.js';

describe('settings of a disk whose first backup failed', () => {
  let tmp: ReturnType<typeof makeTempDir>;
  beforeAll(() => (tmp = makeTempDir('vhdsync-firstsettings-')));
  afterAll(() => tmp.cleanup());

  const backends: [string, () => Promise<RepoBackend>][] = [
    ['object', async () => new ObjectRepository(new MemoryObjectStore())],
    ['folder', async () => openRepository(path.join(tmp.dir, 'repo'), false)],
  ];

  it.each(backends)('%s repository: a failed first backup leaves no settings behind; the next one takes its own', async (_, open) => {
    const repo = await open();
    const missing = path.join(tmp.dir, 'no-such-disk.raw');
    await expect(backupDisk(repo, await parseLocation(missing), 'vm', { blockSize: 4096, reflink: 'never' })).rejects.toThrow();
    const empty = await repo.readManifest('vm');
    expect(empty).toMatchObject({ hash: 'xxh128', blockSize: 4096, points: [] });

    const file = rawDisk(path.join(tmp.dir, 'src.raw'), 1 << 20, [[65536, 65536, 7]]);
    const s = await backupDisk(repo, await parseLocation(file), 'vm', { hash: 'sha256', blockSize: 16384, reflink: 'never' });
    expect(s.kind).toBe('full');
    expect(await repo.readManifest('vm')).toMatchObject({ hash: 'sha256', blockSize: 16384, points: [{ id: s.point }] });
    // Once the disk has a point, its settings stay (a later run's options do not change them).
    await backupDisk(repo, await parseLocation(file), 'vm', { hash: 'xxh128', blockSize: 4096, reflink: 'never' });
    expect(await repo.readManifest('vm')).toMatchObject({ hash: 'sha256', blockSize: 16384 });
  });
});
