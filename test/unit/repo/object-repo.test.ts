/**
 * The object repository backend on an in-memory store: what a point costs, what a rerun after a kill reuses, the
 * lease, and damage found by restore and verify.
 */
import { closeSync, openSync, writeSync } from 'node:fs';
import * as path from 'node:path';
import '../../../src/formats/index.js';
import { parseLocation } from '../../../src/io/location.js';
import { backupDisk, listRepository, pruneDisk, restorePoint, verifyDisk } from '../../../src/repo/index.js';
import { ObjectRepository } from '../../../src/repo/object/object-backend.js';
import { DiskLease } from '../../../src/repo/object/lease.js';
import { lockDiskWaiting } from '../../../src/repo/wait.js';
import { parsePointMap, PointMap } from '../../../src/repo/object/point-map.js';
import { BusyError, ConflictError, ContentChangedError, RepositoryDamageError } from '../../../src/util/errors.js';
import { MemoryObjectStore } from '../../helpers/memory-object-store.js';
import { makeTempDir } from '../../helpers/tmp.js';
import { restoredObjectSha, unreferenced } from '../../repo/object-helpers.js';
import { rawDisk, sha256File } from '../../repo/repo-helpers.js';

const BLOCK = 16 << 10;
const BLOCKS = 32;

describe('object repository', () => {
  let tmp: ReturnType<typeof makeTempDir>;
  let n = 0;
  beforeAll(() => (tmp = makeTempDir('vhdsync-objrepo-')));
  afterAll(() => tmp.cleanup());

  /** A raw source with every block filled with its own byte (distinct content per block). */
  function source(): string {
    return rawDisk(path.join(tmp.dir, `src${n++}.raw`), BLOCK * BLOCKS, Array.from({ length: BLOCKS }, (_, b): [number, number, number] => [b * BLOCK, BLOCK, b + 1]));
  }

  function poke(file: string, block: number, fill: number): void {
    const fd = openSync(file, 'r+');
    writeSync(fd, Buffer.alloc(100, fill), 0, 100, block * BLOCK + 7);
    closeSync(fd);
  }

  it('stores a full point as one object per distinct block, and an incremental as its changed blocks only', async () => {
    const store = new MemoryObjectStore();
    const repo = new ObjectRepository(store);
    const src = source();
    const a = await backupDisk(repo, await parseLocation(src), 'vm', { blockSize: BLOCK });
    expect(a.kind).toBe('full');
    const blocks = () => store.keys().filter((k) => k.startsWith('disks/vm/blocks/'));
    expect(blocks()).toHaveLength(BLOCKS);
    poke(src, 3, 0xee);
    poke(src, 30, 0xdd);
    const before = store.counts.put;
    const b = await backupDisk(repo, await parseLocation(src), 'vm', { blockSize: BLOCK });
    expect(b.kind).toBe('clone');
    expect(b.changedBytes).toBe(2 * BLOCK);
    // Two blocks, then list, map, manifest, lease create and release.
    expect(store.counts.put - before).toBe(2 + 5);
    expect(blocks()).toHaveLength(BLOCKS + 2);
    expect(await restoredObjectSha(repo, 'vm', b.point, tmp.dir)).toBe(sha256File(src));
    await pruneDisk(repo, 'vm', { keep: 1 });
    expect(blocks()).toHaveLength(BLOCKS);
    expect(await unreferenced(store.keys(), (k) => store.get(k))).toEqual([]);
  });

  it("an incremental's reads and listings do not grow with the points kept (its sweep reads no map, its listing of the blocks is reused)", async () => {
    const store = new MemoryObjectStore();
    const repo = new ObjectRepository(store);
    const src = source();
    await backupDisk(repo, await parseLocation(src), 'vm', { blockSize: BLOCK });
    const costs: Array<{ get: number; list: number }> = [];
    let last = '';
    for (let i = 0; i < 5; i++) {
      poke(src, i, 0xa0 + i);
      const before = { ...store.counts };
      const s = await backupDisk(repo, await parseLocation(src), 'vm', { blockSize: BLOCK, now: () => new Date(Date.UTC(2027, 0, 1 + i)) });
      expect(s.changedBytes).toBe(BLOCK);
      costs.push({ get: store.counts.get - before.get, list: store.counts.list - before.list });
      last = s.point;
    }
    expect(costs.slice(1)).toEqual(costs.slice(0, -1));
    expect(await restoredObjectSha(repo, 'vm', last, tmp.dir)).toBe(sha256File(src));
  });

  it('an incremental reads again only the blocks it sends, and refuses one rewritten since it was hashed', async () => {
    const store = new MemoryObjectStore();
    const repo = new ObjectRepository(store);
    const src = source();
    const a = await backupDisk(repo, await parseLocation(src), 'vm', { blockSize: BLOCK });
    poke(src, 5, 0xee);
    // Block 5 changes again after the pass hashed it (the whole small image is hashed ahead of the first block) and
    // before the backup reads it to send it: the re-read's check stops the run there, before the identity check at
    // the end of the pass would (which a rewrite within the file's timestamp granularity escapes).
    let rewritten = false;
    const onProgress = () => {
      if (rewritten) return;
      rewritten = true;
      poke(src, 5, 0x11);
    };
    const err = await backupDisk(repo, await parseLocation(src), 'vm', { blockSize: BLOCK, onProgress }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ContentChangedError);
    expect((err as Error).message).toMatch(/^block 5 changed while the image was being backed up/);
    expect((await listRepository(repo)).disks[0].points.map((p) => p.id)).toEqual([a.point]);
    const b = await backupDisk(repo, await parseLocation(src), 'vm', { blockSize: BLOCK });
    expect(b.changedBytes).toBe(BLOCK);
    expect(await restoredObjectSha(repo, 'vm', b.point, tmp.dir)).toBe(sha256File(src));
  });

  it('a rerun after a kill in the middle of the uploads sends only what had not arrived', async () => {
    const store = new MemoryObjectStore();
    const repo = new ObjectRepository(store, { uploadsInFlight: 1 });
    const src = source();
    let puts = 0;
    store.beforeMutation = (m) => {
      if (m.op === 'put' && m.key.includes('/blocks/') && ++puts > 20) throw new Error('killed');
    };
    await expect(backupDisk(repo, await parseLocation(src), 'vm', { blockSize: BLOCK })).rejects.toThrow('killed');
    store.beforeMutation = null;
    expect(store.keys().filter((k) => k.includes('/blocks/'))).toHaveLength(20);
    // The lease was released by the failing run (a real kill leaves it to a dead pid: see the property test).
    const sent: string[] = [];
    store.beforeMutation = (m) => {
      if (m.op === 'put' && m.key.includes('/blocks/')) sent.push(m.key);
    };
    const s = await backupDisk(repo, await parseLocation(src), 'vm', { blockSize: BLOCK });
    expect(sent).toHaveLength(BLOCKS - 20);
    expect(await restoredObjectSha(repo, 'vm', s.point, tmp.dir)).toBe(sha256File(src));
  });

  it('one holder per disk: a second run fails at once naming the holder; other disks proceed', async () => {
    const store = new MemoryObjectStore();
    const repo = new ObjectRepository(store);
    await repo.exists(true);
    const held = await repo.lockDisk('vm', 'backup');
    await expect(repo.lockDisk('vm', 'prune')).rejects.toThrow(/disk 'vm' is in use by a backup \(pid \d+ on /);
    const other = await repo.lockDisk('vm2', 'backup');
    await other.release();
    await held.release();
    const again = await repo.lockDisk('vm', 'prune');
    await again.release();
    // Generations only grow; the old ones are deleted by each new holder.
    expect(store.keys().filter((k) => k.startsWith('leases/vm/'))).toEqual(['leases/vm/000000000002.json']);
  });

  it('--wait: a run that finds the disk held waits for the holder to let go, or gives up in one line', async () => {
    const store = new MemoryObjectStore();
    const repo = new ObjectRepository(store);
    await repo.exists(true);
    const held = await repo.lockDisk('vm', 'backup');
    await expect(lockDiskWaiting(repo, 'vm', 'prune', { seconds: 0.3 })).rejects.toThrow(/disk 'vm' is in use by a backup .*\(waited 0.3 s for it\)/);
    const waiting = lockDiskWaiting(repo, 'vm', 'prune', { seconds: 30 });
    setTimeout(() => void held.release(), 300);
    const got = await waiting;
    got.check();
    await got.release();
  });

  it('an expired lease is taken over after watching it, and its old holder stops writing', async () => {
    const store = new MemoryObjectStore();
    const timing = { leaseMs: 400, renewMs: 50, authorityMs: 150 };
    const first = await DiskLease.take(store, 'vm', 'backup', timing);
    // The holder's renewals stop (a hung host): its lease lapses, and a new run takes over once it has watched it.
    store.beforeMutation = (m) => {
      if (m.op === 'put' && m.key.endsWith('000000000001.json')) throw new Error('unreachable');
    };
    await new Promise((r) => setTimeout(r, 500));
    expect(() => first.check()).toThrow(BusyError);
    store.beforeMutation = null;
    const second = await DiskLease.take(store, 'vm', 'backup', timing);
    second.check();
    await second.release();
    await first.release();
    expect(store.keys().filter((k) => k.startsWith('leases/'))).toEqual(['leases/vm/000000000002.json']);
  });

  it('a holder that sees a newer generation knows it lost the lease', async () => {
    const store = new MemoryObjectStore();
    const timing = { leaseMs: 4000, renewMs: 500, authorityMs: 1500 };
    const lease = await DiskLease.take(store, 'vm', 'backup', timing);
    await store.put('leases/vm/000000000002.json', Buffer.from('{}'), { ifNoneMatch: '*' });
    await lease.renew();
    expect(() => lease.check()).toThrow(/lost the lease of disk 'vm' \(another run took it over\)/);
    await lease.release();
  });

  it('a manifest generation written by another run meanwhile is a conflict, never overwritten', async () => {
    const store = new MemoryObjectStore();
    const repo = new ObjectRepository(store);
    const src = source();
    await backupDisk(repo, await parseLocation(src), 'vm', { blockSize: BLOCK });
    const session = await repo.lockDisk('vm', 'backup');
    try {
      const m = (await repo.readManifest('vm'))!;
      await store.put(`manifests/vm/${String(m.generation + 1).padStart(12, '0')}.json`, Buffer.from('x'), { ifNoneMatch: '*' });
      await expect(session.writeManifest({ ...m, generation: m.generation + 1 })).rejects.toThrow(ConflictError);
    } finally {
      await session.release();
    }
  });

  it('damage: a block altered or deleted, a map or manifest altered: one line naming the point; other points restore', async () => {
    const store = new MemoryObjectStore();
    const repo = new ObjectRepository(store);
    const src = source();
    const a = await backupDisk(repo, await parseLocation(src), 'vm', { blockSize: BLOCK });
    const shaA = sha256File(src);
    poke(src, 5, 0x55);
    const b = await backupDisk(repo, await parseLocation(src), 'vm', { blockSize: BLOCK });
    // The block only b has: altered by hand.
    const map = parsePointMap((await store.get(`disks/vm/${b.point}.map`))!) as PointMap;
    const key = `disks/vm/blocks/${map.hashOf(5)}`;
    const o = store.objects.get(key)!;
    o.body = Buffer.from(o.body);
    o.body[9] ^= 1;
    const out = await parseLocation(path.join(tmp.dir, 'out.raw'));
    await expect(restorePoint(repo, 'vm', out, { at: b.point, format: 'raw' })).rejects.toThrow(`restore point ${b.point}: block object does not hold the bytes its name (their SHA-256) says`);
    expect(await restoredObjectSha(repo, 'vm', a.point, tmp.dir)).toBe(shaA);
    let report = await verifyDisk(repo, 'vm');
    expect(report.points.map((p) => [p.id, p.ok])).toEqual([
      [a.point, true],
      [b.point, false],
    ]);
    expect(report.points[1].problem).toContain(key);
    store.objects.delete(key);
    report = await verifyDisk(repo, 'vm');
    expect(report.points[1].problem).toMatch(/block object is missing/);
    // A map altered by hand: its checksum catches it.
    const mo = store.objects.get(`disks/vm/${a.point}.map`)!;
    mo.body = Buffer.from(mo.body);
    mo.body[100] ^= 1;
    await expect(restorePoint(repo, 'vm', out, { at: a.point, format: 'raw' })).rejects.toThrow(/the map of restore point .* is damaged: its checksum does not match/);
    // The manifest altered by hand: every command says so in one line.
    const mk = store.keys().filter((k) => k.startsWith('manifests/vm/')).pop()!;
    const man = store.objects.get(mk)!;
    man.body = Buffer.from(man.body.toString('utf8').replace('"vm"', '"vx"'));
    await expect(repo.readManifest('vm')).rejects.toThrow(RepositoryDamageError);
    const listedDisk = (await listRepository(repo)).disks[0];
    expect(listedDisk.error).toMatch(/^s3:\/\/memory\/repo\/manifests\/vm\/\d{12}\.json: manifest damaged: /);
  });
});
