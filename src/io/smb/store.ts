/**
 * An SMB share as a ByteStore. Paths are share-relative POSIX-style ("/dir/disk.vhdx"); the share root is
 * "/". Positioned I/O survives a dropped connection: the file is reopened on a new connection and the
 * request retried (positioned reads and writes are idempotent). Operations that are not idempotent
 * (create, rename, delete) are not replayed once sent; they fail with a clear IoError instead. A guarded view
 * (`guarded`) checks its caller's condition (a run lock's lease) right before every request that changes a file,
 * so neither a write waiting in the write-behind window nor one resent after a reconnect goes out once it lapsed.
 */
import * as posix from 'node:path/posix';
import { AlreadyExistsError, IoError, NotFoundError, VhdsyncError } from '../../util/errors.js';
import type { ByteStore, OpenHints, OpenMode, RandomAccessFile, SmallFile, StorePaths, StoreStat } from '../store.js';
import { OPEN, type ChainOp, type ChainResult, type SmbClient, type SmbHandle } from './client.js';
import { RELATED_FILE_ID } from './compound.js';
import type { Reply } from './connection.js';
import { Access, CreateOptions, Disposition, FILE_ATTRIBUTE_DIRECTORY, ShareAccess, type CreateRequest, type CreateResponse } from './create.js';
import { Command } from './header.js';
import { dispositionInfo, endOfFileInfo, FileInfoClass, renameInfo, serializeSetInfoRequest } from './info.js';
import { parseQueryDirectoryResponse, QueryDirectoryFlags, type DirectoryEntry, serializeQueryDirectoryRequest } from './query-directory.js';
import { parseReadResponse, parseWriteResponse, serializeReadRequest, serializeWriteRequest } from './read-write.js';
import { serializeFlushRequest } from './simple.js';
import { ConnectionLostError, NotRunError, SmbStatusError, StaleHandleError, Status, notRun } from './status.js';
import { WriteBehind } from './write-behind.js';

/**
 * The most bytes, and WRITEs, writeNew sends in its one chain: a list of a few MiB (with 64 KiB blocks and their
 * sub-digests, 270 KiB for a 512 MiB image, 2.1 MiB for 4 GiB) goes in one round trip; a larger file through a handle.
 */
const ONE_CHAIN_BYTES = 4 << 20;
const ONE_CHAIN_WRITES = 64;

/** How many times one operation is retried across reconnects before giving up. */
const MAX_RETRIES = 3;

const smbPaths: StorePaths = {
  join: (...p) => posix.join('/', ...p),
  dirname: (p) => posix.dirname(posix.join('/', p)),
  basename: (p) => posix.basename(p),
  resolve: (base, rel) => posix.resolve('/', base, rel),
  relative: (from, to) => posix.relative(posix.join('/', from), posix.join('/', to)),
  isAbsolute: (p) => p.startsWith('/'),
};

/** A share-relative path in SMB's syntax: no leading separator, backslashes. */
export function smbName(p: string): string {
  return posix
    .normalize('/' + p)
    .replace(/^\/+/, '')
    .replace(/\/+$/, '')
    .replace(/\//g, '\\');
}

function isDeletePending(err: unknown): boolean {
  return err instanceof SmbStatusError && err.status === Status.DELETE_PENDING;
}

/** Runs `op`, reconnecting and retrying when the connection drops under it. */
async function retrying<T>(client: SmbClient, op: () => Promise<T>, subject: string): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await op();
    } catch (err) {
      if (!(err instanceof ConnectionLostError)) throw err;
      if (attempt >= MAX_RETRIES) throw new IoError(`${err.message}; gave up after ${MAX_RETRIES} reconnects`, subject);
      try {
        await client.reconnect();
      } catch (again) {
        throw again instanceof VhdsyncError && !again.subject ? new IoError(again.message, subject) : again;
      }
    }
  }
}

