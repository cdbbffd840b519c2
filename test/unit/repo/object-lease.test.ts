/**
 * The object repository's disk lease (src/repo/object/lease.ts) against the in-memory store with faults at its
 * edge: a generation vanishing under the taker, holders on cloned hosts, writes whose answers were lost, and a
 * stalled holder's late writes.
 */
import { jest } from '@jest/globals';
import { spawnSync } from 'node:child_process';
import { closeSync, openSync, writeSync } from 'node:fs';
import { hostname } from 'node:os';
import * as path from 'node:path';
import '../../../src/formats/index.js';
import { parseLocation } from '../../../src/io/location.js';
import { backupDisk, pruneDisk } from '../../../src/repo/index.js';
import { DiskLease } from '../../../src/repo/object/lease.js';
import { ObjectRepository } from '../../../src/repo/object/object-backend.js';
import { BusyError, ConflictError, IoError } from '../../../src/util/errors.js';
import { silenceNotices } from '../../../src/util/notice.js';
import { bootId, pidNamespace, processStart } from '../../../src/util/process-identity.js';
import { makeTempDir } from '../../helpers/tmp.js';
import type { ObjectInfo, PutConditions } from '../../../src/io/object-store.js';
import { MemoryObjectStore } from '../../helpers/memory-object-store.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('object lease', () => {
  it('a newest generation that the listing names but reading never finds: one line after a few looks, no endless loop', async () => {
    // A listing that keeps naming a generation already deleted (a lagging index, or a new holder deleting it
    // between every listing and HEAD). The old code looked again at once, forever.
    class Phantom extends MemoryObjectStore {
      heads = 0;
      override async *list(prefix: string): AsyncIterable<ObjectInfo> {
        yield* super.list(prefix);
        if (prefix === 'leases/vm/') yield { key: 'leases/vm/000000000009.json', size: 10, etag: 'gone', lastModifiedMs: 0 };
      }
      override async head(key: string): Promise<ObjectInfo | null> {
        if (++this.heads > 100) throw new Error('still looking after 100 HEADs');
        return super.head(key);
      }
    }
    const store = new Phantom();
    const err = await DiskLease.take(store, 'vm', 'backup').then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(BusyError);
    expect((err as BusyError).describe()).toBe("s3://memory/repo/leases/vm/: the lease of disk 'vm' kept changing while it was read (5 looks): retry");
    expect(store.heads).toBe(5);
    expect(store.keys()).toEqual([]);
  });

  /** A lease record as a holder wrote it, planted as generation 1 of disk 'vm'; renewed just now (not expired). */
  async function plant(store: MemoryObjectStore, holder: object): Promise<void> {
    const now = new Date().toISOString();
    const record = { format: 'vhdsync-lease', op: 'backup', token: 'feedfacefeedface', since: now, renewed: now, renewals: 3, leaseMs: 120_000, released: false, ...holder };
    await store.put('leases/vm/000000000001.json', Buffer.from(JSON.stringify(record)), { ifNoneMatch: '*' });
  }
  /** The pid of a process that has exited. */
  const deadPid = () => Number(spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' }).stdout);

  it('a holder of this boot of this host that has ended is taken over at once; a cloned VM of the same name, an older record or a live holder are not', async () => {
    const gone = deadPid();
    const here = { host: hostname(), boot: bootId()!, pidns: pidNamespace()! };
    expect(here.boot).toMatch(/^[0-9a-f-]{36}$/);
    expect(here.pidns).toMatch(/^pid:\[\d+\]$/);
    const taken = async (holder: object): Promise<boolean> => {
      const store = new MemoryObjectStore();
      await plant(store, holder);
      const lease = await DiskLease.take(store, 'vm', 'prune').catch((e: unknown) => {
        if (!(e instanceof BusyError)) throw e;
        expect(e.describe()).toMatch(/^s3:\/\/memory\/repo\/leases\/vm\/: disk 'vm' is in use by a backup \(pid \d+ on .*\); a later run takes it over once it has gone 120 s without renewal$/);
        return null;
      });
      if (!lease) return false;
      const mine = JSON.parse(store.objects.get('leases/vm/000000000002.json')!.body.toString('utf8'));
      expect(mine).toMatchObject({ host: hostname(), pid: process.pid, boot: bootId(), start: processStart(process.pid), pidns: pidNamespace() });
      await lease.release();
      return true;
    };
    // Gone: its pid is free, or our own pid with another start time (a reused pid).
    expect(await taken({ ...here, pid: gone, start: '12345' })).toBe(true);
    expect(await taken({ ...here, pid: process.pid, start: '1' })).toBe(true);
    // Another machine with our host name (a clone of one template): its process may be alive there.
    expect(await taken({ ...here, boot: '00000000-0000-4000-8000-000000000000', pid: gone, start: '12345' })).toBe(false);
    // Written by an older version: no boot id, no start time; another host as far as we can tell.
    expect(await taken({ host: hostname(), pid: gone })).toBe(false);
    // A container on this kernel (same boot id, same host name with host networking): its pid is not ours to look
    // up, so a pid that is free here says nothing; the same for a record written before pid namespaces were named.
    expect(await taken({ ...here, pidns: 'pid:[1]', pid: gone, start: '12345' })).toBe(false);
    expect(await taken({ host: hostname(), boot: here.boot, pid: gone, start: '12345' })).toBe(false);
    // Alive: our own process with its start time.
    expect(await taken({ ...here, pid: process.pid, start: processStart(process.pid) })).toBe(false);
  });

  it('a lease object carries its record as metadata too: a taker decides on its HEAD alone, with the same answers as from its body', async () => {
    const store = new MemoryObjectStore();
    const timing = { leaseMs: 600_000, renewMs: 60_000, authorityMs: 200_000 };
    const holder = await DiskLease.take(store, 'vm', 'backup', timing);
    await holder.renew();
    const stored = store.objects.get('leases/vm/000000000001.json')!;
    // The metadata is the body's record, renewal included (one PUT writes both).
    expect(Buffer.from(stored.metadata!['vhdsynclease'], 'base64').equals(stored.body)).toBe(true);
    const gets = store.counts.get;
    const busy = await DiskLease.take(store, 'vm', 'prune', timing).then(() => null, (e: unknown) => e);
    expect(busy).toBeInstanceOf(BusyError);
    expect((busy as BusyError).describe()).toMatch(/in use by a backup \(pid \d+ on /);
    await holder.release();
    const next = await DiskLease.take(store, 'vm', 'prune', timing);
    // Neither the busy answer nor the takeover of the released lease read a body.
    expect(store.counts.get).toBe(gets);
    await next.release();
    // A lease without the metadata (an older version's) has its body read: busy while its holder lives.
    const older = new MemoryObjectStore();
    await plant(older, { host: 'elsewhere', pid: 1 });
    expect(await DiskLease.take(older, 'vm', 'prune', timing).then(() => null, (e: unknown) => e)).toBeInstanceOf(BusyError);
    expect(older.counts.get).toBe(1);
  });

  it('a renewal that committed while every attempt of it failed: the next renewal reads the lease back and keeps it', async () => {
    /** A store whose lease PUTs commit and then fail (the answers lost after the retries), or fail before committing. */
    class Unanswered extends MemoryObjectStore {
      mode: 'ok' | 'commit-then-fail' | 'fail' = 'ok';
      override async put(key: string, body: Uint8Array, conditions?: PutConditions): Promise<{ etag: string }> {
        if (this.mode === 'fail') throw new IoError('cannot reach http://127.0.0.1:9: ETIMEDOUT (after 6 attempts)', key);
        const r = await super.put(key, body, conditions);
        if (this.mode === 'commit-then-fail') throw new IoError('cannot reach http://127.0.0.1:9: ETIMEDOUT (after 6 attempts)', key);
        return r;
      }
    }
    const store = new Unanswered();
    // Renewals only when the test asks (the timer's interval is longer than the test).
    const lease = await DiskLease.take(store, 'vm', 'backup', { leaseMs: 600_000, renewMs: 60_000, authorityMs: 200_000 });
    const key = 'leases/vm/000000000001.json';
    const record = () => JSON.parse(store.objects.get(key)!.body.toString('utf8')) as { renewals: number; released: boolean };
    for (const mode of ['commit-then-fail', 'fail'] as const) {
      store.mode = mode;
      await lease.renew();
      store.mode = 'ok';
      await lease.renew();
      expect(() => lease.check()).not.toThrow();
    }
    // Four renewals, of which the one that failed before its PUT reached the service did not count.
    expect(record().renewals).toBe(3);
    // And a release right after an unanswered renewal still releases.
    store.mode = 'commit-then-fail';
    await lease.renew();
    store.mode = 'ok';
    await lease.release();
    expect(record()).toMatchObject({ renewals: 4, released: true });
  });

  it('a lease that looks expired is watched for one more lease with one notice saying so (none with -q), then taken', async () => {
    const take = async (quiet: boolean) => {
      const store = new MemoryObjectStore();
      // A holder on another host, last renewed 10 s ago with a lease of 0.3 s: expired by our clock, so watched.
      const renewed = new Date(Date.now() - 10_000).toISOString();
      await plant(store, { host: 'elsewhere', pid: 4242, since: renewed, renewed, leaseMs: 300 });
      const lines: string[] = [];
      const write = jest.spyOn(process.stderr, 'write').mockImplementation((chunk) => (lines.push(String(chunk)), true));
      silenceNotices(quiet);
      try {
        await (await DiskLease.take(store, 'vm', 'prune')).release();
      } finally {
        silenceNotices(false);
        write.mockRestore();
      }
      expect(store.keys()).toEqual(['leases/vm/000000000002.json']);
      // (Node's own warnings may come through stderr meanwhile.)
      return lines.filter((l) => l.startsWith('vhdsync:'));
    };
    const lines = await take(false);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^vhdsync: disk 'vm': the lease of a backup \(pid 4242 on elsewhere, since \S+\) was last renewed 1\d s ago by our clock: watching it 0 s more before taking it over \(a renewal meanwhile means it is alive\)\n$/);
    expect(await take(true)).toEqual([]);
  });

  /** A raw disk of 4 blocks of 16 KiB, each filled with its own byte. */
  function rawSource(dir: string): string {
    const src = path.join(dir, 'src.raw');
    const fd = openSync(src, 'w');
    for (let b = 0; b < 4; b++) writeSync(fd, Buffer.alloc(16 << 10, b + 1));
    closeSync(fd);
    return src;
  }

  it('a late writer (its lease lapsed unnoticed) cannot make its manifest current, and its sweep deletes nothing of the new holder', async () => {
    const tmp = makeTempDir('vhdsync-objlease-');
    try {
      const src = rawSource(tmp.dir);
      const store = new MemoryObjectStore();
      const repo = new ObjectRepository(store);
      await backupDisk(repo, await parseLocation(src), 'vm', { blockSize: 16 << 10 });
      const late = await repo.lockDisk('vm', 'prune');
      try {
        const m = (await repo.readManifest('vm'))!;
        const g = m.generation;
        const key = (n: number) => `manifests/vm/${String(n).padStart(12, '0')}.json`;
        // Meanwhile (this run stalled, its clock frozen, so its own deadline never passed) another run took the disk
        // over, wrote generations g + 1 and g + 2 (deleting g + 1) and a block of its new point.
        const theirs = 'disks/vm/blocks/' + 'ab'.repeat(32);
        await store.put(key(g + 2), Buffer.from('newer'), { ifNoneMatch: '*' });
        await store.put(theirs, Buffer.alloc(16 << 10, 9), { ifNoneMatch: '*' });
        const next = { ...m, generation: g + 1 };
        // Generation g + 1's key is free again: the create succeeds, but it is not the newest, so the run stops there.
        await expect(late.writeManifest(next)).rejects.toThrow(new ConflictError(`generation ${g + 2} of the manifest of disk 'vm' was written by another run that took the disk over; this run (at generation ${g + 1}) stopped and records nothing more (a restore point whose map it wrote may still be recorded by the next run): retry`, ''));
        // The sweep refuses on the listing that found the newer generation (it used to list the manifests again).
        const lists = store.counts.list;
        await expect(late.sweep(next)).rejects.toBeInstanceOf(ConflictError);
        expect(store.counts.list - lists).toBe(1);
        expect(store.keys()).toContain(theirs);
        expect(store.keys()).toContain(key(g + 2));
      } finally {
        await late.release();
      }
    } finally {
      tmp.cleanup();
    }
  });

  it('every put and delete of a session carries its lease as the fence the store asks before each attempt', async () => {
    const tmp = makeTempDir('vhdsync-objlease-');
    try {
      const src = rawSource(tmp.dir);
      const store = new MemoryObjectStore();
      const repo = new ObjectRepository(store);
      const seen: { key: string; fence: unknown }[] = [];
      const put = store.put.bind(store);
      const del = store.delete.bind(store);
      store.put = (key, body, conditions) => (seen.push({ key, fence: conditions?.fence }), put(key, body, conditions));
      store.delete = (keys, fence) => (keys.length && seen.push({ key: keys[0], fence }), del(keys, fence));
      await backupDisk(repo, await parseLocation(src), 'vm', { blockSize: 16 << 10 });
      const again = openSync(src, 'r+');
      writeSync(again, Buffer.alloc(100, 7), 0, 100, 0);
      closeSync(again);
      await backupDisk(repo, await parseLocation(src), 'vm', { blockSize: 16 << 10 });
      await pruneDisk(repo, 'vm', { keep: 1 });
      // The lease's own requests (take, renew, release) and the repository marker are outside any session.
      const session = seen.filter((r) => !r.key.startsWith('leases/') && r.key !== 'vhdsync-repository.json');
      expect(session.length).toBeGreaterThan(10);
      for (const r of session) expect(r.fence).toBeInstanceOf(DiskLease);
      expect(session.some((r) => r.key.startsWith('manifests/'))).toBe(true);
      expect(session.some((r) => r.key.includes('/blocks/'))).toBe(true);
      // The prune's sweep deleted the dropped point's block, map and list under the fence too.
      expect(session.some((r) => r.key.startsWith('disks/vm/') && !store.objects.has(r.key))).toBe(true);
    } finally {
      tmp.cleanup();
    }
  });
  it('a first backup killed between taking its lease and its first manifest: prune of every disk removes the lease once expired; a live holder\'s, or one of a disk with objects, stays', async () => {
    const tmp = makeTempDir('vhdsync-objlease-');
    try {
      const src = rawSource(tmp.dir);
      const store = new MemoryObjectStore();
      // A short lease: the killed run's expires, and is watched, within a second.
      const repo = new ObjectRepository(store, { lease: { leaseMs: 400, renewMs: 50, authorityMs: 150 } });
      // Killed at its first manifest's create: from then on none of its requests arrives (its release neither).
      let killed = false;
      store.beforeMutation = (m) => {
        if (m.op === 'put' && m.key.startsWith('manifests/vm/')) killed = true;
        if (killed) throw new Error('killed');
      };
      await expect(backupDisk(repo, await parseLocation(src), 'vm', { blockSize: 16 << 10 })).rejects.toThrow(/killed|lost the lease/);
      store.beforeMutation = null;
      expect(store.keys()).toEqual(['leases/vm/000000000001.json', 'vhdsync-repository.json']);
      expect(await repo.listDisks()).toEqual([]);
      // Beside it: a live run's fresh lease (another host) on a disk that has no manifest yet, and the lease of a disk
      // whose manifest was lost (its map is there: verify --repair's to rebuild, so not an orphan).
      const now = new Date().toISOString();
      const live = { format: 'vhdsync-lease', host: 'elsewhere', pid: 4242, op: 'backup', token: 'feedfacefeedface', since: now, renewed: now, renewals: 0, leaseMs: 120_000, released: false };
      await store.put('leases/new/000000000001.json', Buffer.from(JSON.stringify(live)));
      await store.put('leases/lost/000000000003.json', Buffer.from(JSON.stringify({ ...live, released: true })));
      await store.put('disks/lost/20260101T000000Z.map', Buffer.from('a map'));
      await new Promise((r) => setTimeout(r, 450));
      silenceNotices(true);
      let removed: string[];
      try {
        removed = await repo.dropOrphanLocks();
      } finally {
        silenceNotices(false);
      }
      expect(removed).toEqual(['leases/vm/000000000002.json']);
      expect(store.keys()).toEqual(['disks/lost/20260101T000000Z.map', 'leases/lost/000000000004.json', 'leases/new/000000000001.json', 'vhdsync-repository.json']);
      expect(JSON.parse(store.objects.get('leases/lost/000000000004.json')!.body.toString()).released).toBe(true);
      // The disk's name is free for an ordinary first backup.
      expect((await backupDisk(repo, await parseLocation(src), 'vm', { blockSize: 16 << 10 })).kind).toBe('full');
    } finally {
      tmp.cleanup();
    }
  });

  describe('a prune that discards an orphan lease (every generation gone, so generation numbers start again)', () => {
    const L = (g: number) => `leases/vm/${String(g).padStart(12, '0')}.json`;
    /** A released lease of generation `g`, as a run that ended cleanly leaves it. */
    async function released(store: MemoryObjectStore, g: number): Promise<void> {
      const now = new Date().toISOString();
      const record = { format: 'vhdsync-lease', host: 'h', pid: 1, op: 'backup', token: 'feedfacefeedface', since: now, renewed: now, renewals: 0, leaseMs: 120000, released: true };
      await store.put(L(g), Buffer.from(JSON.stringify(record)), { ifNoneMatch: '*' });
    }
    const holds = (lease: DiskLease) => {
      try {
        lease.check();
        return true;
      } catch {
        return false;
      }
    };

    it('a taker whose generation vanished between its HEAD and its GET looks again: never two holders at once', async () => {
      const store = new MemoryObjectStore();
      await released(store, 1);
      const prune = await DiskLease.take(store, 'vm', 'prune'); // generation 2
      let other: DiskLease | null = null;
      // The taker's HEAD of generation 2 comes before the prune's discard, its GET after it and after a new first
      // backup took generation 1. The old code counted the vanished record as free and took generation 3.
      const view = Object.create(store) as MemoryObjectStore;
      // As an older version wrote it (no record in its metadata): the taker reads its body after the HEAD.
      view.head = async (key) => {
        const info = await store.head(key);
        if (info) delete info.metadata;
        return info;
      };
      let once = true;
      view.get = async (key, range) => {
        if (once && key === L(2)) {
          once = false;
          await prune.discard();
          other = await DiskLease.take(store, 'vm', 'backup');
        }
        return store.get(key, range);
      };
      const err = await DiskLease.take(view, 'vm', 'backup').then(() => null, (e: unknown) => e);
      expect(err).toBeInstanceOf(BusyError);
      expect(other).not.toBeNull();
      expect(holds(other!)).toBe(true);
      expect(store.keys()).toEqual([L(1)]);
      await other!.release();
    });

    it("discard waits for its take's cleanup: a late cleanup delete cannot remove the next holder's generation 1", async () => {
      const store = new MemoryObjectStore();
      await released(store, 1);
      let letGo!: () => void;
      const gate = new Promise<void>((r) => (letGo = r));
      const view = Object.create(store) as MemoryObjectStore;
      let first = true;
      view.delete = async (keys, fence) => {
        if (first && keys.includes(L(1))) {
          first = false;
          await gate; // the cleanup's delete, answered late (retried after a timeout)
        }
        return store.delete(keys, fence);
      };
      const prune = await DiskLease.take(view, 'vm', 'prune'); // generation 2
      const discarding = prune.discard();
      await sleep(20);
      letGo();
      expect(await discarding).toEqual([L(2)]);
      const next = await DiskLease.take(store, 'vm', 'backup'); // generation 1 again
      await next.renew();
      expect(holds(next)).toBe(true);
      expect(store.keys()).toEqual([L(1)]);
      await next.release();
    });

    it('a stalled holder of generation 1 is told it was taken over when a new run holds a new generation 1', async () => {
      const store = new MemoryObjectStore();
      const stalled = await DiskLease.take(store, 'vm', 'backup');
      clearInterval((stalled as unknown as { timer: NodeJS.Timeout }).timer); // frozen: it renews no more
      expect(await stalled.takenOver()).toBe(false);
      await stalled.renew(); // a renewal changes the ETag; the token still says the lease is ours
      expect(await stalled.takenOver()).toBe(false);
      // What a prune's takeover and discard leave behind: no generation at all. A new run then takes generation 1.
      await store.delete([L(1)]);
      const next = await DiskLease.take(store, 'vm', 'backup');
      expect(await stalled.takenOver()).toBe(true);
      await next.release();
    });
  });

  it('a slow delete of older generations at take() does not keep release() from marking the lease released', async () => {
    class SlowDelete extends MemoryObjectStore {
      slow = false;
      override async delete(keys: readonly string[], fence?: Parameters<MemoryObjectStore['delete']>[1]): Promise<void> {
        if (this.slow && keys.some((k) => k.startsWith('leases/'))) await sleep(2500); // longer than the authority
        return super.delete(keys, fence);
      }
    }
    const store = new SlowDelete();
    const timing = { leaseMs: 4000, renewMs: 200, authorityMs: 1000 };
    await (await DiskLease.take(store, 'vm', 'backup', timing)).release(); // generation 1, released
    store.slow = true;
    const lease = await DiskLease.take(store, 'vm', 'backup', timing); // generation 2; generation 1's delete is slow
    await lease.release(); // renewals went on while it waited for that delete
    const record = JSON.parse(store.objects.get('leases/vm/000000000002.json')!.body.toString()) as { released: boolean };
    expect(record.released).toBe(true);
  });

  it('a store that ignores conditional writes is reported at once, not after watching an expired lease', async () => {
    class Unconditional extends MemoryObjectStore {
      override async put(key: string, body: Uint8Array, c: PutConditions = {}): Promise<{ etag: string }> {
        return super.put(key, body, key === 'vhdsync-repository.json' ? {} : c);
      }
    }
    const store = new Unconditional();
    const repo = new ObjectRepository(store);
    await repo.exists(true);
    const old = new Date(Date.now() - 3_600_000).toISOString();
    const record = { format: 'vhdsync-lease', host: 'elsewhere', pid: 1, op: 'backup', token: 't', since: old, renewed: old, renewals: 0, leaseMs: 600_000, released: false };
    await store.put('leases/vm/000000000001.json', Buffer.from(JSON.stringify(record) + '\n'));
    // The old code printed "watching it 600 s more" and slept that long before the probe's error.
    const err = await repo.lockDisk('vm', 'backup').then(() => null, (e: unknown) => e);
    expect(String(err)).toMatch(/ignores If-None-Match/);
  });
});
