/**
 * What an incremental backup to an object repository costs in requests, and in round trips before its first block
 * is sent: on a real endpoint each answer with a body costs a round trip or more (radosgw with Nagle on: ~50 ms),
 * so requests that need not wait for each other go at once (docs/performance.md, "Repositories on object storage").
 */
import { closeSync, openSync, writeSync } from 'node:fs';
import * as path from 'node:path';
import '../../../src/formats/index.js';
import type { ObjectInfo, ObjectRange, PutConditions, WriteFence } from '../../../src/io/object-store.js';
import { parseLocation } from '../../../src/io/location.js';
import { backupDisk } from '../../../src/repo/index.js';
import { ObjectRepository } from '../../../src/repo/object/object-backend.js';
import { MemoryObjectStore } from '../../helpers/memory-object-store.js';
import { makeTempDir } from '../../helpers/tmp.js';
import { restoredObjectSha } from '../../repo/object-helpers.js';
import { rawDisk, sha256File } from '../../repo/repo-helpers.js';

const BLOCK = 16 << 10;
const BLOCKS = 32;

/** A request as the store saw it: its round trip counts the requests that had to finish before it started. */
interface Request {
  op: 'get' | 'head' | 'put' | 'list' | 'delete';
  key: string;
  round: number;
  /** Requests finished when this one was sent, and when it finished (-1 until then): the order the run waited in. */
  sentAfter: number;
  finishedAs: number;
}

/**
 * A memory store whose every request takes a turn of the event loop, so that requests sent together are in flight
 * together; each is numbered by the longest chain of requests that finished before it started (its round trip).
 */
class RoundTripStore extends MemoryObjectStore {
  readonly requests: Request[] = [];
  private finished = 0;
  /** The highest round finished by any request, side chains' included (a side chain's own rounds). */
  private finishedAny = 0;
  private finishedCount = 0;
  /**
   * Requests of a chain that runs beside the others (nothing but the end of the run waits for it): numbered, but
   * they do not raise the round of later requests. A request's round is one more than the highest round finished
   * when it is sent, whichever chain finished it: without this, a side chain that happens to finish first would
   * push the main chain's next requests a round later than a network would. The test checks by `finishedAs`
   * that whatever waits for the side chain is sent after it finished.
   */
  background: (op: Request['op'], key: string, before: readonly Request[]) => boolean = () => false;

  /** Forgets the requests so far: the next one is round 1. */
  reset(): void {
    this.requests.length = 0;
    this.finished = 0;
    this.finishedAny = 0;
    this.finishedCount = 0;
  }

  private async request<T>(op: Request['op'], key: string, run: () => Promise<T>): Promise<T> {
    const aside = this.background(op, key, this.requests);
    const round = (aside ? this.finishedAny : this.finished) + 1;
    const request: Request = { op, key, round, sentAfter: this.finishedCount, finishedAs: -1 };
    this.requests.push(request);
    await new Promise((resolve) => setImmediate(resolve));
    try {
      return await run();
    } finally {
      if (!aside) this.finished = Math.max(this.finished, round);
      this.finishedAny = Math.max(this.finishedAny, round);
      request.finishedAs = ++this.finishedCount;
    }
  }

  override get(key: string, range?: ObjectRange): Promise<Buffer | null> {
    return this.request('get', key, () => super.get(key, range));
  }

  override head(key: string): Promise<ObjectInfo | null> {
    return this.request('head', key, () => super.head(key));
  }

  override put(key: string, body: Uint8Array, conditions?: PutConditions): Promise<{ etag: string }> {
    return this.request('put', key, () => super.put(key, body, conditions));
  }

  override delete(keys: readonly string[], fence?: WriteFence): Promise<void> {
    return this.request('delete', keys.join(','), () => super.delete(keys, fence));
  }

  override async *list(prefix: string): AsyncIterable<ObjectInfo> {
    // One page: the whole listing is one request.
    const page = await this.request('list', prefix, async () => {
      const out: ObjectInfo[] = [];
      for await (const o of super.list(prefix)) out.push(o);
      return out;
    });
    yield* page;
  }
}