/** An open file on a share. */
class SmbFile implements RandomAccessFile {
  private closing: Promise<void> | null = null;
  private readonly behind = new WriteBehind();
  /** One reopen for every operation that finds the handle stale (not one handle each). */
  private reopening: Promise<SmbHandle> | null = null;
  /**
   * The file's size as this handle knows it: what the server reported when it was opened, moved by this handle's
   * own writes and truncations. size() answers from it without a QUERY_INFO round trip. Nothing else changes the
   * files vhdsync opens on a share while it has them open (images and their lists are under the run lock, decision
   * 0010; inputs are not written during a run), the rule a local fstat would not need but SMB clients live by (the
   * Windows redirector caches file sizes the same way).
   */
  private knownSize: number;
  private atClose: StoreStat | null = null;
  /** The file's first bytes, read with the open (keepHead), or null. */
  private head: Buffer | null = null;
  /** What the first open's CREATE reply said of the file: a reopen after a reconnect must find the same (read-only). */
  private readonly opened: CreateResponse;
  /** Set once a reopen found a different file: every later operation throws it. */
  private replaced: IoError | null = null;

  constructor(
    private readonly client: SmbClient,
    private handle: SmbHandle,
    private readonly reopenRequest: CreateRequest,
    readonly name: string,
    readonly writable: boolean,
    /** Throws to stop a change from going out (the store's guard); called right before each attempt. */
    private readonly beforeChange: () => void,
  ) {
    this.knownSize = handle.info.endOfFile;
    this.opened = handle.info;
  }

  /**
   * The handle, reopened (same access, never creating) when the connection was re-established. A read-only file must
   * come back with the size, mtime, ChangeTime (to 100 ns) and on-disk id (QFid's DiskFileId) it was first opened with,
   * each compared when the server sends it: reads, the kept head and its identity (openedStat) must all be of one file,
   * so one replaced or changed meanwhile fails every later call instead. ChangeTime is any metadata change on Windows;
   * Samba sends the mtime to the nanosecond, so only the on-disk identity tells a replacement whose times were copied
   * exactly (`touch -r`, rsync -t on a file system with nanoseconds) from the file it replaced. CreationTime is not
   * compared: Samba computes it, for a file it did not create, as the oldest of atime, mtime and ctime, so our own
   * reads (relatime) move it.
   */
  private async live(): Promise<SmbHandle> {
    if (this.replaced) throw this.replaced;
    if (this.handle.generation === this.client.generation) return this.handle;
    this.reopening ??= (async () => {
      try {
        await this.client.connection();
        const h = await this.client.create(this.handle.share, this.reopenRequest, this.name);
        const was = this.opened;
        const changed = h.info.endOfFile !== was.endOfFile || h.info.mtimeMs !== was.mtimeMs || differs(h.info.changeTime, was.changeTime) || differs(h.info.diskId, was.diskId);
        if (!this.writable && changed) {
          await this.client.close(h).catch(() => undefined);
          this.replaced = new IoError('changed on the server while the connection was re-established (its size, modification time, change time or file id differ); not read further', this.name);
          throw this.replaced;
        }
        this.handle = h;
        return h;
      } finally {
        this.reopening = null;
      }
    })();
    return this.reopening;
  }

  private io<T>(op: (h: SmbHandle) => Promise<T>): Promise<T> {
    if (this.closing) return Promise.reject(new IoError('file already closed', this.name));
    return retrying(this.client, async () => op(await this.live()), this.name);
  }

  private send(position: number, bytes: Uint8Array): Promise<void> {
    return this.io((h) => {
      this.beforeChange();
      return this.client.write(h, position, bytes, this.name);
    });
  }

  /**
   * Keeps the file's first bytes, read with the open (OpenHints.readAhead), to answer reads within them: a read-only
   * handle's file does not change while it is open (the rule knownSize lives by).
   */
  keepHead(head: Buffer): void {
    if (!this.writable) this.head = head;
  }

  async read(position: number, length: number, into?: Buffer): Promise<Buffer> {
    const buf = into ?? Buffer.allocUnsafe(length);
    if (length === 0) return buf.subarray(0, 0);
    const head = this.head;
    // Within the head, or past it when the head is the whole file (a read there ends where the file does).
    if (head && (position + length <= head.length || head.length >= this.knownSize)) {
      const n = Math.max(0, Math.min(length, head.length - position));
      if (n > 0) head.copy(buf, 0, position, position + n);
      return n === buf.length ? buf : buf.subarray(0, n);
    }
    await this.behind.before(position, length);
    const n = await this.io((h) => this.client.read(h, position, length, buf, 0, this.name));
    return n === buf.length ? buf : buf.subarray(0, n);
  }

