/**
 * An ObjectStore in memory with S3's semantics where the repository relies on them (atomic whole-object puts,
 * `If-None-Match: *` and `If-Match` decided atomically, keys listed in order, deletes of absent keys succeed), for
 * unit and property tests. `beforeMutation` lets a test fail or "kill" the run at an exact request, `beforeRead` fail a read.
 */
import { createHash } from 'node:crypto';
import type { ObjectInfo, ObjectRange, ObjectStore, PutConditions, WriteFence } from '../../src/io/object-store.js';
import { AlreadyExistsError, ConflictError, IoError } from '../../src/util/errors.js';

interface Stored {
  body: Buffer;
  etag: string;
  lastModifiedMs: number;
  metadata?: Record<string, string>;
}

/** A request that changes the store, as `beforeMutation` sees it. */
export type Mutation = { op: 'put'; key: string } | { op: 'delete'; keys: readonly string[] };

export class MemoryObjectStore implements ObjectStore {
  readonly objects = new Map<string, Stored>();
  /** Called before every put and delete; throwing from it makes the request fail without effect. */
  beforeMutation: ((m: Mutation) => void) | null = null;
  /** Called before every get; throwing from it makes the read fail (a store that cannot be reached, a 503). */
  beforeRead: ((key: string) => void) | null = null;
  /** Requests served, by kind. */
  readonly counts = { get: 0, head: 0, put: 0, list: 0, delete: 0 };

  constructor(readonly display = 's3://memory/repo') {}

  async get(key: string, range?: ObjectRange): Promise<Buffer | null> {
    this.counts.get++;
    this.beforeRead?.(key);
    const o = this.objects.get(key);
    if (!o) return null;
    return Buffer.from(range ? o.body.subarray(range.start, range.start + range.length) : o.body);
  }

  async head(key: string): Promise<ObjectInfo | null> {
    this.counts.head++;
    const o = this.objects.get(key);
    return o ? { key, size: o.body.length, etag: o.etag, lastModifiedMs: o.lastModifiedMs, ...(o.metadata ? { metadata: { ...o.metadata } } : {}) } : null;
  }

  async put(key: string, body: Uint8Array, conditions: PutConditions = {}): Promise<{ etag: string }> {
    this.counts.put++;
    conditions.fence?.remainingMs();
    this.beforeMutation?.({ op: 'put', key });
    const old = this.objects.get(key);
    if (conditions.ifNoneMatch === '*' && old) throw new AlreadyExistsError('already exists', key);
    if (conditions.ifMatch !== undefined && old?.etag !== conditions.ifMatch) throw new ConflictError('changed by another writer', key);
    // As S3 checks a signed payload hash against the body it received.
    if (conditions.sha256 !== undefined && createHash('sha256').update(body).digest('hex') !== conditions.sha256) throw new IoError('XAmzContentSHA256Mismatch', key);
    const copy = Buffer.from(body);
    const etag = createHash('md5').update(copy).digest('hex');
    this.objects.set(key, { body: copy, etag, lastModifiedMs: Date.now(), ...(conditions.metadata ? { metadata: { ...conditions.metadata } } : {}) });
    return { etag };
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    this.counts.list++;
    const keys = [...this.objects.keys()].filter((k) => k.startsWith(prefix)).sort();
    for (const key of keys) {
      const o = this.objects.get(key);
      if (o) yield { key, size: o.body.length, etag: o.etag, lastModifiedMs: o.lastModifiedMs };
    }
  }

  async delete(keys: readonly string[], fence?: WriteFence): Promise<void> {
    this.counts.delete++;
    if (!keys.length) return;
    fence?.remainingMs();
    this.beforeMutation?.({ op: 'delete', keys });
    for (const k of keys) this.objects.delete(k);
  }

  async bucketExists(): Promise<boolean> {
    return true;
  }

  async close(): Promise<void> {}

  /** Every key, sorted. */
  keys(): string[] {
    return [...this.objects.keys()].sort();
  }
}
