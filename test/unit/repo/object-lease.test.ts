/**
 * The object repository's disk lease (src/repo/object/lease.ts) against the in-memory store with faults at its
 * edge: a generation vanishing under the taker, holders on cloned hosts, writes whose answers were lost, and a
 * stalled holder's late writes.
 */
import { DiskLease } from '../../../src/repo/object/lease.js';
import { BusyError } from '../../../src/util/errors.js';
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
});