  /** Returns once the bytes are copied and their WRITE is on its way (write-behind.ts: what still holds). */
  async write(position: number, data: Uint8Array): Promise<void> {
    if (this.closing) throw new IoError('file already closed', this.name);
    if (data.byteLength === 0) return this.behind.check();
    await this.behind.write(position, data, (bytes) => this.send(position, bytes));
    // A write that fails is thrown by every later call (size included), so the file never looks this long after one.
    this.knownSize = Math.max(this.knownSize, position + data.byteLength);
  }

  /** Every write that returned, completed; throws the first that failed. */
  private async drained(): Promise<void> {
    await this.behind.settle();
    this.behind.check();
  }

  /**
   * The size this handle knows (see knownSize), writes still in flight included: no round trip, and no wait for
   * them (a write that fails is thrown by this or a later call, flush and close included).
   */
  async size(): Promise<number> {
    if (this.closing) throw new IoError('file already closed', this.name);
    this.behind.check();
    return this.knownSize;
  }

  async truncate(size: number): Promise<void> {
    const setSize = (h: SmbHandle) => {
      this.beforeChange();
      return this.client.setInfo(h, FileInfoClass.END_OF_FILE, endOfFileInfo(size), this.name);
    };
    if (size >= this.knownSize) {
      if (this.closing) throw new IoError('file already closed', this.name);
      // Already that size (writes in flight included, which fail loudly if they fail): nothing to send.
      if (size === this.knownSize) return this.behind.check();
      // Growing the file runs behind like a write (write-behind.ts, extend): it cuts nothing in flight.
      const from = this.knownSize;
      this.knownSize = size;
      await this.behind.extend(from, () => this.io(setSize));
      return;
    }
    await this.drained();
    await this.io(setSize);
    this.knownSize = size;
  }

  /**
   * Makes every write so far durable. A flush that finds the connection re-established goes out on the reopened
   * handle; writes the server acknowledged before a restart of its host (not of smbd alone, which keeps the host's
   * page cache) may be lost without this flush noticing: a known limit (docs/architecture.md, SMB). A flush sent
   * and then lost with its connection is not sent again: its answer may have carried the server's fsync error, which
   * Linux reports once, so a second FLUSH (on a new open) would answer success over data that is not stored. So that
   * a connection that died unnoticed (the server restarted while this process was busy) takes none, an ECHO's round
   * trip comes first: a connection lost there is reconnected, as for a stale handle.
   */
  async flush(): Promise<void> {
    await this.drained();
    await this.io(async (h) => {
      await this.client.echo(h, this.name);
      this.beforeChange();
      try {
        return await this.client.flush(h, this.name);
      } catch (err) {
        // Only a stale handle's FLUSH is sent again, not every one the server never ran (NotRunError): a server
        // that forgot our session or share closed the file, and on a share over NFS, Ceph or CIFS that close may have
        // taken the write-back error no later FLUSH would report. A stale handle is the same case, accepted: a
        // known limit (docs/architecture.md, SMB).
        if (err instanceof ConnectionLostError && !(err instanceof StaleHandleError)) {
          throw new IoError(`${err.message} during a flush; whether the file's data is stored is unknown`, this.name);
        }
        throw err;
      }
    });
  }

  async close(): Promise<void> {
    // A read after close must fail as any other call does, not answer from the kept head.
    this.head = null;
    this.closing ??= (async () => {
      try {
        await this.behind.settle();
      } finally {
        const attrs = await this.client.close(this.handle);
        if (attrs) this.atClose = { size: attrs.endOfFile, mtimeMs: attrs.mtimeMs, isDirectory: (attrs.attributes & FILE_ATTRIBUTE_DIRECTORY) !== 0 };
      }
    })();
    await this.closing;
    this.behind.check();
  }