/**
 * A store for races between two runs: holds the first lease listing until `gate` opens, runs `afterRead.run` once
 * right after the GET of `afterRead.key`, and answers the next listing of the manifests with `stale` (a gateway
 * whose listings lag) when set.
 */
class RacingStore extends MemoryObjectStore {
  gate: Promise<void> | null = null;
  stale: ObjectInfo[] | null = null;
  afterRead: { key: string; run: () => Promise<void> } | null = null;
  override async *list(prefix: string): AsyncIterable<ObjectInfo> {
    const gate = prefix === 'leases/vm/' ? this.gate : null;
    if (gate) {
      this.gate = null;
      await gate;
    }
    const stale = prefix === 'manifests/vm/' ? this.stale : null;
    if (stale) {
      this.stale = null;
      yield* stale;
      return;
    }
    yield* super.list(prefix);
  }
  override async get(key: string, range?: ObjectRange): Promise<Buffer | null> {
    const bytes = await super.get(key, range);
    const after = this.afterRead?.key === key ? this.afterRead : null;
    if (after) {
      this.afterRead = null;
      await after.run();
    }
    return bytes;
  }
}

describe('object repository round trips', () => {
  let tmp: ReturnType<typeof makeTempDir>;
  beforeAll(() => (tmp = makeTempDir('vhdsync-objrounds-')));
  afterAll(() => tmp.cleanup());

  /** A disk backed up once to a new RacingStore, and a way to change a block of it. */
  async function racingStore(file: string) {
    const src = rawDisk(path.join(tmp.dir, file), BLOCK * BLOCKS, Array.from({ length: BLOCKS }, (_, b): [number, number, number] => [b * BLOCK, BLOCK, b + 1]));
    const store = new RacingStore();
    await backupDisk(new ObjectRepository(store), await parseLocation(src), 'vm', { blockSize: BLOCK });
    const change = (block: number, fill: number) => {
      const fd = openSync(src, 'r+');
      writeSync(fd, Buffer.alloc(100, fill), 0, 100, block * BLOCK + 3);
      closeSync(fd);
    };
    change(3, 0xaa);
    return { store, src, change };
  }

  it('an incremental sends its first block in round trip 7 (13 requests before it), and records it in 5 more', async () => {
    const src = rawDisk(path.join(tmp.dir, 'src.raw'), BLOCK * BLOCKS, Array.from({ length: BLOCKS }, (_, b): [number, number, number] => [b * BLOCK, BLOCK, b + 1]));
    const store = new RoundTripStore();
    const repo = new ObjectRepository(store);
    await backupDisk(repo, await parseLocation(src), 'vm', { blockSize: BLOCK });
    await backupDisk(new ObjectRepository(store), await parseLocation(src), 'vm', { blockSize: BLOCK });
    const fd = openSync(src, 'r+');
    writeSync(fd, Buffer.alloc(100, 0xee), 0, 100, 7 * BLOCK + 3);
    closeSync(fd);
    store.reset();
    // The new holder's deletion of the older lease generations (its listing, sent once the lease is written, and
    // its delete): only the release waits for it, which is checked below.
    store.background = (op, key, before) => key.startsWith('leases/') && (op === 'delete' || (op === 'list' && before.some((r) => r.op === 'put' && r.key.startsWith('leases/'))));
    // A new repository object, as each CLI run has: nothing is known of the store yet.
    const s = await backupDisk(new ObjectRepository(store), await parseLocation(src), 'vm', { blockSize: BLOCK });
    expect(s.changedBytes).toBe(BLOCK);
    // Within a round trip, in a fixed order (the order they went in is the event loop's).
    const seen = store.requests
      .map((r) => `${String(r.round).padStart(2)} ${r.op} ${r.key.replace(/[0-9a-f]{64}/, 'HASH').replace(/\d{8}T\d{6}Z(-\d+)?/g, 'ID')}`)
      .sort();
    const first = seen.findIndex((r) => r.includes('/blocks/'));
    expect(seen.slice(0, first + 1)).toEqual([
      ' 1 get vhdsync-repository.json',
      // The probe of conditional writes and the lease's reads at once; the lease is written after both. Its HEAD
      // carries its record (metadata): no GET of it. The manifest is read beside them too, and used once a listing
      // made under the lease shows the same version.
      ' 2 list leases/vm/',
      ' 2 list manifests/vm/',
      ' 2 put vhdsync-repository.json',
      ' 2 put vhdsync-repository.json',
      ' 3 get manifests/vm/000000000003.json',
      ' 3 head leases/vm/000000000002.json',
      ' 4 put leases/vm/000000000003.json',
      // Under the lease at once: the manifests (readManifest's check, then the sweep's), a HEAD of the generation read
      // early (the check that it still exists as read, a listing being able to lag a delete), the disk's objects
      // (recordLater's, which the sweep and the point reuse); the deletion of the older lease generation starts
      // beside them (a side chain: only the release waits for it).
      ' 5 head manifests/vm/000000000003.json',
      ' 5 list disks/vm/',
      ' 5 list leases/vm/',
      ' 5 list manifests/vm/',
      // The newest point's list and map at once (baseOf's check that the list is fresh for it).
      ' 6 delete leases/vm/000000000002.json',
      ' 6 get disks/vm/ID.list',
      ' 6 get disks/vm/ID.map',
      ' 7 put disks/vm/blocks/HASH',
    ]);
    expect(seen.slice(first + 1)).toEqual([
      ' 8 put disks/vm/ID.list',
      ' 9 put disks/vm/ID.map',
      '10 put manifests/vm/000000000004.json',
      // The generation it replaces is deleted beside the listing that checks no newer one exists.
      '11 delete manifests/vm/000000000003.json',
      '11 list manifests/vm/',
      '12 put leases/vm/000000000003.json',
    ]);
    // The release is the one request that waits for the side chain: it is sent after the delete finished.
    const del = store.requests.find((r) => r.op === 'delete' && r.key.startsWith('leases/'))!;
    const release = store.requests.filter((r) => r.op === 'put' && r.key.startsWith('leases/')).at(-1)!;
    expect(release.sentAfter).toBeGreaterThanOrEqual(del.finishedAs);
    expect(await restoredObjectSha(repo, 'vm', s.point, tmp.dir)).toBe(sha256File(src));
  });

  it.each([
    ['a manifest read before the lease is held and superseded before the take is not used: the backup builds on the newer one', false],
    ['a listing under the lease that lags a delete does not make the early read pass: the HEAD finds the generation gone', true],
  ])('%s', async (_name, lagging) => {
    const { store, src, change } = await racingStore(lagging ? 'lag.raw' : 'race.raw');
    let other: Awaited<ReturnType<typeof backupDisk>> | null = null;
    let open!: () => void;
    store.gate = new Promise<void>((resolve) => (open = resolve));
    // Right after this run's early read of generation 2, another run backs the change up (generation 3, generation
    // 2 deleted) and lets go of the disk; only then is this run's lease listing answered, so it takes the lease
    // after that run. Lagging: its first listing of the manifests under the lease still shows generation 2, under
    // the ETag it read.
    store.afterRead = {
      key: 'manifests/vm/000000000002.json',
      run: async () => {
        const snapshot: ObjectInfo[] = [];
        for await (const o of store.list('manifests/vm/')) snapshot.push(o);
        other = await backupDisk(new ObjectRepository(store), await parseLocation(src), 'vm', { blockSize: BLOCK });
        expect(store.objects.has('manifests/vm/000000000002.json')).toBe(false);
        change(9, 0xbb);
        if (lagging) store.stale = snapshot;
        open();
      },
    };
    const mine = await backupDisk(new ObjectRepository(store), await parseLocation(src), 'vm', { blockSize: BLOCK });
    expect(other).not.toBeNull();
    // Built on the other run's point (only block 9 changed since), and recorded after it in generation 4; both
    // points whole.
    expect(mine.changedBytes).toBe(BLOCK);
    const m = JSON.parse(store.objects.get('manifests/vm/000000000004.json')!.body.toString('utf8')) as { points: Array<{ id: string }> };
    expect(m.points.map((p) => p.id).slice(-2)).toEqual([other!.point, mine.point]);
    expect(await restoredObjectSha(new ObjectRepository(store), 'vm', other!.point, tmp.dir)).not.toBe(sha256File(src));
    expect(await restoredObjectSha(new ObjectRepository(store), 'vm', mine.point, tmp.dir)).toBe(sha256File(src));
  });
});
