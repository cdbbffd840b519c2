/**
 * A backup whose new manifest generation is written but whose delete of the replaced generation fails has made its
 * point: it reports success, the point restores, and the leftover generation goes in the next sweep.
 */
import * as path from 'node:path';
import '../../../src/formats/index.js';
import { parseLocation } from '../../../src/io/location.js';
import { backupDisk, listRepository, pruneDisk } from '../../../src/repo/index.js';
import { ObjectRepository } from '../../../src/repo/object/object-backend.js';
import { MemoryObjectStore } from '../../helpers/memory-object-store.js';
import { makeTempDir } from '../../helpers/tmp.js';
import { restoredObjectSha } from '../../repo/object-helpers.js';
import { rawDisk, sha256File } from '../../repo/repo-helpers.js';

describe('object manifest generations', () => {
  let tmp: ReturnType<typeof makeTempDir>;
  beforeAll(() => (tmp = makeTempDir('vhdsync-objmandel-')));
  afterAll(() => tmp.cleanup());

  it('a failed delete of the replaced generation does not fail the backup that recorded its point', async () => {
    const file = rawDisk(path.join(tmp.dir, 'src.raw'), 1 << 20, [[0, 65536, 3]]);
    const store = new MemoryObjectStore();
    const repo = new ObjectRepository(store);
    const manifests = () => store.keys().filter((k) => k.startsWith('manifests/vm/'));
    store.beforeMutation = (m) => {
      if (m.op === 'delete' && m.keys.some((k) => k.startsWith('manifests/'))) throw new Error('503 Service Unavailable');
    };
    const s = await backupDisk(repo, await parseLocation(file), 'vm', { blockSize: 16384 });
    store.beforeMutation = null;
    expect(manifests().length).toBeGreaterThan(1);
    expect((await listRepository(repo)).disks.find((d) => d.name === 'vm')?.points.map((p) => p.id)).toEqual([s.point]);
    expect(await restoredObjectSha(repo, 'vm', s.point, tmp.dir)).toBe(sha256File(file));
    await pruneDisk(repo, 'vm', { keep: 1 });
    expect(manifests()).toHaveLength(1);
  });
});