  /** What the server's CLOSE reply said of the file (its size and mtime after every write): null before then. */
  closedStat(): StoreStat | null {
    return this.atClose;
  }

  /**
   * A read-only handle's size and mtime from its first CREATE reply (see knownSize for why they still hold; a reopen
   * after a reconnect finds the same or fails, see live): null otherwise.
   */
  openedStat(): StoreStat | null {
    if (this.writable || this.closing) return null;
    const info = this.opened;
    return { size: info.endOfFile, mtimeMs: info.mtimeMs, isDirectory: (info.attributes & FILE_ATTRIBUTE_DIRECTORY) !== 0 };
  }
}

/** One share on one server, seen as a ByteStore. */
export class SmbStore implements ByteStore {
  readonly kind = 'smb';
  readonly paths = smbPaths;

  /** `urlBase` is `smb://[DOMAIN;]USER@HOST[:PORT]/SHARE`, used to display paths. */
  constructor(
    readonly client: SmbClient,
    readonly share: string,
    private readonly urlBase: string,
    /** Called right before every request that changes a file (see `guarded`); throws to stop it. */
    private readonly beforeChange: () => void = () => {},
  ) {}

  /** This share with `check` called right before every request that changes a file, resends included. */
  guarded(check: () => void): SmbStore {
    const outer = this.beforeChange;
    return new SmbStore(this.client, this.share, this.urlBase, () => {
      outer();
      check();
    });
  }

  display(path: string): string {
    // '%' is escaped so a displayed location can be given back to vhdsync as it is.
    const rel = smbName(path).replace(/\\/g, '/').replace(/%/g, '%25');
    return rel ? `${this.urlBase}/${rel}` : this.urlBase;
  }

  /** The UNC path `\\HOST\SHARE\DIR\FILE` (no user or port: UNC has neither), as Hyper-V's parent locators hold it. */
  windowsPath(path: string): string {
    const rel = smbName(path);
    return `\\\\${this.client.opts.host}\\${this.share}${rel ? '\\' + rel : ''}`;
  }

  private req(path: string, access: number, disposition: number, options: number, share: number = ShareAccess.ALL): CreateRequest {
    return { name: smbName(path), access, shareAccess: share, disposition, options };
  }

  async open(path: string, mode: OpenMode, hints: OpenHints = {}): Promise<RandomAccessFile> {
    const o = mode === 'read' ? OPEN.read : OPEN.readwrite;
    // A read-only file's reopen must find the same file: its on-disk identity is asked for with it.
    const req = { ...this.req(path, o.access, Disposition.OPEN, CreateOptions.NON_DIRECTORY_FILE, o.share), queryDiskId: mode === 'read' };
    const name = this.display(path);
    const ahead = mode === 'read' ? (hints.readAhead ?? 0) : 0;
    let opened: { handle: SmbHandle; head: Buffer | null };
    try {
      opened = await retrying(
        this.client,
        async () => (ahead > 0 ? this.client.createAndRead(this.share, req, ahead, name) : { handle: await this.client.create(this.share, req, name), head: null }),
        name,
      );
    } catch (err) {
      // A file another client is deleting can no longer be opened: for a reader it is gone.
      if (isDeletePending(err)) throw new NotFoundError('no such file (being deleted)', name);
      throw err;
    }
    const f = new SmbFile(this.client, opened.handle, req, name, mode !== 'read', this.beforeChange);
    if (opened.head) f.keepHead(opened.head);
    return f;
  }

  async createExclusive(path: string): Promise<RandomAccessFile> {
    const name = this.display(path);
    const create = this.req(path, OPEN.readwrite.access, Disposition.CREATE, CreateOptions.NON_DIRECTORY_FILE);
    let h: SmbHandle;
    try {
      h = await this.once(
        name,
        () => this.client.create(this.share, create, name),
        // Whether the server created the file before the drop is unknown: say so instead of guessing.
        (err) => new IoError(`${err.message} while creating the file; it may or may not exist now`, name),
      );
    } catch (err) {
      // The name stays taken until the last handle of the file being deleted closes.
      if (isDeletePending(err)) throw new AlreadyExistsError('already exists (being deleted)', name);
      throw err;
    }
    // After a reconnect the file exists: reopen it rather than create it again.
    return new SmbFile(this.client, h, { ...create, disposition: Disposition.OPEN }, name, true, this.beforeChange);
  }

