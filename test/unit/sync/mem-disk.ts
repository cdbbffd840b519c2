/**
 * An in-memory Disk with per-sector presence (absent / data / zero) and an optional parent: a model of a
 * differencing image that the merge engine is tested against, independent of any format driver.
 */
import type { Disk, DiskIdentity, Extent } from '../../../src/formats/disk.js';
import type { RandomAccessFile } from '../../../src/io/store.js';
import { localStore } from '../../../src/io/local.js';
import { pushExtent } from '../../../src/formats/ranges.js';

const ABSENT = 0;
const DATA = 1;
const ZERO = 2;

/** A RandomAccessFile that holds nothing (MemDisk keeps its content itself). */
function nullFile(name: string): RandomAccessFile {
  return {
    name,
    writable: true,
    read: async () => Buffer.alloc(0),
    write: async () => {},
    size: async () => 0,
    truncate: async () => {},
    flush: async () => {},
    close: async () => {},
  };
}

/** Options for MemDisk. */
export interface MemDiskOptions {
  parent?: Disk | null;
  sectorSize?: number;
  /** Called before every write or writeZeroes (tests use it to inject failures). */
  beforeWrite?: () => void;
}

/** The in-memory disk. */
export class MemDisk implements Disk {
  readonly format = 'raw' as const;
  readonly type: 'dynamic' | 'differencing';
  readonly location;
  readonly logicalSectorSize: number;
  readonly physicalSectorSize: number;
  readonly blockSize = 1 << 20;
  readonly writable = true;
  readonly parent: Disk | null;
  readonly file: RandomAccessFile;
  readonly bytes: Buffer;
  readonly state: Uint8Array;
  writes = 0;
  flushes = 0;
  closed = false;

  constructor(
    readonly virtualSize: number,
    readonly opts: MemDiskOptions = {},
  ) {
    this.parent = opts.parent ?? null;
    this.type = this.parent ? 'differencing' : 'dynamic';
    this.logicalSectorSize = this.physicalSectorSize = opts.sectorSize ?? 512;
    this.location = { store: localStore, path: `/mem/${Math.random().toString(36).slice(2)}` };
    this.file = nullFile(this.location.path);
    this.bytes = Buffer.alloc(virtualSize);
    this.state = new Uint8Array(Math.ceil(virtualSize / this.logicalSectorSize));
  }

  private sectors(offset: number, length: number): [number, number] {
    const s = this.logicalSectorSize;
    if (offset % s || length % s || offset < 0 || offset + length > this.virtualSize) throw new Error(`unaligned or out of range ${offset}+${length}`);
    return [offset / s, (offset + length) / s];
  }

  async read(offset: number, length: number, into?: Buffer): Promise<Buffer> {
    const out = into ?? Buffer.alloc(length);
    const s = this.logicalSectorSize;
    const [a, b] = this.sectors(offset, length);
    for (let i = a; i < b; i++) {
      const dst = (i - a) * s;
      if (this.state[i] === DATA) this.bytes.copy(out, dst, i * s, (i + 1) * s);
      else if (this.state[i] === ZERO || !this.parent) out.fill(0, dst, dst + s);
      else (await this.parent.read(i * s, s)).copy(out, dst);
    }
    return out;
  }

  async status(offset: number, length: number): Promise<Extent[]> {
    const s = this.logicalSectorSize;
    const [a, b] = this.sectors(offset, length);
    const out: Extent[] = [];
    for (let i = a; i < b; i++) {
      const st = this.state[i];
      if (st === DATA) pushExtent(out, { offset: i * s, length: s, state: 'data', depth: 0 });
      else if (st === ZERO) pushExtent(out, { offset: i * s, length: s, state: 'zero', depth: 0 });
      else if (!this.parent) pushExtent(out, { offset: i * s, length: s, state: 'unallocated', depth: 0 });
      else for (const e of await this.parent.status(i * s, s)) pushExtent(out, { ...e, depth: e.depth + 1 });
    }
    return out;
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    this.opts.beforeWrite?.();
    this.writes++;
    const [a, b] = this.sectors(offset, data.byteLength);
    Buffer.from(data.buffer, data.byteOffset, data.byteLength).copy(this.bytes, offset);
    this.state.fill(DATA, a, b);
  }

  async writeZeroes(offset: number, length: number): Promise<void> {
    this.opts.beforeWrite?.();
    this.writes++;
    const [a, b] = this.sectors(offset, length);
    this.bytes.fill(0, offset, offset + length);
    this.state.fill(ZERO, a, b);
  }

  async flush(): Promise<void> {
    this.flushes++;
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.parent?.close();
  }

  async identity(): Promise<DiskIdentity> {
    return { format: 'raw', contentId: this.location.path, timestamp: 0, fileSize: 0, mtimeMs: 0 };
  }

  async info() {
    return { format: 'mem' };
  }

  /** The whole virtual content. */
  async content(): Promise<Buffer> {
    return this.read(0, this.virtualSize);
  }
}
