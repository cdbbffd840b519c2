/**
 * A run lock's guard over an SMB share (decision 0010: no write once the lease lapsed), against a scripted server
 * (a stand-in for SmbClient) holding one buffer per file: the lock file lives on the same share, so while the
 * connection is down the lease cannot be renewed and lapses. A write that was issued before the lapse but goes out
 * only after it (resent after the reconnect, or waiting for room in the write-behind window) and a rename whose
 * open waited for the reconnect must never reach the server; the run fails with the lock's one line instead.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { SmbStore } from '../../../src/io/smb/store.js';
import type { SmbClient } from '../../../src/io/smb/client.js';
import { ConnectionLostError, StaleHandleError } from '../../../src/io/smb/status.js';
import { NotFoundError, AlreadyExistsError } from '../../../src/util/errors.js';
import { lockImage, type ImageLock, type LockTiming } from '../../../src/sync/lock.js';
import { FileInfoClass } from '../../../src/io/smb/info.js';
import { Command, HEADER_SIZE } from '../../../src/io/smb/header.js';
import { Status } from '../../../src/io/smb/status.js';
import { WRITE_BEHIND_BYTES } from '../../../src/io/smb/write-behind.js';

/** A short lease, so a lapse takes about a second; nothing below measures time, it waits for the lapse. */
const TIMING: LockTiming = { leaseMs: 3000, renewMs: 100, authorityMs: 1000 };

interface Handle {
  share: string;
  treeId: number;
  fileId: Buffer;
  generation: number;
  info: { endOfFile: number; mtimeMs: number; attributes: number };
  name: string;
}

class ScriptedShare {
  generation = 1;
  readonly files = new Map<string, Buffer>();
  /** WRITE requests that reached the server, as "name@offset". */
  readonly writes: string[] = [];
  private down: { up: Promise<void>; release: () => void } | null = null;
  /** While set, opening the lock file waits (a share that stalls on it: renewals cannot get through). */
  private lockStall: { free: Promise<void>; release: () => void } | null = null;
  /** WRITEs of at least this many bytes wait for `releaseHeld` (a slow server filling the window). */
  private holdFrom = Infinity;
  private held: Array<() => void> = [];
  private ids = 0;

  /** The connection drops; requests fail and reconnects wait until `up`. */
  drop(): void {
    let release!: () => void;
    const up = new Promise<void>((r) => (release = r));
    this.down = { up, release };
    this.generation++;
  }
  up(): void {
    this.down?.release();
    this.down = null;
  }
  stallLock(): void {
    let release!: () => void;
    this.lockStall = { free: new Promise<void>((r) => (release = r)), release };
  }
  unstallLock(): void {
    this.lockStall?.release();
    this.lockStall = null;
  }
  hold(bytes: number): void {
    this.holdFrom = bytes;
  }
  releaseHeld(): void {
    this.holdFrom = Infinity;
    for (const r of this.held.splice(0)) r();
  }
  get heldCount(): number {
    return this.held.length;
  }