  async stat(path: string): Promise<StoreStat | null> {
    const name = this.display(path);
    const req = this.req(path, Access.READ_ATTRIBUTES | Access.SYNCHRONIZE, Disposition.OPEN, 0);
    // A missing share is an error, never a missing file.
    await retrying(this.client, () => this.client.ensureShare(this.share), name);
    try {
      // CREATE + CLOSE in one round trip: the CREATE's answer carries size, mtime and attributes.
      const { info } = await retrying(this.client, () => this.client.openChain(this.share, req, [], name), name);
      return { size: info.endOfFile, mtimeMs: info.mtimeMs, isDirectory: (info.attributes & FILE_ATTRIBUTE_DIRECTORY) !== 0 };
    } catch (err) {
      if (err instanceof NotFoundError) return null;
      throw err;
    }
  }

  /**
   * Runs `op`, a change that must not reach the server twice: it is sent again on a new connection only when the
   * server never ran it (NotRunError); a connection lost after it was sent leaves its outcome unknown, which `unknown`
   * words for the caller. Each attempt joins the share (after a reconnect: a round trip) before the run lock's check,
   * so the check is the last thing before the change.
   */
  private once<T>(name: string, op: () => Promise<T>, unknown: (err: ConnectionLostError) => Error): Promise<T> {
    return retrying(
      this.client,
      async () => {
        try {
          await this.client.ensureShare(this.share);
        } catch (err) {
          throw notRun(err);
        }
        this.beforeChange();
        try {
          return await op();
        } catch (err) {
          throw err instanceof ConnectionLostError && !(err instanceof NotRunError) ? unknown(err) : err;
        }
      },
      name,
    );
  }

  /**
   * Opens `path` (with `access`), applies `ops` and closes, as one round trip. A chain the connection was lost
   * under may have been applied: it is not retried, and the error says so.
   */
  private async change(path: string, what: string, access: number, options: number, ops: ChainOp[]): Promise<ChainResult> {
    const name = this.display(path);
    const req = this.req(path, access | Access.READ_ATTRIBUTES | Access.SYNCHRONIZE, Disposition.OPEN, options);
    return this.once(
      name,
      () => this.client.openChain(this.share, req, ops, name),
      (err) => new IoError(`${err.message} during ${what}; it may or may not have happened`, name),
    );
  }

  /** SET_INFO on the file the chain opened. */
  private static setInfo(infoClass: number, info: Buffer): ChainOp {
    return { command: Command.SET_INFO, body: [serializeSetInfoRequest(RELATED_FILE_ID, infoClass, info)] };
  }

  async rename(from: string, to: string, opts: { replace?: boolean } = {}): Promise<void> {
    // ReplaceIfExists = 0: the server refuses an existing destination (OBJECT_NAME_COLLISION), atomically.
    const rename = SmbStore.setInfo(FileInfoClass.RENAME, renameInfo(smbName(to), opts.replace !== false));
    try {
      await this.change(from, 'rename', Access.DELETE, 0, [rename]);
    } catch (err) {
      throw err instanceof AlreadyExistsError ? err.withSubject(this.display(to)) : err;
    }
  }

  /**
   * FLUSH by name: CREATE + FLUSH + CLOSE in one round trip; the FLUSH's answer, and the CLOSE's (a server may report
   * a write-back error there), checked. A rename never rides in this chain: Samba runs a related chain's next request
   * after a failed one (only a failed CREATE stops it), so it would publish a file whose data is not durable.
   */
  async flushByName(path: string): Promise<void> {
    const flush: ChainOp = { command: Command.FLUSH, body: [serializeFlushRequest(RELATED_FILE_ID)] };
    // FLUSH needs write access to the file ([MS-SMB2] 3.3.5.11).
    const { closed } = await this.change(path, 'flush', Access.WRITE_DATA, CreateOptions.NON_DIRECTORY_FILE, [flush]);
    if (!closed) throw new IoError('the server failed to close the file after flushing it; its content may not be stored', this.display(path));
  }

