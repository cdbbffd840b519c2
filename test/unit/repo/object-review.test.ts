/**
 * Regressions of the adversarial review of object repositories (docs/repository.md): a lost manifest is never
 * swept by the next backup (object and folder backends), a killed first backup leaves a disk prune cleans up.
 */
import { readdirSync, rmSync } from 'node:fs';
import * as path from 'node:path';
import '../../../src/formats/index.js';
import { parseLocation } from '../../../src/io/location.js';
import type { ObjectInfo, ObjectRange, PutConditions } from '../../../src/io/object-store.js';
import { backupDisk, FileRepository, listRepository, openRepository, pruneDisk, repairManifest, repairObjectManifest, verifyDisk } from '../../../src/repo/index.js';
import { emptyManifest, highWater, MANIFEST_LIMIT, parseManifest, serializeManifest } from '../../../src/repo/manifest.js';
import { ObjectRepository } from '../../../src/repo/object/object-backend.js';
import { RECORDED_LATER } from '../../../src/repo/object/object-session.js';
import { CredentialsError, IoError, RepositoryDamageError, UnsupportedError } from '../../../src/util/errors.js';
import { isMarker } from '../../../src/repo/marker.js';
import { MemoryObjectStore } from '../../helpers/memory-object-store.js';
import { makeTempDir } from '../../helpers/tmp.js';
import { restoredObjectSha, unreferenced } from '../../repo/object-helpers.js';
import { rawDisk, scribble, sha256File } from '../../repo/repo-helpers.js';

const BLOCK = 16 << 10;
const BLOCKS = 16;

/**
 * A store whose HEAD answers as if every object were small (as when an object is replaced between a HEAD and the
 * GET after it) and that records the largest body any GET returned.
 */
class LyingHeadStore extends MemoryObjectStore {
  largest = 0;
  override async head(key: string): Promise<ObjectInfo | null> {
    const info = await super.head(key);
    return info && { ...info, size: Math.min(info.size, 100) };
  }
  override async get(key: string, range?: ObjectRange): Promise<Buffer | null> {
    const bytes = await super.get(key, range);
    this.largest = Math.max(this.largest, bytes?.length ?? 0);
    return bytes;
  }
  /** Replaces `key`'s body (damage done behind the repository's back). */
  swap(key: string, body: Buffer): Buffer {
    const o = this.objects.get(key)!;
    this.objects.set(key, { ...o, body });
    return o.body;
  }
}

/** A store that drops one kind of write condition, as older MinIO and some gateways do. */
class IgnoringStore extends MemoryObjectStore {
  constructor(private readonly ignore: keyof PutConditions) {
    super();
  }
  override put(key: string, body: Uint8Array, conditions: PutConditions = {}): Promise<{ etag: string }> {
    return super.put(key, body, { ...conditions, [this.ignore]: undefined });
  }
}