  client(): SmbClient {
    const s = this;
    const alive = (h: Handle) => {
      if (s.down) throw new ConnectionLostError('connection to fake:445 closed');
      // The client's call sees a handle of an earlier connection before sending anything.
      if (h.generation !== s.generation) throw new StaleHandleError('connection to fake:445 was re-established; the file must be reopened');
    };
    const create = async (share: string, req: { name: string; disposition: number }): Promise<Handle> => {
      if (s.down) throw new ConnectionLostError('connection to fake:445 closed');
      const name = req.name;
      if (name.endsWith('.vhdsync-lock')) await s.lockStall?.free;
      const exists = s.files.has(name);
      // Disposition: 1 OPEN, 2 CREATE, 3 OPEN_IF.
      if (req.disposition === 1 && !exists) throw new NotFoundError('no such file', name);
      if (req.disposition === 2 && exists) throw new AlreadyExistsError('already exists', name);
      if (!exists) s.files.set(name, Buffer.alloc(0));
      return { share, treeId: 1, fileId: Buffer.alloc(16, ++s.ids), generation: s.generation, info: { endOfFile: s.files.get(name)!.length, mtimeMs: 0, attributes: 0 }, name };
    };
    const put = (name: string, pos: number, data: Uint8Array) => {
      if (!name.endsWith('.vhdsync-lock')) s.writes.push(`${name}@${pos}`);
      const old = s.files.get(name)!;
      const grown = old.length < pos + data.byteLength ? Buffer.concat([old, Buffer.alloc(pos + data.byteLength - old.length)]) : old;
      grown.set(data, pos);
      s.files.set(name, grown);
    };
    const setInfo = (name: string, infoClass: number, info: Buffer) => {
      if (infoClass === FileInfoClass.RENAME) {
        // FILE_RENAME_INFORMATION: ReplaceIfExists(1) pad(7) RootDirectory(8) NameLength(4) Name (UTF-16LE).
        const to = info.subarray(20, 20 + info.readUInt32LE(16)).toString('utf16le');
        if (info.readUInt8(0) === 0 && s.files.has(to)) throw new AlreadyExistsError('already exists', to);
        s.files.set(to, s.files.get(name)!);
        s.files.delete(name);
      }
      if (infoClass === FileInfoClass.DISPOSITION && info.readUInt8(0) === 1) s.files.delete(name);
    };
    const c = {
      get generation() {
        return s.generation;
      },
      async connection() {
        await s.down?.up;
        return {};
      },
      async reconnect() {
        await s.down?.up;
      },
      async ensureShare() {
        if (s.down) throw new ConnectionLostError('connection to fake:445 closed');
      },
      create,
      async write(h: Handle, pos: number, data: Uint8Array) {
        alive(h);
        if (data.byteLength >= s.holdFrom) await new Promise<void>((r) => s.held.push(r));
        alive(h);
        put(h.name, pos, data);
      },
      async read(h: Handle, pos: number, len: number, into: Buffer, at: number) {
        alive(h);
        const f = s.files.get(h.name)!;
        return f.copy(into, at, pos, Math.min(pos + len, f.length));
      },
      async echo(h: Handle) {
        alive(h);
      },
      async flush(h: Handle) {
        alive(h);
      },
      async setInfo(h: Handle, infoClass: number, info: Buffer) {
        alive(h);
        setInfo(h.name, infoClass, info);
      },
      async close() {},
      async requestLimits() {
        return { read: 1 << 20, write: 1 << 20, transact: 65536 };
      },
      /** A server that grants all the credits a chain needs. */
      async chainFits() {
        await s.down?.up;
        return true;
      },
      /** CREATE + ops + CLOSE as SmbClient.openChain sends them, each op decoded from the bytes it would send. */
      async openChain(share: string, req: { name: string; disposition: number }, ops: Array<{ command: number; body: Buffer[] }>) {
        const h = await create(share, req);
        const replies = ops.map((op) => {
          alive(h);
          const body = op.body[0];
          const reply = (status: number, rest: Buffer = Buffer.alloc(0)) => ({ header: { status }, msg: Buffer.concat([Buffer.alloc(HEADER_SIZE), rest]) });
          if (op.command === Command.WRITE) {
            const data = op.body[1];
            put(h.name, Number(body.readBigUInt64LE(8)), data);
            const r = Buffer.alloc(16);
            r.writeUInt16LE(17, 0);
            r.writeUInt32LE(data.length, 4);
            return reply(Status.SUCCESS, r);
          }
          if (op.command === Command.READ) {
            const pos = Number(body.readBigUInt64LE(8));
            const data = s.files.get(h.name)!.subarray(pos, pos + body.readUInt32LE(4));
            if (data.length === 0) return reply(Status.END_OF_FILE);
            const r = Buffer.alloc(16);
            r.writeUInt16LE(17, 0);
            r.writeUInt8(HEADER_SIZE + 16, 2);
            r.writeUInt32LE(data.length, 4);
            return reply(Status.SUCCESS, Buffer.concat([r, data]));
          }
          if (op.command === Command.SET_INFO) setInfo(h.name, body.readUInt8(3), body.subarray(32, 32 + body.readUInt32LE(4)));
          return reply(op.command === Command.QUERY_DIRECTORY ? Status.NO_MORE_FILES : Status.SUCCESS);
        });
        return { info: { ...h.info, fileId: h.fileId, createAction: 1 }, replies, closed: true };
      },
    };
    return c as unknown as SmbClient;
  }
}

/** Resolves once the lock's lease has lapsed (its check throws). */
async function lapsed(lock: ImageLock): Promise<void> {
  for (;;) {
    try {
      lock.check();
    } catch {
      return;
    }
    await sleep(20);
  }
}