  async unlink(path: string): Promise<void> {
    // NON_DIRECTORY_FILE: the server refuses a directory (FILE_IS_A_DIRECTORY), so no stat is needed first.
    await this.change(path, 'delete', Access.DELETE, CreateOptions.NON_DIRECTORY_FILE, [SmbStore.setInfo(FileInfoClass.DISPOSITION, dispositionInfo(true))]);
  }

  async list(dir: string): Promise<string[]> {
    return (await this.listMatching(dir, '*')).map((e) => e.name);
  }

  /**
   * Entries of `dir` whose names match an SMB wildcard pattern (`*`, `?`), evaluated by the server. One round trip
   * (CREATE + two QUERY_DIRECTORY + CLOSE) when the second query finds the listing complete; a directory too large
   * for that is listed again on a handle of its own.
   */
  async listMatching(dir: string, pattern: string): Promise<DirectoryEntry[]> {
    const name = this.display(dir);
    const req = this.req(dir, Access.READ_DATA | Access.READ_ATTRIBUTES | Access.SYNCHRONIZE, Disposition.OPEN, CreateOptions.DIRECTORY_FILE);
    const { transact } = await retrying(this.client, () => this.client.requestLimits(), name);
    const query = (flags: number): ChainOp => ({
      command: Command.QUERY_DIRECTORY,
      body: [serializeQueryDirectoryRequest(RELATED_FILE_ID, pattern, transact, flags)],
      ok: [Status.SUCCESS, Status.NO_MORE_FILES, Status.NO_SUCH_FILE],
    });
    const entries = await retrying(
      this.client,
      async () => {
        const { replies } = await this.client.openChain(this.share, req, [query(QueryDirectoryFlags.RESTART_SCANS), query(0)], name);
        // A query that finds nothing more ends the listing; two full answers leave it unfinished.
        if (replies[0].header.status !== Status.SUCCESS) return [];
        if (replies[1].header.status !== Status.SUCCESS) return parseQueryDirectoryResponse(replies[0].msg);
        const h = await this.client.create(this.share, req, name);
        try {
          return await this.client.queryDirectory(h, pattern, name);
        } finally {
          await this.client.close(h).catch(() => undefined);
        }
      },
      name,
    );
    return entries.filter((e) => e.name !== '.' && e.name !== '..');
  }

  async mkdirp(dir: string): Promise<void> {
    const parts = smbName(dir).split('\\').filter(Boolean);
    for (let i = 1; i <= parts.length; i++) {
      const p = '/' + parts.slice(0, i).join('/');
      const name = this.display(p);
      const req = this.req(p, Access.READ_ATTRIBUTES | Access.SYNCHRONIZE, Disposition.OPEN_IF, CreateOptions.DIRECTORY_FILE);
      try {
        await retrying(
          this.client,
          () => {
            this.beforeChange(); // OPEN_IF creates the folder: a change, checked before each attempt
            return this.client.openChain(this.share, req, [], name);
          },
          name,
        );
      } catch (err) {
        if (err instanceof SmbStatusError && err.status === Status.NOT_A_DIRECTORY) throw new AlreadyExistsError('exists and is not a directory', name);
        throw err;
      }
    }
  }

