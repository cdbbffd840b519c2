/**
 * An in-memory ByteStore for the fuzzer: files are sparse maps of 64 KiB pages shared copy-on-write between
 * copies, so one seed image can be mutated thousands of times without copying it, and a file "extended" to an
 * absurd size by a corrupt header costs nothing. Read and write semantics follow LocalStore (short reads at end of
 * file, writes extend with zeros, read-only handles refuse writes as a read-only descriptor would).
 */
import { createHash } from 'node:crypto';
import type { ByteStore, OpenMode, RandomAccessFile, StoreStat } from '../../src/io/store.js';
import { posixPaths } from '../../src/io/local.js';
import { AlreadyExistsError, IoError, NotFoundError } from '../../src/util/errors.js';
import { isAllZero } from '../../src/util/struct.js';

export const PAGE = 1 << 16;

/** A sparse byte image: absent pages read as zeros; pages are never modified in place once shared. */
export class PagedImage {
  constructor(
    public size = 0,
    readonly pages = new Map<number, Buffer>(),
  ) {}

  /** A page-sharing copy (O(pages), no byte copies). */
  clone(): PagedImage {
    return new PagedImage(this.size, new Map(this.pages));
  }

  /** Builds an image from bytes, dropping all-zero pages and sharing identical ones. */
  static from(bytes: Buffer): PagedImage {
    const img = new PagedImage(bytes.length);
    const seen = new Map<string, Buffer>();
    for (let p = 0; p * PAGE < bytes.length; p++) {
      const chunk = bytes.subarray(p * PAGE, Math.min(bytes.length, (p + 1) * PAGE));
      if (isAllZero(chunk)) continue;
      const key = createHash('sha1').update(chunk).digest('hex');
      let page = seen.get(key);
      if (!page) {
        page = Buffer.alloc(PAGE);
        chunk.copy(page);
        seen.set(key, page);
      }
      img.pages.set(p, page);
    }
    return img;
  }

  /** Copies [position, position+out.length) into `out` (zeros past the end and in holes). */
  readInto(position: number, out: Buffer): number {
    const n = Math.max(0, Math.min(out.length, this.size - position));
    for (let done = 0; done < n; ) {
      const at = position + done;
      const p = Math.floor(at / PAGE);
      const inPage = at - p * PAGE;
      const k = Math.min(PAGE - inPage, n - done);
      const page = this.pages.get(p);
      if (page) page.copy(out, done, inPage, inPage + k);
      else out.fill(0, done, done + k);
      done += k;
    }
    return n;
  }

  /** The bytes of [position, position+length) (the caller bounds `length`). */
  slice(position: number, length: number): Buffer {
    const out = Buffer.alloc(length);
    this.readInto(position, out);
    return out;
  }

  /** Writes `data` at `position`, copying shared pages first and extending the size. */
  write(position: number, data: Uint8Array): void {
    const src = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    for (let done = 0; done < src.length; ) {
      const at = position + done;
      const p = Math.floor(at / PAGE);
      const inPage = at - p * PAGE;
      const k = Math.min(PAGE - inPage, src.length - done);
      const old = this.pages.get(p);
      const page = Buffer.alloc(PAGE);
      if (old) old.copy(page);
      src.copy(page, inPage, done, done + k);
      this.pages.set(p, page);
      done += k;
    }
    this.size = Math.max(this.size, position + src.length);
  }

  /** Cuts or extends (with a hole) to `size`. */
  truncate(size: number): void {
    if (size < this.size) {
      const last = Math.floor(size / PAGE);
      for (const p of [...this.pages.keys()]) if (p > last || (p === last && size % PAGE === 0)) this.pages.delete(p);
      const tail = this.pages.get(last);
      if (tail && size % PAGE) {
        const page = Buffer.alloc(PAGE);
        tail.copy(page, 0, 0, size % PAGE);
        this.pages.set(last, page);
      }
    }
    this.size = size;
  }

  /** The whole image as one buffer (small images only: regression files, oracles). */
  toBuffer(): Buffer {
    return this.slice(0, this.size);
  }
}

class MemoryFile implements RandomAccessFile {
  private closed = false;
  constructor(
    private readonly image: PagedImage,
    readonly name: string,
    readonly writable: boolean,
  ) {}

  private check(): void {
    if (this.closed) throw new IoError('file is closed', this.name);
  }

  async read(position: number, length: number, into?: Buffer): Promise<Buffer> {
    this.check();
    // Allocated like LocalFile does, so the fuzzer's allocation cap sees what a real read would cost.
    const buf = into ?? Buffer.allocUnsafe(length);
    const n = this.image.readInto(position, buf.subarray(0, length));
    return n === buf.length ? buf : buf.subarray(0, n);
  }

  async write(position: number, data: Uint8Array): Promise<void> {
    this.check();
    if (!this.writable) throw new IoError('EBADF: bad file descriptor, write', this.name);
    this.image.write(position, data);
  }

  async size(): Promise<number> {
    this.check();
    return this.image.size;
  }

  async truncate(size: number): Promise<void> {
    this.check();
    if (!this.writable) throw new IoError('EINVAL: invalid argument, ftruncate', this.name);
    this.image.truncate(size);
  }

  async flush(): Promise<void> {
    this.check();
  }

  async close(): Promise<void> {
    this.closed = true;
  }
}


/** A flat namespace of PagedImages keyed by absolute POSIX path; directories exist implicitly. */
export class MemoryStore implements ByteStore {
  readonly kind = 'memory';
  readonly paths = posixPaths;
  readonly files = new Map<string, PagedImage>();
  private mtimes = new Map<string, number>();

  /** Puts `image` at `path` (shared, not copied: callers pass a clone when they will mutate). */
  put(path: string, image: PagedImage): void {
    this.files.set(path, image);
    this.mtimes.set(path, 1_700_000_000_000);
  }

  private get(p: string): PagedImage {
    const img = this.files.get(p);
    if (!img) throw new NotFoundError('no such file or directory', p);
    return img;
  }

  async open(p: string, mode: OpenMode): Promise<RandomAccessFile> {
    return new MemoryFile(this.get(p), p, mode === 'readwrite');
  }

  async createExclusive(p: string): Promise<RandomAccessFile> {
    if (this.files.has(p)) throw new AlreadyExistsError('already exists', p);
    this.put(p, new PagedImage());
    return new MemoryFile(this.files.get(p)!, p, true);
  }

  async stat(p: string): Promise<StoreStat | null> {
    const img = this.files.get(p);
    if (img) return { size: img.size, mtimeMs: this.mtimes.get(p) ?? 0, isDirectory: false };
    const dir = p.endsWith('/') ? p : `${p}/`;
    return [...this.files.keys()].some((k) => k.startsWith(dir)) || p === '/' ? { size: 0, mtimeMs: 0, isDirectory: true } : null;
  }

  async rename(from: string, to: string): Promise<void> {
    const img = this.get(from);
    this.files.delete(from);
    this.files.set(to, img);
    this.mtimes.set(to, this.mtimes.get(from) ?? 0);
  }

  async unlink(p: string): Promise<void> {
    this.get(p);
    this.files.delete(p);
  }

  async list(dir: string): Promise<string[]> {
    const prefix = dir.endsWith('/') ? dir : `${dir}/`;
    return [...this.files.keys()].filter((k) => k.startsWith(prefix) && !k.slice(prefix.length).includes('/')).map((k) => k.slice(prefix.length));
  }

  async mkdirp(): Promise<void> {}

  async syncDir(): Promise<void> {}

  display(p: string): string {
    return `mem:${p}`;
  }
}
