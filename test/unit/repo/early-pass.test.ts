/**
 * An incremental's hashing starts before the backup is ready for its blocks (repo/early-pass.ts): what it hashed
 * is taken over when the point builds on the newest one, and dropped (the backup hashes again, with the data) when
 * it does not; a hashing held up by its full queue resumes, or stops, without hanging the run.
 */
import * as path from 'node:path';
import '../../../src/formats/index.js';
import { parseLocation } from '../../../src/io/location.js';
import type { ObjectRange } from '../../../src/io/object-store.js';
import { backupDisk } from '../../../src/repo/index.js';
import { ObjectRepository } from '../../../src/repo/object/object-backend.js';
import { ContentChangedError } from '../../../src/util/errors.js';
import { MemoryObjectStore } from '../../helpers/memory-object-store.js';
import { makeTempDir } from '../../helpers/tmp.js';
import { restoredObjectSha } from '../../repo/object-helpers.js';
import { rawDisk, scribble, sha256File } from '../../repo/repo-helpers.js';

const BLOCK = 4096;
/** More blocks than the queue holds (4096): the hashing waits for the backup before it takes over. */
const BLOCKS = 5000;

/** A store whose lists take a while to read, so that the hashing started beside it fills its queue meanwhile. */
class SlowListStore extends MemoryObjectStore {
  override async get(key: string, range?: ObjectRange): Promise<Buffer | null> {
    if (key.endsWith('.list')) await new Promise((resolve) => setTimeout(resolve, 300));
    return super.get(key, range);
  }
}

describe('an incremental hashed early', () => {
  let tmp: ReturnType<typeof makeTempDir>;
  beforeAll(() => (tmp = makeTempDir('vhdsync-early-')));
  afterAll(() => tmp.cleanup());

  it('is taken over when the point builds on the newest one, and dropped when it cannot', async () => {
    // Sparse: a few blocks of data among holes, which the direct path does not read.
    const src = rawDisk(path.join(tmp.dir, 'src.raw'), BLOCK * BLOCKS, [0, 1200, 4999].map((b): [number, number, number] => [b * BLOCK, BLOCK, 1 + (b % 200)]));
    const store = new SlowListStore();
    const repo = new ObjectRepository(store);
    await backupDisk(repo, await parseLocation(src), 'vm', { blockSize: BLOCK });
    scribble(src, [[4500 * BLOCK + 5, 10, 0xee]]);
    const b = await backupDisk(new ObjectRepository(store), await parseLocation(src), 'vm', { blockSize: BLOCK });
    expect(b.kind).toBe('clone');
    expect(b.changedBytes).toBe(BLOCK);
    expect(await restoredObjectSha(repo, 'vm', b.point, tmp.dir)).toBe(sha256File(src));
    // The newest point's list gone: the hashing started early is dropped, and the point is made full.
    store.objects.delete(`disks/vm/${b.point}.list`);
    scribble(src, [[10 * BLOCK, 10, 0xdd]]);
    const c = await backupDisk(new ObjectRepository(store), await parseLocation(src), 'vm', { blockSize: BLOCK });
    expect(c.note).toMatch(new RegExp(`^newest point ${b.point} cannot be built on`));
    expect(c.changedBytes).toBe(5 * BLOCK);
    expect(await restoredObjectSha(repo, 'vm', c.point, tmp.dir)).toBe(sha256File(src));
  });

  it('refuses a write that lands after the hashing ended but before the last block was sent (the point would miss it)', async () => {
    // The write goes to a block whose digest the early hashing already matched to the base: no re-read catches it,
    // only the identity check at the end of the drain (the old code stored the image as hashed, dated after the write).
    let hook: (() => Promise<void>) | null = null;
    class HookStore extends MemoryObjectStore {
      override async get(key: string, range?: ObjectRange): Promise<Buffer | null> {
        if (key.endsWith('.list') && hook) {
          const h = hook;
          hook = null;
          await h();
        }
        return super.get(key, range);
      }
    }
    const src = rawDisk(path.join(tmp.dir, 'late.raw'), BLOCK * 64, [[0, BLOCK, 1], [20 * BLOCK, BLOCK, 2]]);
    const store = new HookStore();
    await backupDisk(new ObjectRepository(store), await parseLocation(src), 'vm', { blockSize: BLOCK });
    scribble(src, [[3 * BLOCK, 10, 0xaa]]);
    hook = async () => {
      await new Promise((resolve) => setTimeout(resolve, 300)); // 64 blocks are hashed by now (if not, the hashing's own check refuses)
      scribble(src, [[10 * BLOCK, 10, 0xbb]]);
    };
    const err = await backupDisk(new ObjectRepository(store), await parseLocation(src), 'vm', { blockSize: BLOCK }).then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(ContentChangedError);
    expect((err as ContentChangedError).message).toMatch(/changed while (it|the image) was being (backed up|hashed)/);
    // Nothing was recorded: the next run backs the image up whole.
    const next = await backupDisk(new ObjectRepository(store), await parseLocation(src), 'vm', { blockSize: BLOCK });
    expect(await restoredObjectSha(new ObjectRepository(store), 'vm', next.point, tmp.dir)).toBe(sha256File(src));
  });
});
