/**
 * The content of a lock file: who holds it and its lease. A JSON object padded with spaces to a fixed 512 bytes,
 * so a renewal rewrites it in place with one write inside one sector, and a reader sees the old or the new one.
 */
import { createHash, randomBytes } from 'node:crypto';
import type { Location } from '../io/location.js';
import { NotFoundError } from '../util/errors.js';
import { ownIdentity } from '../util/process-identity.js';

export const RECORD_BYTES = 512;

/** What a lock file says. Locks written before leases existed have only pid, host, op and since. */
export interface LockRecord {
  pid: number;
  host: string;
  op: string;
  since: string;
  /** Random id of this holding: tells a renewed lock from a new one with the same pid. */
  token?: string;
  /** Incremented by each renewal, so a watcher sees a live holder even when clocks disagree. */
  generation?: number;
  /** The holder's wall clock at its last renewal: only a hint for others (see lock.ts). */
  renewed?: string;
  /** How long after `renewed` the holder's lock may be broken. */
  leaseMs?: number;
  /** The holder machine's boot id and the holder process's start time (util/process-identity.ts). */
  boot?: string;
  start?: string;
  /** The holder's pid namespace (util/process-identity.ts). */
  pidns?: string;
}

/** A lock file as read: its bytes (what identifies this holding and renewal), the record if it parses, its mtime. */
export interface LockSnapshot {
  raw: Buffer;
  record: LockRecord | null;
  mtimeMs: number;
}

/** A record for a new holding by this process. */
export function newRecord(op: string, leaseMs: number): LockRecord {
  const now = new Date().toISOString();
  const me = ownIdentity();
  return { ...me, host: me.host.slice(0, 200), op, since: now, token: randomBytes(8).toString('hex'), generation: 0, renewed: now, leaseMs };
}

/** The record's bytes, padded to RECORD_BYTES. */
export function serializeRecord(r: LockRecord): Buffer {
  const out = Buffer.alloc(RECORD_BYTES, 0x20);
  const json = Buffer.from(JSON.stringify(r));
  if (json.length > RECORD_BYTES) throw new Error(`lock record of ${json.length} bytes`);
  json.copy(out);
  return out;
}

/** The record in `raw`, or null when it is not one (torn, empty, another program's file). */
export function parseRecord(raw: Buffer): LockRecord | null {
  let v: Partial<LockRecord>;
  try {
    v = JSON.parse(raw.toString('utf8')) as Partial<LockRecord>;
  } catch {
    return null;
  }
  if (!v || typeof v !== 'object' || !Number.isSafeInteger(v.pid) || (v.pid as number) <= 0 || typeof v.host !== 'string') return null;
  return {
    pid: v.pid as number,
    host: v.host,
    op: typeof v.op === 'string' ? v.op : 'run',
    since: typeof v.since === 'string' ? v.since : '?',
    token: typeof v.token === 'string' ? v.token : undefined,
    generation: Number.isSafeInteger(v.generation) ? v.generation : undefined,
    renewed: typeof v.renewed === 'string' ? v.renewed : undefined,
    leaseMs: Number.isSafeInteger(v.leaseMs) && (v.leaseMs as number) > 0 ? v.leaseMs : undefined,
    boot: typeof v.boot === 'string' ? v.boot : undefined,
    start: typeof v.start === 'string' ? v.start : undefined,
    pidns: typeof v.pidns === 'string' ? v.pidns : undefined,
  };
}

/** Reads the lock file at `loc`; null when there is none. */
export async function readSnapshot(loc: Location): Promise<LockSnapshot | null> {
  const { store, path } = loc;
  try {
    if (store.readSmall) {
      // One step where the store offers it (SMB: one round trip instead of five).
      const small = await store.readSmall(path, 4096);
      return small && { raw: small.bytes, record: parseRecord(small.bytes), mtimeMs: small.mtimeMs };
    }
    const f = await store.open(path, 'read');
    let raw: Buffer;
    try {
      raw = Buffer.from(await f.read(0, 4096));
    } finally {
      await f.close().catch(() => {});
    }
    const st = await store.stat(path).catch(() => null);
    return { raw, record: parseRecord(raw), mtimeMs: st?.mtimeMs ?? Date.now() };
  } catch (err) {
    // Deleted (or being deleted, which SMB reports otherwise) before it could be read: there is no lock now.
    if (err instanceof NotFoundError || !(await store.stat(path).catch(() => null))) return null;
    throw err;
  }
}

/** A short name for one holding at one renewal: the takeover of exactly that state is claimed under it. */
export function snapshotId(s: LockSnapshot): string {
  const h = createHash('sha256').update(s.raw);
  if (!s.record) h.update(String(s.mtimeMs));
  return h.digest('hex').slice(0, 16);
}

/** Whether two snapshots are the same holding (renewals aside). */
export function sameHolding(a: LockSnapshot, b: LockSnapshot): boolean {
  const x = a.record;
  const y = b.record;
  if (!x || !y) return a.raw.equals(b.raw);
  if (x.token || y.token) return x.token === y.token;
  return x.pid === y.pid && x.host === y.host && x.since === y.since;
}
