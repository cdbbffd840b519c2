/**
 * Byte stores: where image bytes live (local files now; SMB and HTTP through the same interface).
 * Formats and sync code only ever see these interfaces.
 */

/** A file opened for positioned I/O. */
export interface RandomAccessFile {
  /** The location string this file was opened from, for messages. */
  readonly name: string;
  readonly writable: boolean;
  /**
   * Reads up to `length` bytes at `position` into `into` (allocated when absent). The result is
   * shorter than `length` only at end of file.
   */
  read(position: number, length: number, into?: Buffer): Promise<Buffer>;
  /** Writes all of `data` at `position`, extending the file if needed. */
  write(position: number, data: Uint8Array): Promise<void>;
  /**
   * The same as `write`, done on the calling thread before it returns (local files only): for long sequential
   * writers, which skip a thread-pool hand-off per call that costs more than the copy on small VMs.
   */
  writeSync?(position: number, data: Uint8Array): void;
  /** The current file size in bytes. */
  size(): Promise<number>;
  /** Sets the file size, cutting or extending with zeros. */
  truncate(size: number): Promise<void>;
  /** Makes everything written so far durable (fsync). */
  flush(): Promise<void>;
  close(): Promise<void>;
  /**
   * After close: the file's size and mtime as the store reported them on closing it (SMB's CLOSE answers with them,
   * which saves a stat's round trip); null before the close, or where the store said nothing. Absent where a stat
   * costs no more.
   */
  closedStat?(): StoreStat | null;
  /**
   * A file opened read-only: its size and mtime as the store reported them on opening it (SMB's CREATE reply), under
   * the rule that nothing changes a file vhdsync has open on a share during a run (SmbFile's knownSize); null once
   * closed, or for a writable file. Absent where a stat costs no more.
   */
  openedStat?(): StoreStat | null;
}

/** The start of a small file read in one step (ByteStore.readSmall). */
export interface SmallFile {
  /** The file's first bytes: all of them when `size` is within the limit asked for. */
  bytes: Buffer;
  size: number;
  mtimeMs: number;
}

/** What a store reports about a path. */
export interface StoreStat {
  size: number;
  mtimeMs: number;
  isDirectory: boolean;
}

/** How to open a file. */
export type OpenMode = 'read' | 'readwrite';

/** What the caller is about to do with a file it opens, which a store may use to save round trips. */
export interface OpenHints {
  /**
   * Bytes from the start of the file the caller is about to read (an image's fixed structures): a store may fetch
   * them with the open (SMB: in the same round trip) and answer reads within them from what it fetched. Read-only
   * opens only; the files are under the rules of size(), which nothing else changes while they are open.
   */
  readAhead?: number;
  /**
   * The caller reads and writes small pieces one after another, with nothing to overlap them with (merge): a local
   * file then makes each read and write on the calling thread, skipping a thread-pool hand-off that costs more than
   * a 64 KiB copy from the page cache (decision 0021). Pieces up to 256 KiB only (the caller's loop gives the event loop
   * turns: util/event-loop.ts); larger ones and flushes stay on the pool. Ignored by other stores.
   */
  syncIo?: boolean;
  /**
   * The caller writes much and flushes once at the end (copy's new diff): a local file starts the write-back
   * of what it was given every WRITE_BEHIND_BYTES (an fdatasync on the thread pool, never more than one at a time), so
   * the final flush waits for the last part only. A failed write-back is thrown by the next flush or close. Writable
   * opens only; ignored by other stores.
   */
  writeBehind?: boolean;
}

/** A namespace of files: the local file system, an SMB share, an HTTP server. */
export interface ByteStore {
  /** Short name for messages: `local`, `smb`, `http`. */
  readonly kind: string;
  open(path: string, mode: OpenMode, hints?: OpenHints): Promise<RandomAccessFile>;
  /** Creates a new file, failing with AlreadyExistsError when one exists (`hints` as for open). */
  createExclusive(path: string, hints?: OpenHints): Promise<RandomAccessFile>;
  /** Returns null when nothing exists at `path`. */
  stat(path: string): Promise<StoreStat | null>;
  /**
   * Renames, replacing an existing destination atomically where the store can. With `replace: false` it fails
   * with AlreadyExistsError instead when the destination exists, decided atomically by the store (no window in
   * which another writer's file could be replaced).
   */
  rename(from: string, to: string, opts?: { replace?: boolean }): Promise<void>;
  unlink(path: string): Promise<void>;
  /** Names (not paths) of the entries of a directory. */
  list(dir: string): Promise<string[]>;
  mkdirp(dir: string): Promise<void>;
  /**
   * The first `maxBytes` bytes of a file, its size and mtime, in one step where that saves round trips (SMB: one
   * compound request); null when nothing, or a directory, is there. Absent where stat, open and read cost no more
   * (io/small-files.ts falls back to them).
   */
  readSmall?(path: string, maxBytes: number): Promise<SmallFile | null>;
  /**
   * Creates `path` holding `bytes`, failing with AlreadyExistsError when it exists, and flushes it when asked, in
   * one step where that saves round trips (SMB). Absent elsewhere (io/small-files.ts falls back).
   */
  writeNew?(path: string, bytes: Uint8Array, opts?: { flush?: boolean }): Promise<void>;
  /**
   * Makes the data of the file at `path` durable, by name, in one step where that saves round trips (SMB: CREATE +
   * FLUSH + CLOSE). Absent elsewhere (io/atomic.ts falls back to open, flush, close). Never a step with a rename:
   * a server may run a chain's rename after its FLUSH failed (decision 0034).
   */
  flushByName?(path: string): Promise<void>;
  /** Makes a directory's entries (renames, creates) durable, where the store supports it. */
  syncDir(dir: string): Promise<void>;
  /** Path helpers in the store's own syntax. */
  readonly paths: StorePaths;
  /** A location string for a path in this store, as the user would write it. */
  display(path: string): string;
  /**
   * The path as Windows names it (`\\HOST\SHARE\DIR\FILE` for SMB), for parent locators that Hyper-V reads;
   * absent where the store has no Windows spelling.
   */
  windowsPath?(path: string): string;
  /**
   * Makes `to` (which must not exist) a copy of `from` that shares its blocks (a reflink: FICLONE), where the file
   * system can; throws UnsupportedError where it cannot. Absent on stores that never can.
   */
  clone?(from: string, to: string): Promise<void>;
  /**
   * A view of this store in which every request that changes a file calls `check` right before it goes out, also
   * one sent later than the call that made it (SMB write-behind) or sent again after a reconnect; `check` throws to
   * stop it. A run lock's guard (sync/lock.ts) passes its lease check down this way. Absent on stores whose requests
   * all go out within the call, where a check before the call is enough.
   */
  guarded?(check: () => void): ByteStore;
}

/** Path arithmetic for a store (POSIX style for local files on Linux, share-relative for SMB). */
export interface StorePaths {
  join(...parts: string[]): string;
  dirname(p: string): string;
  basename(p: string): string;
  resolve(base: string, rel: string): string;
  relative(from: string, to: string): string;
  isAbsolute(p: string): boolean;
}

/** Reads exactly `length` bytes or returns null when the file ends first. */
export async function readFully(file: RandomAccessFile, position: number, length: number): Promise<Buffer | null> {
  const buf = await file.read(position, length);
  return buf.length === length ? buf : null;
}
