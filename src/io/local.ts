import fs, { promises as fsp, constants as fsc } from 'node:fs';
import * as path from 'node:path';
import type { ByteStore, OpenHints, OpenMode, RandomAccessFile, StoreStat, StorePaths } from './store.js';
import { AlreadyExistsError, UnsupportedError, fromSystemError } from '../util/errors.js';
import { PAGE, allocAligned, directSource } from '../util/aligned.js';
import { EarlyFlusher } from './early-flush.js';

/** Writes from other memory are copied through bounce buffers of this size (plus a page for the phase). */
const BOUNCE = 1 << 20;
/** Idle bounce buffers kept for reuse (one per write in flight is taken; more are made when needed). */
const KEEP_BOUNCE = 4;
const idleBounce: Buffer[] = [];
/**
 * Writes up to this size (headers, lock records, state files) take a bounce buffer of this size (with its page for the
 * phase, one 64 KiB wasm page): touching a fresh 1 MiB one costs 3 ms of page faults on some virtual machines, paid
 * by every command's first small write.
 */
const SMALL_BOUNCE = (64 << 10) - PAGE;
/** OpenHints.writeBehind starts a write-back after this many bytes: a 43 MB diff then waits ~1 ms at its flush, not ~55. */
const WRITE_BEHIND_BYTES = 8 << 20;
/**
 * OpenHints.syncIo makes reads and writes up to this size on the calling thread; larger ones go to the pool, where a
 * slow device's wait does not hold up timers (a lock's renewals) and the hand-off is small next to the data.
 */
const SYNC_IO_MAX = 256 << 10;
const idleSmallBounce: Buffer[] = [];

/**
 * The pwrites that write `data` at `position` under decision 0009: `data` itself when `directSource` allows it,
 * else pieces copied into a pooled, aligned bounce buffer in the position's phase (valid until the next piece).
 */
function* writablePieces(position: number, data: Uint8Array): Generator<[number, Uint8Array]> {
  const direct = directSource(data, position);
  if (direct) {
    yield [position, direct];
    return;
  }
  const size = data.byteLength <= SMALL_BOUNCE ? SMALL_BOUNCE : BOUNCE;
  const idle = size === SMALL_BOUNCE ? idleSmallBounce : idleBounce;
  const bounce = idle.pop() ?? allocAligned(size + PAGE);
  try {
    for (let done = 0; done < data.byteLength; ) {
      const n = Math.min(size, data.byteLength - done);
      const phase = (position + done) % PAGE;
      bounce.set(data.subarray(done, done + n), phase);
      yield [position + done, bounce.subarray(phase, phase + n)];
      done += n;
    }
  } finally {
    if (idle.length < KEEP_BOUNCE) idle.push(bounce);
  }
}

/**
 * A local file opened with a FileHandle; every call is positioned, so several may be in flight. With `syncIo`
 * (OpenHints) reads and writes of up to SYNC_IO_MAX are made on the calling thread and the promise they return is
 * already settled; larger ones go to the pool.
 */
class LocalFile implements RandomAccessFile {
  /** OpenHints.writeBehind: fdatasyncs started in the background as the file is written (io/early-flush.ts). */
  private readonly behind: EarlyFlusher | null;

  constructor(
    private readonly fh: fsp.FileHandle,
    readonly name: string,
    readonly writable: boolean,
    private readonly syncIo = false,
    writeBehind = false,
  ) {
    this.behind = writeBehind ? new EarlyFlusher({ flush: () => this.fh.datasync().catch((err: unknown) => Promise.reject(fromSystemError(err, this.name))) }, WRITE_BEHIND_BYTES) : null;
  }

  async read(position: number, length: number, into?: Buffer): Promise<Buffer> {
    const buf = into ?? Buffer.allocUnsafe(length);
    let done = 0;
    try {
      while (done < length) {
        const n = this.syncIo && length <= SYNC_IO_MAX
          ? fs.readSync(this.fh.fd, buf, done, length - done, position + done)
          : (await this.fh.read(buf, done, length - done, position + done)).bytesRead;
        if (n === 0) break;
        done += n;
      }
    } catch (err) {
      throw fromSystemError(err, this.name);
    }
    return done === buf.length ? buf : buf.subarray(0, done);
  }

  /**
   * Writes from page-aligned, touched memory only (decision 0009): a caller's buffer that is not (or not in the
   * file position's page phase) is copied through a bounce buffer first, so a kill mid-write cuts the file only at a
   * 4 KiB boundary and never tears a sector.
   */
  async write(position: number, data: Uint8Array): Promise<void> {
    if (this.syncIo && data.byteLength <= SYNC_IO_MAX) return this.writeSync(position, data);
    for (const [at, piece] of writablePieces(position, data)) await this.writeAll(at, piece);
    this.behind?.wrote(data.byteLength);
  }

  /** `write` on the calling thread, with the same rule: only page-aligned, touched memory reaches pwrite. */
  writeSync(position: number, data: Uint8Array): void {
    for (const [at, piece] of writablePieces(position, data)) this.writeAllSync(at, piece);
    this.behind?.wrote(data.byteLength);
  }

  private async writeAll(position: number, data: Uint8Array): Promise<void> {
    let done = 0;
    try {
      while (done < data.byteLength) {
        const { bytesWritten } = await this.fh.write(data, done, data.byteLength - done, position + done);
        done += bytesWritten;
      }
    } catch (err) {
      throw fromSystemError(err, this.name);
    }
  }

