/**
 * An SMB share as a ByteStore. Paths are share-relative POSIX-style ("/dir/disk.vhdx"); the share root is
 * "/". Positioned I/O survives a dropped connection: the file is reopened on a new connection and the
 * request retried (positioned reads and writes are idempotent). Operations that are not idempotent
 * (create, rename, delete) are not replayed once sent; they fail with a clear IoError instead.
 */
import * as posix from 'node:path/posix';
import { AlreadyExistsError, IoError, NotFoundError, VhdsyncError } from '../../util/errors.js';
import type { ByteStore, OpenMode, RandomAccessFile, StorePaths, StoreStat } from '../store.js';
import { OPEN, type SmbClient, type SmbHandle } from './client.js';
import { Access, CreateOptions, Disposition, FILE_ATTRIBUTE_DIRECTORY, ShareAccess, type CreateRequest } from './create.js';
import { dispositionInfo, endOfFileInfo, FileInfoClass, parseStandardInfo, renameInfo } from './info.js';
import { ConnectionLostError, SmbStatusError, Status } from './status.js';
import type { DirectoryEntry } from './query-directory.js';
import { WriteBehind } from './write-behind.js';

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

  constructor(
    private readonly client: SmbClient,
    private handle: SmbHandle,
    private readonly reopenRequest: CreateRequest,
    readonly name: string,
    readonly writable: boolean,
  ) {}

  /** The handle, reopened (same access, never creating) when the connection was re-established. */
  private async live(): Promise<SmbHandle> {
    if (this.handle.generation === this.client.generation) return this.handle;
    this.reopening ??= (async () => {
      try {
        await this.client.connection();
        this.handle = await this.client.create(this.handle.share, this.reopenRequest, this.name);
        return this.handle;
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
    return this.io((h) => this.client.write(h, position, bytes, this.name));
  }

  async read(position: number, length: number, into?: Buffer): Promise<Buffer> {
    const buf = into ?? Buffer.allocUnsafe(length);
    if (length === 0) return buf.subarray(0, 0);
    await this.behind.before(position, length);
    const n = await this.io((h) => this.client.read(h, position, length, buf, 0, this.name));
    return n === buf.length ? buf : buf.subarray(0, n);
  }

  /** Returns once the bytes are copied and their WRITE is on its way (write-behind.ts: what still holds). */
  async write(position: number, data: Uint8Array): Promise<void> {
    if (this.closing) throw new IoError('file already closed', this.name);
    if (data.byteLength === 0) return this.behind.check();
    await this.behind.write(position, data, (bytes) => this.send(position, bytes));
  }

  /** Every write that returned, completed; throws the first that failed. */
  private async drained(): Promise<void> {
    await this.behind.settle();
    this.behind.check();
  }

  async size(): Promise<number> {
    await this.drained();
    return this.io(async (h) => parseStandardInfo(await this.client.queryInfo(h, FileInfoClass.STANDARD, this.name)).endOfFile);
  }

  async truncate(size: number): Promise<void> {
    await this.drained();
    await this.io((h) => this.client.setInfo(h, FileInfoClass.END_OF_FILE, endOfFileInfo(size), this.name));
  }

  /**
   * Makes every write so far durable. A flush that reconnects goes out on the reopened handle; writes the server
   * acknowledged before a restart of its host (not of smbd alone, which keeps the host's page cache) may be lost
   * without this flush noticing: a known limit (docs/architecture.md, SMB).
   */
  async flush(): Promise<void> {
    await this.drained();
    await this.io((h) => this.client.flush(h, this.name));
  }

  async close(): Promise<void> {
    this.closing ??= (async () => {
      try {
        await this.behind.settle();
      } finally {
        await this.client.close(this.handle);
      }
    })();
    await this.closing;
    this.behind.check();
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
  ) {}

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

  async open(path: string, mode: OpenMode): Promise<RandomAccessFile> {
    const o = mode === 'read' ? OPEN.read : OPEN.readwrite;
    const req = this.req(path, o.access, Disposition.OPEN, CreateOptions.NON_DIRECTORY_FILE, o.share);
    const name = this.display(path);
    let h: SmbHandle;
    try {
      h = await retrying(this.client, () => this.client.create(this.share, req, name), name);
    } catch (err) {
      // A file another client is deleting can no longer be opened: for a reader it is gone.
      if (isDeletePending(err)) throw new NotFoundError('no such file (being deleted)', name);
      throw err;
    }
    return new SmbFile(this.client, h, req, name, mode !== 'read');
  }

  async createExclusive(path: string): Promise<RandomAccessFile> {
    const name = this.display(path);
    const create = this.req(path, OPEN.readwrite.access, Disposition.CREATE, CreateOptions.NON_DIRECTORY_FILE);
    let h: SmbHandle;
    try {
      h = await this.client.create(this.share, create, name);
    } catch (err) {
      if (err instanceof ConnectionLostError) {
        // Whether the server created the file before the drop is unknown: say so instead of guessing.
        throw new IoError(`${err.message} while creating the file; it may or may not exist now`, name);
      }
      // The name stays taken until the last handle of the file being deleted closes.
      if (isDeletePending(err)) throw new AlreadyExistsError('already exists (being deleted)', name);
      throw err;
    }
    // After a reconnect the file exists: reopen it rather than create it again.
    return new SmbFile(this.client, h, { ...create, disposition: Disposition.OPEN }, name, true);
  }

  async stat(path: string): Promise<StoreStat | null> {
    const name = this.display(path);
    const req = this.req(path, Access.READ_ATTRIBUTES | Access.SYNCHRONIZE, Disposition.OPEN, 0);
    await retrying(this.client, () => this.client.ensureShare(this.share), name);
    try {
      const h = await retrying(this.client, () => this.client.create(this.share, req, name), name);
      await this.client.close(h);
      return { size: h.info.endOfFile, mtimeMs: h.info.mtimeMs, isDirectory: (h.info.attributes & FILE_ATTRIBUTE_DIRECTORY) !== 0 };
    } catch (err) {
      if (err instanceof NotFoundError) return null;
      throw err;
    }
  }

  /** Opens `path` for a metadata change, applies it, closes. Not retried once the change was sent. */
  private async change(path: string, what: string, infoClass: number, info: Buffer): Promise<void> {
    const name = this.display(path);
    const req = this.req(path, Access.DELETE | Access.READ_ATTRIBUTES | Access.SYNCHRONIZE, Disposition.OPEN, 0);
    const h = await retrying(this.client, () => this.client.create(this.share, req, name), name);
    try {
      await this.client.setInfo(h, infoClass, info, name);
    } catch (err) {
      if (err instanceof ConnectionLostError) throw new IoError(`${err.message} during ${what}; it may or may not have happened`, name);
      throw err;
    } finally {
      await this.client.close(h).catch(() => undefined);
    }
  }

  async rename(from: string, to: string, opts: { replace?: boolean } = {}): Promise<void> {
    // ReplaceIfExists = 0: the server refuses an existing destination (OBJECT_NAME_COLLISION), atomically.
    try {
      await this.change(from, 'rename', FileInfoClass.RENAME, renameInfo(smbName(to), opts.replace !== false));
    } catch (err) {
      throw err instanceof AlreadyExistsError ? err.withSubject(this.display(to)) : err;
    }
  }

  async unlink(path: string): Promise<void> {
    const st = await this.stat(path);
    if (st?.isDirectory) throw new IoError('is a directory', this.display(path));
    await this.change(path, 'delete', FileInfoClass.DISPOSITION, dispositionInfo(true));
  }

  async list(dir: string): Promise<string[]> {
    return (await this.listMatching(dir, '*')).map((e) => e.name);
  }

  /** Entries of `dir` whose names match an SMB wildcard pattern (`*`, `?`), evaluated by the server. */
  async listMatching(dir: string, pattern: string): Promise<DirectoryEntry[]> {
    const name = this.display(dir);
    const req = this.req(dir, Access.READ_DATA | Access.READ_ATTRIBUTES | Access.SYNCHRONIZE, Disposition.OPEN, CreateOptions.DIRECTORY_FILE);
    return retrying(
      this.client,
      async () => {
        const h = await this.client.create(this.share, req, name);
        try {
          const entries = await this.client.queryDirectory(h, pattern, name);
          return entries.filter((e) => e.name !== '.' && e.name !== '..');
        } finally {
          await this.client.close(h).catch(() => undefined);
        }
      },
      name,
    );
  }

  async mkdirp(dir: string): Promise<void> {
    const parts = smbName(dir).split('\\').filter(Boolean);
    for (let i = 1; i <= parts.length; i++) {
      const p = '/' + parts.slice(0, i).join('/');
      const name = this.display(p);
      const req = this.req(p, Access.READ_ATTRIBUTES | Access.SYNCHRONIZE, Disposition.OPEN_IF, CreateOptions.DIRECTORY_FILE);
      try {
        const h = await retrying(this.client, () => this.client.create(this.share, req, name), name);
        await this.client.close(h);
      } catch (err) {
        if (err instanceof SmbStatusError && err.status === Status.NOT_A_DIRECTORY) throw new AlreadyExistsError('exists and is not a directory', name);
        throw err;
      }
    }
  }

  async syncDir(): Promise<void> {
    // SMB servers apply renames and creates to their file system before replying; there is nothing to flush.
  }
}