describe('object repository after review', () => {
  let tmp: ReturnType<typeof makeTempDir>;
  let n = 0;
  let clock = Date.parse('2026-03-01T00:00:00Z');
  const now = () => new Date((clock += 3_600_000));
  beforeAll(() => (tmp = makeTempDir('vhdsync-objreview-')));
  afterAll(() => tmp.cleanup());

  function source(): string {
    const file = path.join(tmp.dir, `src${n++}.raw`);
    return rawDisk(file, BLOCK * BLOCKS, Array.from({ length: BLOCKS }, (_, b): [number, number, number] => [b * BLOCK, BLOCK, b + 1 + n * 40]));
  }

  it('a manifest deleted by hand: the next backup refuses in one line naming the repair, deletes nothing; the repair brings the points back', async () => {
    const store = new MemoryObjectStore();
    const repo = new ObjectRepository(store);
    const src = source();
    const a = await backupDisk(repo, await parseLocation(src), 'vm', { blockSize: BLOCK, now });
    const sha = sha256File(src);
    await backupDisk(repo, await parseLocation(src), 'vm', { blockSize: BLOCK, now });
    for (const k of store.keys().filter((k) => k.startsWith('manifests/vm/'))) store.objects.delete(k);
    const before = store.keys().filter((k) => k.startsWith('disks/'));
    const err = await backupDisk(repo, await parseLocation(src), 'vm', { blockSize: BLOCK, now }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RepositoryDamageError);
    expect((err as Error).message).toMatch(/^disk 'vm' has no manifest but holds restore points \(\d{8}T\d{6}Z\.map, 1 more\); nothing was changed: rebuild it with 'vhdsync verify --repo s3:\/\/memory\/repo vm --repair'/);
    expect((err as Error).message).not.toContain('\n');
    expect(store.keys().filter((k) => k.startsWith('disks/'))).toEqual(before);
    expect(store.keys().filter((k) => k.startsWith('manifests/'))).toEqual([]);
    const r = await repairObjectManifest(repo, 'vm');
    expect(r.points).toHaveLength(2);
    expect(await restoredObjectSha(repo, 'vm', a.point, tmp.dir)).toBe(sha);
  });

  /**
   * Two backups of one disk (points a, b, one block changed between them) in which b's manifest generation is lost:
   * the second backup was killed between creating generation 3 and deleting generation 2, then generation 3 was
   * lost (`lose: 'generation'`), or it was killed before creating generation 3 at all (`lose: 'kill'`).
   */
  async function unlisted(lose: 'generation' | 'kill') {
    const store = new MemoryObjectStore();
    const repo = new ObjectRepository(store);
    const src = source();
    const a = await backupDisk(repo, await parseLocation(src), 'vm', { blockSize: BLOCK, now });
    scribble(src, [[3 * BLOCK, 100, 0xee]]);
    const gen = (g: number) => `manifests/vm/${String(g).padStart(12, '0')}.json`;
    store.beforeMutation = (m) => {
      if (lose === 'generation' && m.op === 'delete' && m.keys.includes(gen(2))) throw new Error('killed');
      if (lose === 'kill' && m.op === 'put' && m.key === gen(3)) throw new Error('killed');
    };
    const b = await backupDisk(repo, await parseLocation(src), 'vm', { blockSize: BLOCK, now }).then(
      (s) => s.point,
      () => store.keys().find((k) => /^disks\/vm\/\d{8}T\d{6}Z\.map$/.test(k) && !k.includes(a.point))!.slice('disks/vm/'.length, -'.map'.length),
    );
    store.beforeMutation = null;
    if (lose === 'generation') {
      expect(store.keys().filter((k) => k.startsWith('manifests/'))).toEqual([gen(2), gen(3)]);
      store.objects.delete(gen(3));
    }
    expect(store.keys().filter((k) => k.startsWith('manifests/'))).toEqual([gen(2)]);
    return { store, repo, src, a: a.point, b, sha: sha256File(src) };
  }

  it('the newest manifest generation lost while the one before survives: the next backup records the later point (it swept it before), verify --repair does too', async () => {
    const { store, repo, src, a, b, sha } = await unlisted('generation');
    const c = await backupDisk(repo, await parseLocation(src), 'vm', { blockSize: BLOCK, now });
    expect(c.removed.filter((k) => k.includes(b))).toEqual([]);
    const m = (await repo.readManifest('vm'))!;
    expect(m.points.map((p) => [p.id, p.kind])).toEqual([[a, 'full'], [b, 'clone'], [c.point, 'clone']]);
    // The earlier point keeps what its manifest knew; the recorded one says why its source is unknown, and changed one block.
    expect(m.points[0].source).toBe(src);
    expect(m.points[1]).toMatchObject({ source: RECORDED_LATER, changedBytes: BLOCK });
    expect(c.changedBytes).toBe(0);
    expect(await restoredObjectSha(repo, 'vm', b, tmp.dir)).toBe(sha);
    expect(await unreferenced(store.keys(), (k) => store.get(k))).toEqual([]);

    const again = await unlisted('generation');
    const r = await repairObjectManifest(again.repo, 'vm');
    expect(r).toMatchObject({ rebuilt: true, movedAside: null, points: [{ id: again.a, kind: 'full' }, { id: again.b, kind: 'clone' }] });
    expect(r.reason).toBe(`it did not list restore point ${again.b}, later than every point it lists or listed: a lost newest generation, or a backup killed before recording it`);
    expect((await again.repo.readManifest('vm'))!.generation).toBe(3);
    expect(await restoredObjectSha(again.repo, 'vm', again.b, tmp.dir)).toBe(again.sha);
    expect((await repairObjectManifest(again.repo, 'vm')).rebuilt).toBe(false);
  });

  it('a backup killed between its map and its manifest: the next prune records its point (a resume), a point that cannot be proven stops it in one line', async () => {
    const { repo, b, sha } = await unlisted('kill');
    const p = await pruneDisk(repo, 'vm', { keep: 5 });
    expect(p.kept).toContain(b);
    expect(await restoredObjectSha(repo, 'vm', b, tmp.dir)).toBe(sha);

    const bad = await unlisted('kill');
    const list = `disks/vm/${bad.b}.list`;
    bad.store.objects.delete(list);
    const before = bad.store.keys();
    const err = await pruneDisk(bad.repo, 'vm', { keep: 1 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RepositoryDamageError);
    expect((err as RepositoryDamageError).message).toMatch(new RegExp(`^disk 'vm' holds restore point ${bad.b} later than every point its manifest lists or listed, and it cannot be recorded: restore point ${bad.b} cannot be proven \\(.*metafile of restore point ${bad.b} is missing\\); delete its map and list if it is not needed; nothing was changed: see 'vhdsync verify --repo s3://memory/repo vm --repair'$`));
    expect((err as Error).message).not.toContain('\n');
    expect(bad.store.keys().filter((k) => !k.startsWith('leases/'))).toEqual(before.filter((k) => !k.startsWith('leases/')));
    // Two later points, the second unprovable (a map without its list): the line names both, and the unprovable one.
    const two = await unlisted('kill');
    const third = '29991231T235959Z';
    await two.store.put(`disks/vm/${third}.map`, (await two.store.get(`disks/vm/${two.b}.map`))!);
    await expect(pruneDisk(two.repo, 'vm', { keep: 5 })).rejects.toThrow(new RegExp(`^disk 'vm' holds restore points ${two.b}, ${third} later than every point its manifest lists or listed, and they cannot be recorded: restore point ${third} cannot be proven`));
    // verify --repair refuses it with its own line.
    await expect(repairObjectManifest(bad.repo, 'vm')).rejects.toThrow(new RegExp(`^cannot rebuild the manifest: restore point ${bad.b} cannot be proven \\(.*\\); delete its map and list if it is not needed \\(nothing was written\\)$`));
    expect(bad.store.keys().filter((k) => !k.startsWith('leases/'))).toEqual(before.filter((k) => !k.startsWith('leases/')));
  });

  it('a backup killed between its map and its manifest, then a block of its point deleted: backup, prune and verify --repair refuse it in one line naming the point, and write nothing', async () => {
    const { store, repo, src, b } = await unlisted('kill');
    // The block only the later point references (its changed one): a prune that swept it while the point's holder slept.
    const shared = (await repo.readMap('vm', (await repo.readManifest('vm'))!.points[0])).hashes();
    const gone = store.keys().filter((k) => k.startsWith('disks/vm/blocks/') && !shared.has(k.slice('disks/vm/blocks/'.length)));
    expect(gone).toHaveLength(1);
    store.objects.delete(gone[0]);
    const before = store.keys().filter((k) => !k.startsWith('leases/'));
    const line = new RegExp(`^disk 'vm' holds restore point ${b} later than every point its manifest lists or listed, and it cannot be recorded: restore point ${b} cannot be proven \\(.*${gone[0].slice('disks/vm/'.length)}.*missing.*\\); delete its map and list if it is not needed; nothing was changed: see 'vhdsync verify --repo s3://memory/repo vm --repair'$`);
    for (const run of [async () => backupDisk(repo, await parseLocation(src), 'vm', { blockSize: BLOCK, now }), () => pruneDisk(repo, 'vm', { keep: 5 })]) {
      const err = await run().catch((e: unknown) => e);
      expect(err).toBeInstanceOf(RepositoryDamageError);
      expect((err as Error).message).toMatch(line);
      expect((err as Error).message).not.toContain('\n');
      expect(store.keys().filter((k) => !k.startsWith('leases/'))).toEqual(before);
    }
    await expect(repairObjectManifest(repo, 'vm')).rejects.toThrow(new RegExp(`^cannot rebuild the manifest: restore point ${b} cannot be proven \\(.*missing.*\\); delete its map and list if it is not needed \\(nothing was written\\)$`));
    expect(store.keys().filter((k) => !k.startsWith('leases/'))).toEqual(before);
  });

  it('ids that are not monotone (a clock stepped back): a point prune dropped is never recorded again, the kept newer backup survives, the sweep succeeds', async () => {
    const store = new MemoryObjectStore();
    const repo = new ObjectRepository(store);
    const src = source();
    // Host 1 is 5 minutes fast: its point X has a later id than C, which host 2 backs up after it.
    const at = (t: string) => () => new Date(t);
    const x = await backupDisk(repo, await parseLocation(src), 'vm', { blockSize: BLOCK, now: at('2026-05-01T12:05:00Z') });
    scribble(src, [[5 * BLOCK, 100, 0xcc]]);
    const c = await backupDisk(repo, await parseLocation(src), 'vm', { blockSize: BLOCK, now: at('2026-05-01T12:02:00Z') });
    const sha = sha256File(src);
    expect((await repo.readManifest('vm'))!.points.map((p) => p.id)).toEqual([x.point, c.point]);
    const p = await pruneDisk(repo, 'vm', { keep: 1 });
    expect(p).toMatchObject({ dropped: [x.point], kept: [c.point] });
    expect(store.keys().filter((k) => k.includes(x.point))).toEqual([]);
    expect((await repo.readManifest('vm'))!.highest).toBe(x.point);
    // The retry, and a next backup whose id is still below X's: nothing brings X back, C stays.
    expect(await pruneDisk(repo, 'vm', { keep: 1 })).toMatchObject({ dropped: [], kept: [c.point] });
    scribble(src, [[6 * BLOCK, 100, 0xdd]]);
    const d = await backupDisk(repo, await parseLocation(src), 'vm', { blockSize: BLOCK, now: at('2026-05-01T12:03:00Z'), retention: { keep: 2 } });
    expect((await repo.readManifest('vm'))!.points.map((q) => q.id)).toEqual([c.point, d.point]);
    expect(await restoredObjectSha(repo, 'vm', c.point, tmp.dir)).toBe(sha);
    expect(await unreferenced(store.keys(), (k) => store.get(k))).toEqual([]);
    // A manifest of an older vhdsync (no high-water mark) still reads: its mark is its largest listed id.
    const m = (await repo.readManifest('vm'))!;
    expect(highWater(parseManifest(serializeManifest({ ...m, highest: undefined })))).toBe(d.point);
  });

  it('a store failing while a later point is proven (503, credentials) fails the run with its own error, never "cannot be proven ... delete its map"', async () => {
    const { store, repo, b, sha } = await unlisted('kill');
    const before = store.keys().filter((k) => !k.startsWith('leases/'));
    const failures = [
      [`disks/vm/${b}.map`, new IoError('https://s3.example keeps failing: ServiceUnavailable (HTTP 503) after 6 attempts', `s3://memory/repo/disks/vm/${b}.map`)],
      [`disks/vm/${b}.list`, new CredentialsError('access refused by https://s3.example (AccessDenied): check AWS_PROFILE', `s3://memory/repo/disks/vm/${b}.list`)],
    ] as const;
    for (const [key, failure] of failures) {
      store.beforeRead = (k) => {
        if (k === key) throw failure;
      };
      await expect(pruneDisk(repo, 'vm', { keep: 1 })).rejects.toBe(failure);
      await expect(repairObjectManifest(repo, 'vm')).rejects.toBe(failure);
      expect(store.keys().filter((k) => !k.startsWith('leases/'))).toEqual(before);
    }
    store.beforeRead = null;
    expect((await pruneDisk(repo, 'vm', { keep: 5 })).kept).toContain(b);
    expect(await restoredObjectSha(repo, 'vm', b, tmp.dir)).toBe(sha);
  });

  it('no two runs write the same manifest bytes (each carries its run\'s token), so a read-back that finds our bytes found our write; manifests without one still read', async () => {
    const first = async () => {
      const store = new MemoryObjectStore();
      const session = await new ObjectRepository(store).lockDisk('vm', 'backup');
      // What a disk's first backup writes first: predictable from its inputs but for the token.
      await session.writeManifest({ ...emptyManifest('vm', 'xxh128', BLOCK), generation: 1 });
      await session.release();
      return store.objects.get('manifests/vm/000000000001.json')!.body;
    };
    const [x, y] = [await first(), await first()];
    expect(x.equals(y)).toBe(false);
    expect(JSON.parse(x.toString()).writer).toMatch(/^[0-9a-f]{16}$/);
    // A manifest of an older version (no writer) reads, and the next generation gets this run's token.
    const store = new MemoryObjectStore();
    const repo = new ObjectRepository(store);
    const src = source();
    await backupDisk(repo, await parseLocation(src), 'vm', { blockSize: BLOCK, now });
    const key = 'manifests/vm/000000000002.json';
    const { writer, ...old } = parseManifest(store.objects.get(key)!.body);
    expect(writer).toMatch(/^[0-9a-f]{16}$/);
    store.objects.set(key, { ...store.objects.get(key)!, body: serializeManifest(old) });
    expect(store.objects.get(key)!.body.toString()).not.toContain('writer');
    expect((await repo.readManifest('vm'))!.points).toHaveLength(1);
    expect((await backupDisk(repo, await parseLocation(src), 'vm', { blockSize: BLOCK, now })).kind).toBe('clone');
    expect(parseManifest(store.objects.get('manifests/vm/000000000003.json')!.body).writer).not.toBe(writer);
  });

  it('a first backup writes an empty manifest before any block: killed, it leaves a disk that prune cleans up', async () => {
    const store = new MemoryObjectStore();
    const repo = new ObjectRepository(store);
    const src = source();
    const order: string[] = [];
    store.beforeMutation = (m) => {
      if (m.op !== 'put') return;
      order.push(m.key.split('/')[0]);
      if (m.key.includes('/blocks/') && order.filter((k) => k === 'disks').length > 5) throw new Error('killed');
    };
    await expect(backupDisk(repo, await parseLocation(src), 'vm', { blockSize: BLOCK, now })).rejects.toThrow('killed');
    store.beforeMutation = null;
    // (The marker is written, then probed: see the conditional-writes test.)
    expect([...new Set(order)].slice(0, 3)).toEqual(['vhdsync-repository.json', 'leases', 'manifests']);
    expect((await listRepository(repo)).disks.map((d) => [d.name, d.points.length, d.error])).toEqual([['vm', 0, null]]);
    expect(store.keys().filter((k) => k.includes('/blocks/'))).toHaveLength(5);
    const p = await pruneDisk(repo, 'vm', { keep: 1 });
    expect(p.removed.filter((k) => k.includes('/blocks/'))).toHaveLength(5);
    expect(await unreferenced(store.keys(), (k) => store.get(k))).toEqual([]);
    // And a backup afterwards is an ordinary first point.
    const s = await backupDisk(repo, await parseLocation(src), 'vm', { blockSize: BLOCK, now });
    expect(s.kind).toBe('full');
    expect(await restoredObjectSha(repo, 'vm', s.point, tmp.dir)).toBe(sha256File(src));
  });

  it('folder repository: a manifest.json deleted by hand makes the next backup refuse, every image stays', async () => {
    const dir = path.join(tmp.dir, `repo${n++}`);
    const repo = await openRepository(dir, false);
    const src = source();
    const a = await backupDisk(repo, await parseLocation(src), 'vm', { reflink: 'never', now });
    await backupDisk(repo, await parseLocation(src), 'vm', { reflink: 'never', now });
    rmSync(path.join(dir, 'vm', 'manifest.json'));
    const before = readdirSync(path.join(dir, 'vm')).sort();
    const err = await backupDisk(repo, await parseLocation(src), 'vm', { reflink: 'never', now }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RepositoryDamageError);
    expect((err as Error).message).toMatch(/^disk 'vm' has no manifest but holds restore points \(\d{8}T\d{6}Z?.*\.vhdx.*\); nothing was changed: rebuild it with 'vhdsync verify --repo .* vm --repair'/);
    expect(readdirSync(path.join(dir, 'vm')).sort()).toEqual(before);
    const r = await repairManifest(repo as FileRepository, 'vm');
    expect(r.points.map((p) => p.id)[0]).toBe(a.point);
    expect(r.points).toHaveLength(2);
    expect((await backupDisk(repo, await parseLocation(src), 'vm', { reflink: 'never', now })).kind).toBe('diff');
  });

  it('a list alone (a first backup of an older vhdsync killed before its map) is a leftover, not a point: the backup goes ahead and sweeps it', async () => {
    const store = new MemoryObjectStore();
    const repo = new ObjectRepository(store);
    await repo.exists(true);
    const stray = 'disks/vm/20260101T000000Z.list';
    await store.put(stray, Buffer.from('partial'));
    const s = await backupDisk(repo, await parseLocation(source()), 'vm', { blockSize: BLOCK, now });
    expect(s.kind).toBe('full');
    expect(s.removed).toContain(stray);
    expect(store.keys()).not.toContain(stray);
  });

  it('a block left with the wrong size (listed so, or found so by a create) is sent again, never reused', async () => {
    const store = new MemoryObjectStore();
    const repo = new ObjectRepository(store);
    const src = source();
    let puts = 0;
    store.beforeMutation = (m) => {
      if (m.op === 'put' && m.key.includes('/blocks/') && ++puts > 6) throw new Error('killed');
    };
    await expect(backupDisk(repo, await parseLocation(src), 'vm', { blockSize: BLOCK, now })).rejects.toThrow('killed');
    // One block the killed run sent is cut short (store damage): the rerun's listing shows it 100 bytes long.
    const blocks = store.keys().filter((k) => k.includes('/blocks/'));
    expect(blocks).toHaveLength(6);
    const cut = store.objects.get(blocks[0])!;
    store.objects.set(blocks[0], { ...cut, body: cut.body.subarray(0, 100) });
    // And one the rerun has not listed appears, cut short, just before the rerun creates it (412 on the create).
    let raced: string | null = null;
    store.beforeMutation = (m) => {
      if (m.op !== 'put' || raced || !m.key.includes('/blocks/') || blocks.includes(m.key)) return;
      raced = m.key;
      store.objects.set(m.key, { body: Buffer.alloc(7, 1), etag: 'x', lastModifiedMs: 0 });
    };
    const s = await backupDisk(repo, await parseLocation(src), 'vm', { blockSize: BLOCK, now });
    store.beforeMutation = null;
    expect(raced).not.toBeNull();
    expect(store.objects.get(blocks[0])!.body.length).toBe(BLOCK);
    expect(store.objects.get(raced!)!.body.length).toBe(BLOCK);
    expect(await restoredObjectSha(repo, 'vm', s.point, tmp.dir)).toBe(sha256File(src));
  });

  it('a first backup killed with its lease held: prune of every disk finds the disk, takes the expired lease over and sweeps the blocks', async () => {
    const store = new MemoryObjectStore();
    // Authority long enough that a stalled event loop (a loaded CI machine) cannot lose the lease before the kill.
    const repo = new ObjectRepository(store, { lease: { leaseMs: 3200, renewMs: 100, authorityMs: 1500 } });
    let blocks = 0;
    // From the 6th block on, every request fails, the lease's release too: what SIGKILL leaves.
    store.beforeMutation = (m) => {
      if (blocks > 5 || (m.op === 'put' && m.key.includes('/blocks/') && ++blocks > 5)) throw new Error('killed');
    };
    // (The run fails on a killed request, or on the lease its failing renewals lost.)
    await expect(backupDisk(repo, await parseLocation(source()), 'vm', { blockSize: BLOCK, now })).rejects.toThrow(/killed|lost the lease/);
    store.beforeMutation = null;
    const written = store.keys().filter((k) => k.includes('/blocks/'));
    expect(written.length).toBeGreaterThan(0);
    const lease = store.keys().filter((k) => k.startsWith('leases/'));
    expect(JSON.parse(store.objects.get(lease[0])!.body.toString()).released).toBe(false);
    // What `vhdsync prune --repo R --keep 1 --wait=10` does: every disk that has a manifest.
    expect(await repo.listDisks()).toEqual(['vm']);
    const p = await pruneDisk(repo, 'vm', { keep: 1 }, { seconds: 10 });
    expect(p.removed.filter((k) => k.includes('/blocks/')).sort()).toEqual(written.sort());
    expect(await unreferenced(store.keys(), (k) => store.get(k))).toEqual([]);
    // One lease object is left, released by the prune; the killed run's generation is gone.
    const after = store.keys().filter((k) => k.startsWith('leases/'));
    expect(after).toHaveLength(1);
    expect(after).not.toEqual(lease);
    expect(JSON.parse(store.objects.get(after[0])!.body.toString()).released).toBe(true);
    expect((await verifyDisk(repo, 'vm')).ok).toBe(true);
  });
  it('reads are bounded before buffering: an oversized manifest, map, list, block or marker is refused in one line, never read whole', async () => {
    const store = new LyingHeadStore();
    const repo = new ObjectRepository(store);
    const src = source();
    const a = await backupDisk(repo, await parseLocation(src), 'vm', { blockSize: BLOCK, now });
    const huge = Buffer.alloc(16 << 20, 0x7b);
    const keyOf = (end: string) => store.keys().find((k) => k.endsWith(end))!;
    const check = async (key: string, body: Buffer, bound: number, expectProblem: () => Promise<string>, want: RegExp) => {
      const saved = store.swap(key, body);
      store.largest = 0;
      const problem = await expectProblem();
      expect(store.largest).toBeLessThanOrEqual(bound);
      expect(problem).toMatch(want);
      expect(problem).not.toContain('\n');
      store.swap(key, saved);
    };
    const thrown = (p: Promise<unknown>) => p.then(() => 'no error', (e: unknown) => (e as Error).message);
    const pointProblem = async () => (await verifyDisk(repo, 'vm')).points[0].problem ?? 'ok';
    await check(keyOf('000000000002.json'), huge, MANIFEST_LIMIT + 1, async () => thrown(backupDisk(repo, await parseLocation(src), 'vm', { blockSize: BLOCK, now })), /more than a manifest may have/);
    await check(keyOf(`${a.point}.map`), huge, 4096, pointProblem, /map of restore point .* more than .* bytes/);
    const list = store.objects.get(keyOf(`${a.point}.list`))!.body;
    // A list's first read takes up to 1 MiB (most disks' whole list in one request), then no more than its header says.
    await check(keyOf(`${a.point}.list`), Buffer.concat([list, huge]), 1 << 20, pointProblem, /its metafile: .*\.list: longer than the \d+ bytes its header says/);
    await check(keyOf(`${a.point}.list`), Buffer.concat([list, Buffer.alloc(100)]), 1 << 20, pointProblem, /its metafile: .*\.list: longer than the \d+ bytes its header says/);
    await check(store.keys().find((k) => k.includes('/blocks/'))!, huge, BLOCK + 1, pointProblem, /is longer than the block's 16384 bytes/);
    await check('vhdsync-repository.json', huge, 4097, () => thrown(repo.exists()), /not a vhdsync repository marker/);
    expect(await pointProblem()).toBe('ok');
    // A lease record is read at most 64 KiB deep; one larger is no record (as one that does not parse).
    store.swap(store.keys().find((k) => k.startsWith('leases/vm/'))!, huge);
    store.largest = 0;
    expect((await backupDisk(repo, await parseLocation(src), 'vm', { blockSize: BLOCK, now })).kind).toBe('clone');
    expect(store.largest).toBeLessThanOrEqual((64 << 10) + 1);
  });

  it('a store that ignores If-None-Match or If-Match is refused in one line before any lease, manifest or block', async () => {
    const marker = 'vhdsync-repository.json';
    for (const [ignore, header] of [['ifNoneMatch', 'If-None-Match'], ['ifMatch', 'If-Match']] as const) {
      const store = new IgnoringStore(ignore);
      const err = await backupDisk(new ObjectRepository(store), await parseLocation(source()), 'vm', { blockSize: BLOCK, now }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(UnsupportedError);
      expect((err as Error).message).toMatch(new RegExp(`^the store ignores ${header} \\(a conditional write of ${marker} that had to fail was accepted\\)`));
      expect((err as Error).message).not.toContain('\n');
      expect(store.keys()).toEqual([marker]);
      expect(isMarker(store.objects.get(marker)!.body)).toBe(true);
      // Every run checks again, on an existing repository too.
      await expect(new ObjectRepository(store).lockDisk('vm', 'verify')).rejects.toThrow(UnsupportedError);
      expect(store.keys()).toEqual([marker]);
    }
    // A store that honours both: the check is two refused PUTs, once per repository object, and changes nothing.
    const store = new MemoryObjectStore();
    const repo = new ObjectRepository(store);
    await repo.exists(true);
    const etag = store.objects.get(marker)!.etag;
    for (let i = 0; i < 2; i++) await (await repo.lockDisk('vm', 'verify')).release();
    expect(store.counts.put).toBe(1 + 2 + 2 * 2);
    expect(store.objects.get(marker)!.etag).toBe(etag);
  });
});
