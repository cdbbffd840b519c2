/**
 * The guards of an object repository backup's early reads (src/repo/object/object-backend.ts, object-session.ts):
 * the manifest read beside the lease take is used only when the listing under the lease shows the same version
 * (same generation, same ETag); the listings made as soon as the lease is held serve recordLater and the sweep only
 * for the manifest they show as the newest; a take found busy reads no manifest early on --wait's next polls; and
 * the listings of a session that ends untaken stop paging.
 */
import { closeSync, openSync, writeSync } from 'node:fs';
import { createHash } from 'node:crypto';
import * as path from 'node:path';
import '../../../src/formats/index.js';
import type { ObjectInfo, ObjectRange } from '../../../src/io/object-store.js';
import { parseLocation } from '../../../src/io/location.js';
import { backupDisk } from '../../../src/repo/index.js';
import { parseManifest, serializeManifest } from '../../../src/repo/manifest.js';
import { ObjectRepository } from '../../../src/repo/object/object-backend.js';
import { BusyError, IoError, NotFoundError } from '../../../src/util/errors.js';
import { MemoryObjectStore } from '../../helpers/memory-object-store.js';
import { makeTempDir } from '../../helpers/tmp.js';
import { restoredObjectSha } from '../../repo/object-helpers.js';
import { rawDisk, sha256File } from '../../repo/repo-helpers.js';

const BLOCK = 16 << 10;
const BLOCKS = 32;
const OPTS = { blockSize: BLOCK };
const turn = () => new Promise((resolve) => setImmediate(resolve));
const manifestKey = (g: number) => `manifests/vm/${String(g).padStart(12, '0')}.json`;

/**
 * A memory store whose every request takes a turn of the event loop (requests sent together are in flight
 * together), logged as `op key` in the order they were sent; a listing is read whole when it is sent. Hooks run
 * before a listing (`beforeList`), after one (`afterList`), and before a GET (`beforeGet`, which may throw).
 */
class Staged extends MemoryObjectStore {
  readonly log: string[] = [];
  beforeList: ((prefix: string) => Promise<void> | void) | null = null;
  afterList: ((prefix: string) => void) | null = null;
  beforeGet: ((key: string) => Promise<void> | void) | null = null;
  afterGet: ((key: string) => Promise<void> | void) | null = null;

  override async get(key: string, range?: ObjectRange): Promise<Buffer | null> {
    this.log.push(`get ${key}`);
    await turn();
    await this.beforeGet?.(key);
    const bytes = await super.get(key, range);
    await this.afterGet?.(key);
    return bytes;
  }

  override async head(key: string): Promise<ObjectInfo | null> {
    this.log.push(`head ${key}`);
    await turn();
    return super.head(key);
  }

  override async put(key: string, body: Uint8Array, conditions?: Parameters<MemoryObjectStore['put']>[2]): Promise<{ etag: string }> {
    this.log.push(`put ${key}`);
    await turn();
    return super.put(key, body, conditions);
  }

  override async delete(keys: readonly string[], fence?: Parameters<MemoryObjectStore['delete']>[1]): Promise<void> {
    this.log.push(`delete ${keys.join(',')}`);
    await turn();
    return super.delete(keys, fence);
  }

  override async *list(prefix: string): AsyncIterable<ObjectInfo> {
    this.log.push(`list ${prefix}`);
    await this.beforeList?.(prefix);
    const page: ObjectInfo[] = [];
    for await (const o of super.list(prefix)) page.push(o);
    await turn();
    this.afterList?.(prefix);
    yield* page;
  }
}

/** Overwrites 100 bytes of block `block` of `file` with `fill`. */
function change(file: string, block: number, fill: number): void {
  const fd = openSync(file, 'r+');
  writeSync(fd, Buffer.alloc(100, fill), 0, 100, block * BLOCK + 3);
  closeSync(fd);
}

/** The ids of the points generation `g` of disk 'vm' lists. */
function pointsOf(store: MemoryObjectStore, g: number): string[] {
  return parseManifest(store.objects.get(manifestKey(g))!.body).points.map((p) => p.id);
}