  private writeAllSync(position: number, data: Uint8Array): void {
    let done = 0;
    try {
      while (done < data.byteLength) done += fs.writeSync(this.fh.fd, data, done, data.byteLength - done, position + done);
    } catch (err) {
      throw fromSystemError(err, this.name);
    }
  }

  async size(): Promise<number> {
    try {
      return (await this.fh.stat()).size;
    } catch (err) {
      throw fromSystemError(err, this.name);
    }
  }

  async truncate(size: number): Promise<void> {
    try {
      await this.fh.truncate(size);
    } catch (err) {
      throw fromSystemError(err, this.name);
    }
  }

  async flush(): Promise<void> {
    // A failed write-back stays thrown: an fsync reports a write-back error once per descriptor, so this one would not.
    await this.behind?.done();
    try {
      await this.fh.sync();
    } catch (err) {
      throw fromSystemError(err, this.name);
    }
  }

  async close(): Promise<void> {
    try {
      await this.behind?.done();
    } finally {
      await this.fh.close();
    }
  }
}

/** Path arithmetic of local files (POSIX); also what in-memory test stores use. */
export const posixPaths: StorePaths = {
  join: (...p) => path.join(...p),
  dirname: (p) => path.dirname(p),
  basename: (p) => path.basename(p),
  resolve: (base, rel) => path.resolve(base, rel),
  relative: (from, to) => path.relative(from, to),
  isAbsolute: (p) => path.isAbsolute(p),
};

/** The local file system. */
export class LocalStore implements ByteStore {
  readonly kind = 'local';
  readonly paths = posixPaths;

  async open(p: string, mode: OpenMode, hints: OpenHints = {}): Promise<RandomAccessFile> {
    try {
      const st = await fsp.stat(p);
      if (st.isDirectory()) throw Object.assign(new Error('is a directory'), { code: 'EISDIR' });
      const fh = await fsp.open(p, mode === 'read' ? 'r' : 'r+');
      return new LocalFile(fh, p, mode !== 'read', hints.syncIo, mode !== 'read' && hints.writeBehind);
    } catch (err) {
      throw fromSystemError(err, p);
    }
  }

  async createExclusive(p: string, hints: OpenHints = {}): Promise<RandomAccessFile> {
    try {
      const fh = await fsp.open(p, fsc.O_RDWR | fsc.O_CREAT | fsc.O_EXCL, 0o644);
      return new LocalFile(fh, p, true, hints.syncIo, hints.writeBehind);
    } catch (err) {
      throw fromSystemError(err, p);
    }
  }

  async stat(p: string): Promise<StoreStat | null> {
    try {
      const st = await fsp.stat(p);
      return { size: st.size, mtimeMs: st.mtimeMs, isDirectory: st.isDirectory() };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw fromSystemError(err, p);
    }
  }

  async rename(from: string, to: string, opts: { replace?: boolean } = {}): Promise<void> {
    if (opts.replace === false) return this.renameNoReplace(from, to);
    try {
      await fsp.rename(from, to);
    } catch (err) {
      throw fromSystemError(err, from);
    }
  }

  /**
   * link() fails with EEXIST atomically, which rename() cannot be told to do from Node; the old name is then
   * removed. A crash in between leaves both names (the caller's temp names are cleaned up as leftovers).
   * File systems without hard links get a check just before the rename: not atomic, but the best they allow.
   */
  private async renameNoReplace(from: string, to: string): Promise<void> {
    try {
      await fsp.link(from, to);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EEXIST') throw new AlreadyExistsError('already exists', to);
      if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP' && code !== 'EMLINK') throw fromSystemError(err, from);
      if (await this.stat(to)) throw new AlreadyExistsError('already exists', to);
      return this.rename(from, to);
    }
    await this.unlink(from);
  }

  /** FICLONE through copyFile: never a byte copy, so a file system without reflinks fails instead of filling up. */
  async clone(from: string, to: string): Promise<void> {
    try {
      await fsp.copyFile(from, to, fsc.COPYFILE_EXCL | fsc.COPYFILE_FICLONE_FORCE);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EOPNOTSUPP' || code === 'ENOTSUP' || code === 'EXDEV' || code === 'ENOSYS' || code === 'EINVAL' || code === 'ENOTTY') {
        throw new UnsupportedError('the file system cannot share blocks between files (no reflink support: use XFS with reflink=1 or Btrfs)', path.dirname(to));
      }
      throw fromSystemError(err, code === 'EEXIST' ? to : from);
    }
  }

  async unlink(p: string): Promise<void> {
    try {
      await fsp.unlink(p);
    } catch (err) {
      throw fromSystemError(err, p);
    }
  }

  async list(dir: string): Promise<string[]> {
    try {
      return await fsp.readdir(dir);
    } catch (err) {
      throw fromSystemError(err, dir);
    }
  }

  async mkdirp(dir: string): Promise<void> {
    try {
      await fsp.mkdir(dir, { recursive: true });
    } catch (err) {
      throw fromSystemError(err, dir);
    }
  }

  async syncDir(dir: string): Promise<void> {
    let fh: fsp.FileHandle | undefined;
    try {
      fh = await fsp.open(dir, 'r');
      await fh.sync();
    } catch (err) {
      // Some file systems refuse fsync on directories; the rename itself has still happened.
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'EINVAL' && code !== 'EISDIR' && code !== 'EBADF') throw fromSystemError(err, dir);
    } finally {
      await fh?.close();
    }
  }

  display(p: string): string {
    return p;
  }
}

/** The one shared local store. */
export const localStore = new LocalStore();
