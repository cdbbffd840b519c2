/**
 * TEST HOOK: a store decorator that reports every open, change and flush a caller makes through it, before passing
 * the call on. The fuzzer (test/fuzz/) checks with it that a reader changed nothing and that a writer touched only the
 * file it was given; the crash tests' kill hook (sync/kill-hook.ts) counts mutations with it; the run lock
 * (sync/lock.ts) refuses mutations through it once its lease lapsed, and tests inject I/O failures with it: `record`
 * may throw, and the operation then fails (as a rejected promise) without being made.
 */
import type { ByteStore, OpenMode, RandomAccessFile } from './store.js';

/** An open or a change seen by a recording store; `path` is the store path it concerns. */
export type StoreEvent =
  | { op: 'open'; path: string; mode: OpenMode }
  | { op: 'create'; path: string }
  | { op: 'write'; path: string; position: number; length: number }
  | { op: 'truncate'; path: string; size: number }
  | { op: 'flush'; path: string }
  | { op: 'rename'; path: string; to: string }
  | { op: 'unlink'; path: string }
  | { op: 'mkdir'; path: string };

/** A file whose writes, truncations and flushes are reported under `path`. */
class RecordingFile implements RandomAccessFile {
  constructor(
    private readonly inner: RandomAccessFile,
    private readonly path: string,
    private readonly record: (e: StoreEvent) => void,
  ) {}
  get name() {
    return this.inner.name;
  }
  get writable() {
    return this.inner.writable;
  }
  read(position: number, length: number, into?: Buffer) {
    return this.inner.read(position, length, into);
  }
  async write(position: number, data: Uint8Array) {
    this.record({ op: 'write', path: this.path, position, length: data.byteLength });
    return this.inner.write(position, data);
  }
  size() {
    return this.inner.size();
  }
  async truncate(size: number) {
    this.record({ op: 'truncate', path: this.path, size });
    return this.inner.truncate(size);
  }
  async flush() {
    this.record({ op: 'flush', path: this.path });
    return this.inner.flush();
  }
  close() {
    return this.inner.close();
  }
  closedStat() {
    return this.inner.closedStat?.() ?? null;
  }
  openedStat() {
    return this.inner.openedStat?.() ?? null;
  }
}

/** `inner` seen through a decorator that calls `record` for each open, change and flush, before making it. */
export function recordingStore(inner: ByteStore, record: (e: StoreEvent) => void): ByteStore {
  return {
    kind: inner.kind,
    paths: inner.paths,
    display: (p) => inner.display(p),
    windowsPath: inner.windowsPath ? (p) => inner.windowsPath!(p) : undefined,
    open: async (path, mode, hints) => {
      record({ op: 'open', path, mode });
      return new RecordingFile(await inner.open(path, mode, hints), path, record);
    },
    createExclusive: async (path, hints) => {
      record({ op: 'create', path });
      return new RecordingFile(await inner.createExclusive(path, hints), path, record);
    },
    stat: (p) => inner.stat(p),
    rename: async (from, to, opts) => {
      record({ op: 'rename', path: from, to });
      return inner.rename(from, to, opts);
    },
    unlink: async (path) => {
      record({ op: 'unlink', path });
      return inner.unlink(path);
    },
    list: (d) => inner.list(d),
    mkdirp: async (path) => {
      record({ op: 'mkdir', path });
      return inner.mkdirp(path);
    },
    syncDir: (d) => inner.syncDir(d),
    readSmall: inner.readSmall ? (p, max) => inner.readSmall!(p, max) : undefined,
    writeNew: inner.writeNew
      ? async (path, bytes, opts) => {
          record({ op: 'create', path });
          record({ op: 'write', path, position: 0, length: bytes.byteLength });
          if (opts?.flush) record({ op: 'flush', path });
          return inner.writeNew!(path, bytes, opts);
        }
      : undefined,
    flushByName: inner.flushByName
      ? async (path) => {
          record({ op: 'flush', path });
          return inner.flushByName!(path);
        }
      : undefined,
    clone: inner.clone
      ? async (from, to) => {
          record({ op: 'create', path: to });
          return inner.clone!(from, to);
        }
      : undefined,
    guarded: inner.guarded ? (check) => recordingStore(inner.guarded!(check), record) : undefined,
  };
}
