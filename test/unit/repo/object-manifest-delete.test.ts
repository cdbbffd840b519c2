/**
 * A backup whose new manifest generation is written but whose delete of the replaced generation, or whose listing
 * that confirms no newer generation, fails has made its point: it reports success, the point restores, and the
 * leftover generation goes in the next sweep.
 */
import { jest } from '@jest/globals';
import * as path from 'node:path';
import '../../../src/formats/index.js';
import { parseLocation } from '../../../src/io/location.js';
import { backupDisk, listRepository, pruneDisk } from '../../../src/repo/index.js';
import { ObjectRepository } from '../../../src/repo/object/object-backend.js';
import type { ObjectInfo } from '../../../src/io/object-store.js';
import { IoError } from '../../../src/util/errors.js';
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

  it('a failed listing after the generation recording the point was created does not fail the backup: one notice, the point restores', async () => {
    const file = rawDisk(path.join(tmp.dir, 'src2.raw'), 1 << 20, [[0, 65536, 5]]);
    /** A store whose listings of the manifests fail (after its retries) from the create of generation 2 on. */
    class Failing extends MemoryObjectStore {
      down = false;
      override async *list(prefix: string): AsyncIterable<ObjectInfo> {
        if (this.down && prefix.startsWith('manifests/')) throw new IoError('cannot reach http://127.0.0.1:9: ECONNREFUSED (after 6 attempts)', `${this.display}/${prefix}`);
        yield* super.list(prefix);
      }
    }
    const store = new Failing();
    const repo = new ObjectRepository(store);
    store.beforeMutation = (m) => {
      if (m.op === 'put' && m.key === 'manifests/vm/000000000002.json') store.down = true;
    };
    const lines: string[] = [];
    const write = jest.spyOn(process.stderr, 'write').mockImplementation((chunk) => (lines.push(String(chunk)), true));
    let s;
    try {
      s = await backupDisk(repo, await parseLocation(file), 'vm', { blockSize: 16384 });
    } finally {
      write.mockRestore();
    }
    store.down = false;
    store.beforeMutation = null;
    expect(lines).toEqual([
      "vhdsync: disk 'vm': generation 2 of its manifest is written, but listing the manifests to confirm that no other run wrote a newer one failed (s3://memory/repo/manifests/vm/: cannot reach http://127.0.0.1:9: ECONNREFUSED (after 6 attempts)); the store shows no other run took the lease, so none can have: going on\n",
    ]);
    expect((await listRepository(repo)).disks.find((d) => d.name === 'vm')?.points.map((p) => p.id)).toEqual([s.point]);
    expect(await restoredObjectSha(repo, 'vm', s.point, tmp.dir)).toBe(sha256File(file));
  });
});
