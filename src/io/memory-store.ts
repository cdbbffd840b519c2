/**
 * A ByteStore in memory: small files a run builds before sending them elsewhere (an object repository's point
 * lists, which the metafile code writes through a Location). Flat: every path is a file, folders exist implicitly.
 * Semantics follow LocalStore (short reads at end of file, writes extend with zeros, read-only handles refuse writes).
 */
import { posixPaths } from './local.js';
import type { ByteStore, OpenMode, RandomAccessFile, StoreStat } from './store.js';
import { AlreadyExistsError, IoError, NotFoundError } from '../util/errors.js';

/** One file's bytes: a buffer that grows by doubling, and the length in use. */
class MemoryFile {
  bytes: Buffer = Buffer.alloc(0);
  size = 0;
  mtimeMs = Date.now();

  write(position: number, data: Uint8Array): void {
    const end = position + data.byteLength;
    if (end > this.bytes.length) {
      const grown = Buffer.alloc(Math.max(end, this.bytes.length * 2, 4096));
      this.bytes.copy(grown, 0, 0, this.size);
      this.bytes = grown;
    }
    if (position > this.size) this.bytes.fill(0, this.size, position);
    this.bytes.set(data, position);
    this.size = Math.max(this.size, end);
    this.mtimeMs = Date.now();
  }

  truncate(size: number): void {
    // Growing writes zeros up to the new end; shrinking forgets the tail (later growth zero-fills it again).
    if (size > this.size) this.write(size, new Uint8Array(0));
    else this.size = size;
  }
}

/** A handle on a MemoryFile. */
class MemoryHandle implements RandomAccessFile {
  constructor(
    readonly name: string,
    private readonly file: MemoryFile,
    readonly writable: boolean,
  ) {}

  async read(position: number, length: number, into?: Buffer): Promise<Buffer> {
    const n = Math.max(0, Math.min(length, this.file.size - position));
    const out = into ?? Buffer.alloc(length);
    this.file.bytes.copy(out, 0, position, position + n);
    return n === out.length ? out : out.subarray(0, n);
  }

  async write(position: number, data: Uint8Array): Promise<void> {
    if (!this.writable) throw new IoError('opened read-only', this.name);
    this.file.write(position, data);
  }

  async size(): Promise<number> {
    return this.file.size;
  }

  async truncate(size: number): Promise<void> {
    if (!this.writable) throw new IoError('opened read-only', this.name);
    this.file.truncate(size);
  }

  async flush(): Promise<void> {}
  async close(): Promise<void> {}
}

/** A read-only file holding `bytes` (a file already read whole, parsed by code written for handles). */
export function bufferFile(name: string, bytes: Buffer): RandomAccessFile {
  const file = new MemoryFile();
  file.bytes = bytes;
  file.size = bytes.length;
  return new MemoryHandle(name, file, false);
}

/** Files in memory, named for messages through `prefix` (where their content is headed). */
export class MemoryStore implements ByteStore {
  readonly kind = 'memory';
  readonly paths = posixPaths;
  private readonly files = new Map<string, MemoryFile>();

  constructor(private readonly prefix = 'memory:') {}

  display(path: string): string {
    return this.prefix + path;
  }

  /** A file's whole content (a copy), or null when it does not exist. */
  contents(path: string): Buffer | null {
    const f = this.files.get(path);
    return f ? Buffer.from(f.bytes.subarray(0, f.size)) : null;
  }

  async open(path: string, mode: OpenMode): Promise<RandomAccessFile> {
    const f = this.files.get(path);
    if (!f) throw new NotFoundError('no such file', this.display(path));
    return new MemoryHandle(this.display(path), f, mode === 'readwrite');
  }

  async createExclusive(path: string): Promise<RandomAccessFile> {
    if (this.files.has(path)) throw new AlreadyExistsError('already exists', this.display(path));
    const f = new MemoryFile();
    this.files.set(path, f);
    return new MemoryHandle(this.display(path), f, true);
  }

  async stat(path: string): Promise<StoreStat | null> {
    const f = this.files.get(path);
    if (f) return { size: f.size, mtimeMs: f.mtimeMs, isDirectory: false };
    const dir = path.endsWith('/') ? path : path + '/';
    for (const name of this.files.keys()) if (name.startsWith(dir)) return { size: 0, mtimeMs: 0, isDirectory: true };
    return null;
  }

  async rename(from: string, to: string, opts: { replace?: boolean } = {}): Promise<void> {
    const f = this.files.get(from);
    if (!f) throw new NotFoundError('no such file', this.display(from));
    if (opts.replace === false && this.files.has(to)) throw new AlreadyExistsError('already exists', this.display(to));
    this.files.delete(from);
    this.files.set(to, f);
  }

  async unlink(path: string): Promise<void> {
    if (!this.files.delete(path)) throw new NotFoundError('no such file', this.display(path));
  }

  async list(dir: string): Promise<string[]> {
    const base = dir.endsWith('/') ? dir : dir + '/';
    const names = new Set<string>();
    for (const name of this.files.keys()) if (name.startsWith(base)) names.add(name.slice(base.length).split('/')[0]);
    return [...names].sort();
  }

  async mkdirp(): Promise<void> {}
  async syncDir(): Promise<void> {}
}
