/**
 * `verify --repair` on an object repository (in-memory store): a deleted or altered manifest rebuilt from the points'
 * maps and lists (the same points, kinds and changed bytes; every point restores; the damaged generation kept), an
 * intact one left alone, and what cannot be proven (a map without its list, a list of another map) refused with
 * nothing written.
 */
import { closeSync, openSync, truncateSync, writeSync } from 'node:fs';
import * as path from 'node:path';
import '../../../src/formats/index.js';
import { parseLocation } from '../../../src/io/location.js';
import { backupDisk, repairObjectManifest, verifyDisk } from '../../../src/repo/index.js';
import { ObjectRepository } from '../../../src/repo/object/object-backend.js';
import { RepositoryDamageError } from '../../../src/util/errors.js';
import { MemoryObjectStore } from '../../helpers/memory-object-store.js';
import { makeTempDir } from '../../helpers/tmp.js';
import { restoredObjectSha, unreferenced } from '../../repo/object-helpers.js';
import { sha256File } from '../../repo/repo-helpers.js';

const BLOCK = 16 << 10;
const BLOCKS = 24;

describe('object repository: verify --repair', () => {
  let tmp: ReturnType<typeof makeTempDir>;
  let n = 0;
  beforeAll(() => (tmp = makeTempDir('vhdsync-objrepair-')));
  afterAll(() => tmp.cleanup());

  /** Three points of disk vm, each changing some blocks; returns the repository, ids and each point's content sha. */
  async function threePoints() {
    const store = new MemoryObjectStore();
    const repo = new ObjectRepository(store);
    const file = path.join(tmp.dir, `src${n++}.raw`);
    closeSync(openSync(file, 'w'));
    truncateSync(file, BLOCK * BLOCKS);
    const shas: string[] = [];
    for (let r = 0; r < 3; r++) {
      const fd = openSync(file, 'r+');
      for (let b = r; b < BLOCKS; b += 3) writeSync(fd, Buffer.alloc(999, 0x10 * (r + 1) + b), 0, 999, b * BLOCK + 5);
      closeSync(fd);
      await backupDisk(repo, await parseLocation(file), 'vm', { blockSize: BLOCK });
      shas.push(sha256File(file));
    }
    const m = (await repo.readManifest('vm'))!;
    return { store, repo, m, shas };
  }

  it('rebuilds a deleted or an altered manifest from the maps and lists: same points, every one restores', async () => {
    for (const damage of ['delete', 'alter'] as const) {
      const { store, repo, m, shas } = await threePoints();
      const key = store.keys().filter((k) => k.startsWith('manifests/vm/')).pop()!;
      const original = (await store.get(key))!;
      const altered = Buffer.from(original.toString('utf8').replace('"clone"', '"clon"'));
      if (damage === 'delete') await store.delete([key]);
      else store.objects.get(key)!.body = altered;
      const r = await repairObjectManifest(repo, 'vm');
      expect(r.rebuilt).toBe(true);
      expect(r.reason).toMatch(damage === 'delete' ? /^manifest missing$/ : /manifest damaged/);
      const rebuilt = (await repo.readManifest('vm'))!;
      // Everything but where the points came from, which the lost manifest alone knew.
      expect(rebuilt.points.map(({ source: _s, ...p }) => p)).toEqual(m.points.map(({ source: _s, time, ...p }) => ({ ...p, time: time.replace(/\.\d{3}Z$/, '.000Z') })));
      expect(rebuilt.hash).toBe(m.hash);
      expect(rebuilt.blockSize).toBe(m.blockSize);
      for (const [i, p] of m.points.entries()) expect(await restoredObjectSha(repo, 'vm', p.id, tmp.dir)).toBe(shas[i]);
      expect((await verifyDisk(repo, 'vm')).ok).toBe(true);
      if (damage === 'alter') {
        expect(r.movedAside).toMatch(/^manifests\/vm\/\d{12}\.json\.damaged-\d{8}T\d{6}Z$/);
        expect((await store.get(r.movedAside!))!.equals(altered)).toBe(true);
      }
      // Nothing else changed: every object is referenced (the kept damaged copy aside).
      expect((await unreferenced(store.keys(), (k) => store.get(k))).filter((k) => !k.includes('.damaged-'))).toEqual([]);
      // A second repair finds the manifest intact, having read it once.
      const reads: string[] = [];
      store.beforeRead = (k) => void (k.startsWith('manifests/') && reads.push(k));
      expect((await repairObjectManifest(repo, 'vm')).rebuilt).toBe(false);
      store.beforeRead = null;
      expect(reads).toHaveLength(1);
    }
  });

  it('refuses what it cannot prove, writing nothing: a map without its list, a list that belongs to another map', async () => {
    for (const damage of ['no list', 'swapped list'] as const) {
      const { store, repo, m } = await threePoints();
      await store.delete([store.keys().filter((k) => k.startsWith('manifests/vm/')).pop()!]);
      const [a, b] = m.points;
      if (damage === 'no list') await store.delete([`disks/vm/${b.id}.list`]);
      else store.objects.get(`disks/vm/${b.id}.list`)!.body = (await store.get(`disks/vm/${a.id}.list`))!;
      const before = store.keys();
      const err = await repairObjectManifest(repo, 'vm').catch((e: unknown) => e);
      expect(err).toBeInstanceOf(RepositoryDamageError);
      expect((err as Error).message).toMatch(new RegExp(`^cannot rebuild the manifest: restore point ${b.id} cannot be proven .*\\(nothing was written\\)$`));
      // The lease object aside, the store is as it was.
      expect(store.keys().filter((k) => !k.startsWith('leases/'))).toEqual(before.filter((k) => !k.startsWith('leases/')));
    }
  });
});
