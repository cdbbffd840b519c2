/**
 * What a backup says when something fails after its manifest generation was created (review 3, R3 and T2): the
 * point is recorded, so the line says so and what did not happen (exit 3), a takeover the store shows is never
 * vouched for by the local clock, and a lease that lapsed in an outage hides no recorded point.
 */
import { jest } from '@jest/globals';
import * as path from 'node:path';
import '../../../src/formats/index.js';
import { parseLocation } from '../../../src/io/location.js';
import type { ObjectInfo } from '../../../src/io/object-store.js';
import { backupDisk, listRepository, pruneDisk } from '../../../src/repo/index.js';
import { ObjectRepository } from '../../../src/repo/object/object-backend.js';
import { ConflictError, IoError, RecordedError } from '../../../src/util/errors.js';
import { MemoryObjectStore } from '../../helpers/memory-object-store.js';
import { makeTempDir } from '../../helpers/tmp.js';
import { restoredObjectSha } from '../../repo/object-helpers.js';
import { rawDisk, scribble, sha256File } from '../../repo/repo-helpers.js';

const BLOCK = 16 << 10;
const REPO = 's3://memory/repo';
const gen = (g: number) => `manifests/vm/${String(g).padStart(12, '0')}.json`;
const down = (key: string) => new IoError('cannot reach http://127.0.0.1:9: ECONNREFUSED (after 6 attempts)', `${REPO}/${key}`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A store that goes down for manifest listings, HEADs and lease writes once `failing` is set. */
class Outage extends MemoryObjectStore {
  failing = { lists: false, heads: false, listDelayMs: 0 };
  constructor() {
    super();
    this.beforeMutation = (m) => {
      if (this.failing.heads && m.op === 'put' && m.key.startsWith('leases/')) throw down(m.key);
    };
  }
  override async *list(prefix: string): AsyncIterable<ObjectInfo> {
    if (this.failing.lists && prefix.startsWith('manifests/')) {
      await sleep(this.failing.listDelayMs);
      throw down(prefix);
    }
    yield* super.list(prefix);
  }
  override async head(key: string): Promise<ObjectInfo | null> {
    if (this.failing.heads) throw down(key);
    return super.head(key);
  }
  /** Fails as set from the create of `key` on (that create itself succeeds). */
  after(key: string, failing: Partial<Outage['failing']>): void {
    const before = this.beforeMutation!;
    this.beforeMutation = (m) => {
      before(m);
      if (m.op === 'put' && m.key === key) Object.assign(this.failing, failing);
    };
  }
  up(): void {
    this.failing = { lists: false, heads: false, listDelayMs: 0 };
  }
}

describe('object backups: failures after the manifest create', () => {
  let tmp: ReturnType<typeof makeTempDir>;
  let n = 0;
  beforeAll(() => (tmp = makeTempDir('vhdsync-objrecorded-')));
  afterAll(() => tmp.cleanup());
  const source = () => rawDisk(path.join(tmp.dir, `src${n++}.raw`), 8 * BLOCK, [[0, 3 * BLOCK, 7 + n]]);
  const pointsOf = async (repo: ObjectRepository) => (await listRepository(repo)).disks.find((d) => d.name === 'vm')?.points.map((p) => p.id);

  /** Runs `f` with stderr captured; returns its lines. */
  async function stderrOf(f: () => Promise<unknown>): Promise<string[]> {
    const lines: string[] = [];
    const write = jest.spyOn(process.stderr, 'write').mockImplementation((chunk) => (lines.push(String(chunk)), true));
    try {
      await f();
    } finally {
      write.mockRestore();
    }
    return lines;
  }

  it('the store down after the create (listing and lease both fail): exit 3, one line saying the point is recorded and what could not be confirmed', async () => {
    const store = new Outage();
    const repo = new ObjectRepository(store);
    const src = source();
    store.after(gen(2), { lists: true, heads: true });
    const err = await backupDisk(repo, await parseLocation(src), 'vm', { blockSize: BLOCK }).catch((e: unknown) => e);
    store.up();
    expect(err).toBeInstanceOf(RecordedError);
    expect((err as RecordedError).exitCode).toBe(3);
    const [id] = (await pointsOf(repo))!;
    expect((err as RecordedError).recorded).toEqual({ disk: 'vm', point: id, generation: 2 });
    expect((err as RecordedError).describe()).toBe(
      `${REPO}: restore point ${id} of disk 'vm' is recorded (manifest generation 2 in ${REPO}), but confirming that no other run wrote a newer generation failed ` +
        `(listing the manifests: ${REPO}/manifests/vm/: cannot reach http://127.0.0.1:9: ECONNREFUSED (after 6 attempts); reading the lease: ${REPO}/leases/vm/000000000002.json: cannot reach http://127.0.0.1:9: ECONNREFUSED (after 6 attempts)); ` +
        `it stands unless another run took the disk over meanwhile: check with 'vhdsync list --repo ${REPO} vm'`,
    );
    expect(await restoredObjectSha(repo, 'vm', id, tmp.dir)).toBe(sha256File(src));
  });

  it('an outage longer than the lease authority after the create: the store, not the lapsed lease, decides; the backup exits 0 with its point and one notice', async () => {
    const store = new Outage();
    // The manifest listing fails only after the authority (1.5 s) has run out, renewals failing meanwhile.
    const repo = new ObjectRepository(store, { lease: { leaseMs: 3200, renewMs: 100, authorityMs: 1500 } });
    const src = source();
    store.beforeMutation = (m) => {
      if (m.op === 'put' && m.key === gen(2)) store.failing = { lists: true, heads: false, listDelayMs: 1600 };
      if (store.failing.lists && m.op === 'put' && m.key.startsWith('leases/')) throw down(m.key);
    };
    let s: Awaited<ReturnType<typeof backupDisk>> | undefined;
    const lines = await stderrOf(async () => (s = await backupDisk(repo, await parseLocation(src), 'vm', { blockSize: BLOCK })));
    store.up();
    store.beforeMutation = null;
    expect(lines).toEqual([
      `vhdsync: disk 'vm': generation 2 of its manifest is written, but listing the manifests to confirm that no other run wrote a newer one failed (${REPO}/manifests/vm/: cannot reach http://127.0.0.1:9: ECONNREFUSED (after 6 attempts)); the store shows no other run took the lease, so none can have: going on\n`,
    ]);
    // The generation it replaces was deleted beside that listing, before the authority ran out.
    expect(store.keys().filter((k) => k.startsWith('manifests/'))).toEqual([gen(2)]);
    expect(await pointsOf(repo)).toEqual([s!.point]);
    expect(await restoredObjectSha(repo, 'vm', s!.point, tmp.dir)).toBe(sha256File(src));
  });

  it('a takeover the local clock did not see (a frozen clock) and a failed listing: the store shows the new holder, so the run stops (never vouched for by the clock)', async () => {
    const store = new Outage();
    const repo = new ObjectRepository(store);
    const src = source();
    store.beforeMutation = (m) => {
      if (m.op !== 'put' || m.key !== gen(2)) return;
      store.failing.lists = true;
      // The taker's lease generation, created while this run's clock stood still.
      store.objects.set('leases/vm/000000000002.json', { body: Buffer.from('{"format":"vhdsync-lease"}'), etag: 'taker', lastModifiedMs: Date.now() });
    };
    const err = await backupDisk(repo, await parseLocation(src), 'vm', { blockSize: BLOCK }).catch((e: unknown) => e);
    store.up();
    store.beforeMutation = null;
    expect(err).toBeInstanceOf(ConflictError);
    expect((err as ConflictError).describe()).toBe(
      `${REPO}/${gen(2)}: generation 2 of the manifest of disk 'vm' is written, but another run has taken the disk's lease over since and may have written a newer one ` +
        `(listing the manifests to check failed: ${REPO}/manifests/vm/: cannot reach http://127.0.0.1:9: ECONNREFUSED (after 6 attempts)); this run stopped and records nothing more: ` +
        `check with 'vhdsync list --repo ${REPO} vm' whether what it wrote is there, and retry`,
    );
    // The generation it replaces was deleted beside the listing: an older generation is never the newest, so that
    // decides nothing, whoever holds the disk now.
    expect(store.keys().filter((k) => k.startsWith('manifests/'))).toEqual([gen(2)]);
  });

  // A store's error, and a failure that is not ours (a raw Error from the SDK or a bug): both are worded as recorded.
  it.each([
    ['a store error', new IoError('keeps failing: ServiceUnavailable (HTTP 503) after 6 attempts', `${REPO}/${gen(4)}`), `${REPO}/${gen(4)}: keeps failing: ServiceUnavailable (HTTP 503) after 6 attempts`],
    ['a raw Error', new Error('socket hang up'), 'socket hang up'],
  ])('a --keep step that fails after the point is recorded (%s): exit 3 naming the point and the step; a prune finishes it', async (_, failure, why) => {
    const store = new MemoryObjectStore();
    const repo = new ObjectRepository(store);
    const src = source();
    const a = await backupDisk(repo, await parseLocation(src), 'vm', { blockSize: BLOCK, now: () => new Date('2026-05-01T10:00:00Z') });
    scribble(src, [[5 * BLOCK, 100, 0xab]]);
    store.beforeMutation = (m) => {
      if (m.op === 'put' && m.key === gen(4)) throw failure;
    };
    const err = await backupDisk(repo, await parseLocation(src), 'vm', { blockSize: BLOCK, retention: { keep: 1 }, now: () => new Date('2026-05-02T10:00:00Z') }).catch((e: unknown) => e);
    store.beforeMutation = null;
    expect(err).toBeInstanceOf(RecordedError);
    // What `backup --json` prints beside exit 3.
    expect((err as RecordedError).recorded).toEqual({ disk: 'vm', point: '20260502T100000Z', generation: 3 });
    expect((err as RecordedError).describe()).toBe(
      `${REPO}: restore point 20260502T100000Z of disk 'vm' is recorded (manifest generation 3 in ${REPO}), but the retention step (--keep) did not finish: ` +
        `${why}; the next backup with it, or a prune, applies it`,
    );
    expect(await pointsOf(repo)).toEqual([a.point, '20260502T100000Z']);
    expect(await pruneDisk(repo, 'vm', { keep: 1 })).toMatchObject({ dropped: [a.point], kept: ['20260502T100000Z'] });
    expect(await restoredObjectSha(repo, 'vm', '20260502T100000Z', tmp.dir)).toBe(sha256File(src));
  });

  it('a raw Error from the listing after the create is confirmed through the lease like any listing failure; raw again there: exit 3', async () => {
    class RawOutage extends MemoryObjectStore {
      failing = { lists: false, heads: false };
      override async *list(prefix: string): AsyncIterable<ObjectInfo> {
        if (this.failing.lists && prefix.startsWith('manifests/')) throw new Error('socket hang up');
        yield* super.list(prefix);
      }
      override async head(key: string): Promise<ObjectInfo | null> {
        if (this.failing.heads) throw new Error('read ECONNRESET');
        return super.head(key);
      }
    }
    for (const heads of [false, true]) {
      const store = new RawOutage();
      const repo = new ObjectRepository(store);
      const src = source();
      await backupDisk(repo, await parseLocation(src), 'vm', { blockSize: BLOCK });
      scribble(src, [[5 * BLOCK, 100, 0xcd]]);
      store.beforeMutation = (m) => {
        if (m.op === 'put' && m.key.startsWith('manifests/vm/')) store.failing = { lists: true, heads };
      };
      let result: unknown;
      const lines = await stderrOf(async () => {
        result = await backupDisk(repo, await parseLocation(src), 'vm', { blockSize: BLOCK }).catch((e: unknown) => e);
      });
      store.beforeMutation = null;
      store.failing = { lists: false, heads: false };
      if (heads) {
        expect(result).toBeInstanceOf(RecordedError);
        expect((result as RecordedError).describe()).toMatch(/is recorded \(manifest generation 3 .*listing the manifests: socket hang up; reading the lease: read ECONNRESET/);
      } else {
        expect(result).toMatchObject({ disk: 'vm' });
        expect(lines.join('')).toContain('listing the manifests to confirm that no other run wrote a newer one failed (socket hang up)');
      }
      expect(await pointsOf(repo)).toHaveLength(2);
    }
  });
});
