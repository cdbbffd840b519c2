/**
 * The object repository's disk lease (src/repo/object/lease.ts) against the in-memory store with faults at its
 * edge: a generation vanishing under the taker, holders on cloned hosts, writes whose answers were lost, and a
 * stalled holder's late writes.
 */
import { spawnSync } from 'node:child_process';
import { hostname } from 'node:os';
import { DiskLease } from '../../../src/repo/object/lease.js';
import { BusyError } from '../../../src/util/errors.js';
import { bootId, pidNamespace, processStart } from '../../../src/util/process-identity.js';
import type { ObjectInfo } from '../../../src/io/object-store.js';
import { MemoryObjectStore } from '../../helpers/memory-object-store.js';

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
});