  /** CREATE + READ + CLOSE in one round trip; a file larger than one READ is read on through a handle of its own. */
  async readSmall(path: string, maxBytes: number): Promise<SmallFile | null> {
    const name = this.display(path);
    const req = this.req(path, OPEN.read.access, Disposition.OPEN, CreateOptions.NON_DIRECTORY_FILE, OPEN.read.share);
    const { read: limit } = await retrying(this.client, () => this.client.requestLimits(), name);
    const first = Math.max(1, Math.min(maxBytes, limit));
    const readOp: ChainOp = { command: Command.READ, body: [serializeReadRequest(RELATED_FILE_ID, 0, first)], payload: first, ok: [Status.SUCCESS, Status.END_OF_FILE] };
    let result: ChainResult;
    try {
      // A missing share is an error, never a missing file.
      await retrying(this.client, () => this.client.ensureShare(this.share), name);
      result = await retrying(this.client, () => this.client.openChain(this.share, req, [readOp], name), name);
    } catch (err) {
      if (err instanceof NotFoundError || (err instanceof SmbStatusError && err.status === Status.FILE_IS_A_DIRECTORY)) return null;
      throw err;
    }
    const { info, replies } = result;
    const got = replies[0].header.status === Status.END_OF_FILE ? Buffer.alloc(0) : Buffer.from(parseReadResponse(replies[0].msg, first));
    const want = Math.min(info.endOfFile, maxBytes);
    if (got.length >= want) return { bytes: got.subarray(0, want), size: info.endOfFile, mtimeMs: info.mtimeMs };
    const f = await this.open(path, 'read');
    try {
      const rest = await f.read(got.length, want - got.length);
      return { bytes: Buffer.concat([got, rest]), size: info.endOfFile, mtimeMs: info.mtimeMs };
    } finally {
      await f.close();
    }
  }

  /**
   * CREATE + WRITEs (+ FLUSH) + CLOSE in one round trip when the bytes fit a few WRITEs (ONE_CHAIN_BYTES,
   * ONE_CHAIN_WRITES) and the chain the credits the server granted; else through a handle. Not retried once sent.
   */
  async writeNew(path: string, bytes: Uint8Array, opts: { flush?: boolean } = {}): Promise<void> {
    const name = this.display(path);
    const { write: limit } = await retrying(this.client, () => this.client.requestLimits(), name);
    const pieces: number[] = [];
    for (let at = 0; at < bytes.byteLength; at += limit) pieces.push(Math.min(limit, bytes.byteLength - at));
    if (opts.flush) pieces.push(0);
    const oneChain = bytes.byteLength <= Math.min(ONE_CHAIN_BYTES, limit * ONE_CHAIN_WRITES) && (await retrying(this.client, () => this.client.chainFits(pieces), name));
    if (!oneChain) {
      const f = await this.createExclusive(path);
      try {
        await f.write(0, bytes);
        if (opts.flush) await f.flush();
      } finally {
        await f.close();
      }
      return;
    }
    const data = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const ops: ChainOp[] = [];
    for (let at = 0; at < data.length; at += limit) {
      const piece = data.subarray(at, Math.min(data.length, at + limit));
      ops.push({ command: Command.WRITE, body: [serializeWriteRequest(RELATED_FILE_ID, at, piece.length), piece], payload: piece.length });
    }
    const writes = ops.length;
    if (opts.flush) ops.push({ command: Command.FLUSH, body: [serializeFlushRequest(RELATED_FILE_ID)] });
    const create = this.req(path, OPEN.readwrite.access, Disposition.CREATE, CreateOptions.NON_DIRECTORY_FILE);
    let replies: Reply[];
    let closed: boolean;
    try {
      ({ replies, closed } = await this.once(
        name,
        () => this.client.openChain(this.share, create, ops, name),
        (err) => new IoError(`${err.message} while creating the file; it may or may not exist now`, name),
      ));
    } catch (err) {
      if (isDeletePending(err)) throw new AlreadyExistsError('already exists (being deleted)', name);
      throw err;
    }
    for (let i = 0; i < writes; i++) {
      const want = Math.min(limit, data.length - i * limit);
      const n = parseWriteResponse(replies[i].msg);
      if (n !== want) throw new IoError(`short write (${n} of ${want} bytes) at offset ${i * limit}`, name);
    }
    // Servers on NFS, Ceph or quota'd storage may report a failed write-back only at close: the file is not whole.
    if (!closed) throw new IoError('the server failed to close the file after writing it; its content may not be stored', name);
  }

  async syncDir(): Promise<void> {
    // SMB servers apply renames and creates to their file system before replying; there is nothing to flush.
  }
}

/**
 * Whether two values a server sent of a file (FILETIMEs, on-disk identities) differ; 0 or null (or none, from a
 * stand-in) means it did not say.
 */
function differs(a: bigint | string | null | undefined, b: bigint | string | null | undefined): boolean {
  return !!a && !!b && a !== b;
}