describe('object repository early reads', () => {
  let tmp: ReturnType<typeof makeTempDir>;
  beforeAll(() => (tmp = makeTempDir('vhdsync-objearly-')));
  afterAll(() => tmp.cleanup());
  /** A raw source whose block b is filled with b + 1. */
  const source = (name: string) => rawDisk(path.join(tmp.dir, name), BLOCK * BLOCKS, Array.from({ length: BLOCKS }, (_, b): [number, number, number] => [b * BLOCK, BLOCK, b + 1]));

  it('an early read of a generation created again with other content before the listing under the lease is not used (its ETag differs): the backup builds on the new content', async () => {
    const src = source('etag.raw');
    const store = new Staged();
    const first = await backupDisk(new ObjectRepository(store), await parseLocation(src), 'vm', OPTS);
    change(src, 3, 0xaa);
    const second = await backupDisk(new ObjectRepository(store), await parseLocation(src), 'vm', OPTS);
    expect(pointsOf(store, 3)).toEqual([first.point, second.point]);
    // Generation 3 as another writer created it again (a valid manifest of the same generation): the first point
    // alone, the second dropped (its id is below the high-water mark, so it is not recorded again).
    const listed = parseManifest(store.objects.get(manifestKey(3))!.body);
    const other = serializeManifest({ ...listed, points: listed.points.slice(0, 1), highest: second.point, writer: 'feedfacefeedface' });
    change(src, 9, 0xbb);
    // The run's early read GETs generation 3; right after it the key is deleted and created with the other content,
    // and only then is the lease's listing answered: the listing under the lease shows generation 3, another ETag.
    let open!: () => void;
    const gate = new Promise<void>((resolve) => (open = resolve));
    let replaced = false;
    store.beforeList = async (prefix) => {
      if (prefix !== 'leases/vm/') return;
      store.beforeList = null;
      await gate;
    };
    store.afterGet = async (key) => {
      if (key !== manifestKey(3) || replaced) return;
      replaced = true;
      const etag = store.objects.get(key)!.etag;
      await store.delete([key]);
      expect((await store.put(key, other, { ifNoneMatch: '*' })).etag).not.toBe(etag);
      open();
    };
    const from = store.log.length;
    const mine = await backupDisk(new ObjectRepository(store), await parseLocation(src), 'vm', OPTS);
    expect(replaced).toBe(true);
    // The new point built on the first one, as the new content lists it (blocks 3 and 9 differ from it; from the
    // early read's second point only block 9 would), after it in generation 4; generation 3 was read again.
    expect(mine.changedBytes).toBe(2 * BLOCK);
    expect(pointsOf(store, 4)).toEqual([first.point, mine.point]);
    expect(store.log.slice(from).filter((r) => r === `get ${manifestKey(3)}`)).toHaveLength(2);
    expect(await restoredObjectSha(new ObjectRepository(store), 'vm', mine.point, tmp.dir)).toBe(sha256File(src));
  });

  it('a manifest newer than the listings made when the lease was taken (a late writer wrote it meanwhile): the disk is listed again, not taken from them', async () => {
    const src = source('relist.raw');
    const store = new Staged();
    await backupDisk(new ObjectRepository(store), await parseLocation(src), 'vm', OPTS);
    change(src, 3, 0xaa);
    const second = await backupDisk(new ObjectRepository(store), await parseLocation(src), 'vm', OPTS);
    // Block 3's first content: the first point's alone once the second changed it.
    const firstBlock3 = `disks/vm/blocks/${createHash('sha256').update(Buffer.alloc(BLOCK, 4)).digest('hex')}`;
    expect(store.objects.has(firstBlock3)).toBe(true);
    // The source's block 3 goes back to that content: the next point needs that block again.
    change(src, 3, 4);
    let listedDisk!: () => void;
    const diskListed = new Promise<void>((resolve) => (listedDisk = resolve));
    store.afterList = (prefix) => {
      if (prefix === 'disks/vm/') listedDisk();
    };
    let reads = 0;
    store.beforeGet = async (key) => {
      if (key !== manifestKey(3)) return;
      reads++;
      // The early read fails (a 503): readManifest reads generation 3 under the lease itself.
      if (reads === 1) throw new IoError('503 Slow Down', key);
      if (reads !== 2) return;
      // Once the session's listings (manifests and disk objects) are made, before its read of generation 3: what a
      // late writer's prune does (its lease lapsed unnoticed) — generation 4 keeps the second point alone, generation
      // 3 goes, and so do the first point's map, list and its one block no other point references.
      await diskListed;
      const m = parseManifest(store.objects.get(key)!.body);
      const [p1, p2] = m.points;
      await store.put(manifestKey(4), serializeManifest({ ...m, generation: 4, points: [p2], highest: p2.id, writer: 'feedfacefeedface' }), { ifNoneMatch: '*' });
      await store.delete([key, `disks/vm/${p1.image}`, `disks/vm/${p1.id}.list`, firstBlock3]);
    };
    const from = store.log.length;
    const mine = await backupDisk(new ObjectRepository(store), await parseLocation(src), 'vm', OPTS);
    expect(reads).toBe(2);
    // The new point built on the second one, in generation 5, and restores: the block it needs was sent again, not
    // taken for present from the listing made at the take (which still showed it).
    expect(mine.changedBytes).toBe(BLOCK);
    expect(pointsOf(store, 5)).toEqual([second.point, mine.point]);
    expect(await restoredObjectSha(new ObjectRepository(store), 'vm', mine.point, tmp.dir)).toBe(sha256File(src));
    const run = store.log.slice(from);
    expect(run).toContain(`put ${firstBlock3}`);
    // The disk was listed again, after the late writer's deletes.
    expect(run.filter((r) => r === 'list disks/vm/')).toHaveLength(2);
  });

  it('--wait: after a take found the lease held, the next take on the same repository object reads no manifest early; a new repository object does', async () => {
    const src = source('wait.raw');
    const store = new Staged();
    await backupDisk(new ObjectRepository(store), await parseLocation(src), 'vm', OPTS);
    change(src, 5, 0xcc);
    /** The manifest requests of the run logged from `from` that were sent before its lease's PUT. */
    const readEarly = (from: number): string[] => {
      const run = store.log.slice(from);
      const take = run.findIndex((r) => r.startsWith('put leases/vm/'));
      expect(take).toBeGreaterThan(-1);
      return run.slice(0, take).filter((r) => r.startsWith('list manifests/') || r.startsWith('get manifests/'));
    };
    const holder = await new ObjectRepository(store).lockDisk('vm', 'prune');
    const repo = new ObjectRepository(store);
    let from = store.log.length;
    // The first try (what --wait's first poll runs): busy, having read the manifest early beside the take.
    await expect(backupDisk(repo, await parseLocation(src), 'vm', OPTS)).rejects.toBeInstanceOf(BusyError);
    const busy = store.log.slice(from);
    expect(busy).toContain('list manifests/vm/');
    expect(busy).toContain(`get ${manifestKey(2)}`);
    await holder.release();
    // The next poll, on the same repository object: the lease is free now.
    from = store.log.length;
    const next = await backupDisk(repo, await parseLocation(src), 'vm', OPTS);
    expect(readEarly(from)).toEqual([]);
    expect(next.changedBytes).toBe(BLOCK);
    expect(await restoredObjectSha(new ObjectRepository(store), 'vm', next.point, tmp.dir)).toBe(sha256File(src));
    // A new repository object (a new run) reads the manifest beside its take again.
    change(src, 6, 0xdd);
    from = store.log.length;
    const fresh = await backupDisk(new ObjectRepository(store), await parseLocation(src), 'vm', OPTS);
    expect(readEarly(from)).toEqual(['list manifests/vm/', `get ${manifestKey(3)}`]);
    expect(fresh.changedBytes).toBe(BLOCK);
  });

  it('a backup that fails after taking the lease (its source cannot be opened) stops paging the listing of the disk made at the take', async () => {
    /** A memory store that lists two objects a page, each page a request of its own; `hold` stops a listing before a page. */
    class Paged extends MemoryObjectStore {
      readonly pageSize = 2;
      /** Pages requested, by prefix. */
      readonly pages = new Map<string, number>();
      hold: { prefix: string; before: number; until: Promise<void> } | null = null;
      ended: ((prefix: string) => void) | null = null;
      override async *list(prefix: string): AsyncIterable<ObjectInfo> {
        const all: ObjectInfo[] = [];
        for await (const o of super.list(prefix)) all.push(o);
        try {
          for (let i = 0, page = 1; i === 0 || i < all.length; i += this.pageSize, page++) {
            const hold = this.hold;
            if (hold?.prefix === prefix && page >= hold.before) await hold.until;
            this.pages.set(prefix, (this.pages.get(prefix) ?? 0) + 1);
            await turn();
            yield* all.slice(i, i + this.pageSize);
          }
        } finally {
          this.ended?.(prefix);
        }
      }
    }
    const src = source('paged.raw');
    const store = new Paged();
    await backupDisk(new ObjectRepository(store), await parseLocation(src), 'vm', OPTS);
    const objects = store.keys().filter((k) => k.startsWith('disks/vm/')).length;
    const allPages = Math.ceil(objects / store.pageSize);
    expect(allPages).toBeGreaterThan(10);
    // The listing of the disk made at the take pages on until the run has failed, then stops before its third page
    // until the test lets it go on: a listing still paging at the release.
    let go!: () => void;
    store.hold = { prefix: 'disks/vm/', before: 3, until: new Promise<void>((resolve) => (go = resolve)) };
    store.pages.clear();
    let ended!: () => void;
    const listingEnded = new Promise<void>((resolve) => (ended = resolve));
    let done = false;
    store.ended = (prefix) => {
      if (prefix !== 'disks/vm/') return;
      done = true;
      ended();
    };
    const err = await backupDisk(new ObjectRepository(store), await parseLocation(path.join(tmp.dir, 'gone.raw')), 'vm', OPTS).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(NotFoundError);
    // The run released its lease before it failed.
    expect(JSON.parse(store.objects.get('leases/vm/000000000002.json')!.body.toString('utf8'))).toMatchObject({ released: true });
    // The listing was still paging at the release (held before a page).
    expect(done).toBe(false);
    expect(store.pages.get('disks/vm/')).toBeGreaterThanOrEqual(1);
    go();
    await listingEnded;
    // At most the page in flight at the release was asked for after it; without the stop, every page would be.
    expect(store.pages.get('disks/vm/')).toBeLessThanOrEqual(3);
  });
});