describe('SMB writes under a run lock whose lease lapses', () => {
  let share: ScriptedShare;
  let store: SmbStore;
  let lock: ImageLock | null = null;
  beforeEach(async () => {
    share = new ScriptedShare();
    share.files.set('disk.raw', Buffer.alloc(8192));
    store = new SmbStore(share.client(), 'share', 'smb://u@fake/share');
    lock = await lockImage({ store, path: '/disk.raw' }, 'copy', TIMING);
  });
  afterEach(async () => {
    share.up();
    share.releaseHeld();
    share.unstallLock();
    await lock?.release();
  });

  it('a write resent after a reconnect does not go out once the lease lapsed during the reconnect', async () => {
    const guarded = lock!.guard({ store, path: '/disk.raw' });
    const f = await guarded.store.open('/disk.raw', 'readwrite');
    await f.write(0, Buffer.alloc(4096, 1));
    await f.flush();
    // Sent while the lease holds; the connection drops before the server applies it, so it must be sent again.
    share.hold(4096);
    await f.write(4096, Buffer.alloc(4096, 2));
    while (share.heldCount < 1) await sleep(5);
    share.drop();
    share.releaseHeld();
    // The resend waits for the reconnect, which waits until the lease has lapsed.
    await lapsed(lock!);
    share.up();
    await expect(f.flush()).rejects.toThrow(/lost the lock/);
    await f.close().catch(() => {});
    expect(share.writes).toEqual(['disk.raw@0']);
    expect(share.files.get('disk.raw')!.subarray(4096).equals(Buffer.alloc(4096))).toBe(true);
  });

  it('a write waiting for room in the write-behind window does not go out once the lease lapsed meanwhile', async () => {
    const guarded = lock!.guard({ store, path: '/disk.raw' });
    const f = await guarded.store.open('/disk.raw', 'readwrite');
    const half = WRITE_BEHIND_BYTES / 2;
    share.hold(half);
    // Two writes fill the window and the server sits on them; the third waits for room. The lock file stalls, so
    // the lease lapses meanwhile without the connection dropping.
    await f.write(0, Buffer.alloc(half, 1));
    await f.write(half, Buffer.alloc(half, 2));
    const third = f.write(2 * half, Buffer.alloc(half, 3));
    share.stallLock();
    await lapsed(lock!);
    share.releaseHeld();
    await third.catch(() => {});
    await expect(f.flush()).rejects.toThrow(/lost the lock/);
    await f.close().catch(() => {});
    expect(share.writes.sort()).toEqual(['disk.raw@0', `disk.raw@${half}`]);
  });

  it('a rename whose open waited for a reconnect is not sent once the lease lapsed meanwhile', async () => {
    const guarded = lock!.guard({ store, path: '/disk.raw' });
    share.files.set('disk.raw.tmp', Buffer.alloc(16, 7));
    share.drop();
    const renaming = guarded.store.rename('/disk.raw.tmp', '/disk2.raw');
    await lapsed(lock!);
    share.up();
    await expect(renaming).rejects.toThrow(/lost the lock/);
    expect(share.files.has('disk.raw.tmp')).toBe(true);
    expect(share.files.has('disk2.raw')).toBe(false);
  });

  it('a small new file (one CREATE + WRITE + CLOSE chain) whose reconnect outlasted the lease is not created', async () => {
    const guarded = lock!.guard({ store, path: '/disk.raw' });
    share.drop();
    const writing = guarded.store.writeNew!('/state.json', Buffer.from('{}'), { flush: true });
    await lapsed(lock!);
    share.up();
    await expect(writing).rejects.toThrow(/lost the lock/);
    expect(share.files.has('state.json')).toBe(false);
  });

  it('the same writes go out while the lease holds (the guard stops only late ones)', async () => {
    const guarded = lock!.guard({ store, path: '/disk.raw' });
    const f = await guarded.store.open('/disk.raw', 'readwrite');
    share.drop();
    await f.write(4096, Buffer.alloc(4096, 2));
    share.up();
    await f.flush();
    await f.close();
    expect(share.writes).toEqual(['disk.raw@4096']);
    await guarded.store.rename('/disk.raw', '/disk2.raw');
    expect(share.files.get('disk2.raw')!.subarray(4096).equals(Buffer.alloc(4096, 2))).toBe(true);
  });
});
