/**
 * A restore point of an object repository seen as a Disk: its map says which block object holds each block.
 * Reads fetch whole blocks with parallel GETs and read ahead of a sequential reader, and check every block's
 * SHA-256 against the name it was fetched by, so nothing the store altered is ever returned. The writable kind
 * (a new point while `backup` fills it) starts as its base's map and sends each written block as an object.
 */
import { createHash } from 'node:crypto';
import type { Disk, DiskIdentity, DiskInfo, Extent } from '../../formats/disk.js';
import { checkRange, pushExtent } from '../../formats/ranges.js';
import type { Location } from '../../io/location.js';
import type { ObjectStore } from '../../io/object-store.js';
import type { RandomAccessFile } from '../../io/store.js';
import { IoError, RepositoryDamageError } from '../../util/errors.js';
import { isAllZero } from '../../util/struct.js';
import type { BlockUploader } from './block-upload.js';
import { blockName } from './keys.js';
import type { PointMap } from './point-map.js';

/** Blocks fetched ahead of a sequential reader by default (memory: this many blocks besides the ones being read). */
export const DEFAULT_READ_AHEAD = 4;
/** GETs in flight at most for one read call. */
const PARALLEL_GETS = 8;

/** How a point disk reaches its blocks. */
export interface PointDiskOptions {
  store: ObjectStore;
  /** The disk's key prefix (`disks/<disk>/`). */
  diskPrefix: string;
  /** The point, for messages. */
  pointId: string;
  location: Location;
  readAhead?: number;
  /** Only for a new point: where its written blocks go. */
  uploader?: BlockUploader;
}

/** A point's content over its map; writable while a backup fills it. */
export class PointDisk implements Disk {
  readonly format = 'raw' as const;
  readonly type = 'dynamic' as const;
  readonly parent = null;
  readonly location: Location;
  readonly virtualSize: number;
  readonly logicalSectorSize: number;
  readonly physicalSectorSize: number;
  readonly blockSize: number;
  readonly writable: boolean;
  readonly file: RandomAccessFile;
  /** Fetched and prefetched blocks by index, oldest first (bounded: readAhead + PARALLEL_GETS). */
  private readonly cache = new Map<number, Promise<Buffer>>();
  private readonly readAhead: number;

  constructor(
    readonly map: PointMap,
    private readonly opts: PointDiskOptions,
  ) {
    this.location = opts.location;
    this.virtualSize = map.virtualSize;
    this.logicalSectorSize = map.logicalSectorSize;
    this.physicalSectorSize = map.logicalSectorSize;
    this.blockSize = map.blockSize;
    this.writable = Boolean(opts.uploader);
    this.readAhead = opts.readAhead ?? DEFAULT_READ_AHEAD;
    this.file = contentFile(this);
  }

  /** The one line naming the point and the block object that is wrong. */
  private damage(key: string, why: string): RepositoryDamageError {
    return new RepositoryDamageError(`restore point ${this.opts.pointId}: block object ${why}`, `${this.opts.store.display}/${key}`);
  }

  /** Fetches block `i` (data, not zero) and checks its bytes against its name. */
  private async fetch(i: number, hex: string): Promise<Buffer> {
    const key = this.opts.diskPrefix + blockName(hex);
    const want = this.map.blockLength(i);
    // One byte more than the block: a longer object is damage, found without reading (or holding) the rest of it.
    const bytes = await this.opts.store.get(key, { start: 0, length: want + 1 });
    if (!bytes) throw this.damage(key, 'is missing');
    if (bytes.length !== want) throw this.damage(key, bytes.length > want ? `is longer than the block's ${want} bytes` : `holds ${bytes.length} bytes, the block has ${want}`);
    if (createHash('sha256').update(bytes).digest('hex') !== hex) throw this.damage(key, 'does not hold the bytes its name (their SHA-256) says');
    return bytes;
  }

  /** Block `i`'s bytes, or null for a block that reads as zeros; fetches are shared through the cache. */
  private block(i: number): Promise<Buffer> | null {
    const hex = this.map.hashOf(i);
    if (!hex) return null;
    let p = this.cache.get(i);
    if (p) {
      // Most recently used goes last.
      this.cache.delete(i);
    } else {
      p = this.fetch(i, hex);
      p.catch(() => {});
    }
    this.cache.set(i, p);
    while (this.cache.size > this.readAhead + PARALLEL_GETS) this.cache.delete(this.cache.keys().next().value!);
    return p;
  }

  async read(offset: number, length: number, into?: Buffer): Promise<Buffer> {
    checkRange(this, offset, length);
    const out = into ?? Buffer.alloc(length);
    if (length === 0) return out;
    const bs = this.blockSize;
    const first = Math.floor(offset / bs);
    const last = Math.floor((offset + length - 1) / bs);
    for (let start = first; start <= last; start += PARALLEL_GETS) {
      const end = Math.min(last, start + PARALLEL_GETS - 1);
      const parts: Array<Promise<Buffer> | null> = [];
      for (let i = start; i <= end; i++) parts.push(this.block(i));
      if (end === last) this.prefetch(last + 1);
      for (let i = start; i <= end; i++) {
        const from = Math.max(offset, i * bs);
        const to = Math.min(offset + length, (i + 1) * bs);
        const p = parts[i - start];
        if (p) (await p).copy(out, from - offset, from - i * bs, to - i * bs);
        else out.fill(0, from - offset, to - offset);
      }
    }
    return out;
  }

  /** Starts fetching the next data blocks from `i`, so a sequential reader finds them arrived. */
  private prefetch(i: number): void {
    for (let n = 0; n < this.readAhead && i < this.map.blockCount; i++) {
      if (!this.map.hashOf(i)) continue;
      if (!this.cache.has(i)) this.block(i);
      n++;
    }
  }

  async status(offset: number, length: number): Promise<Extent[]> {
    checkRange(this, offset, length);
    const out: Extent[] = [];
    const bs = this.blockSize;
    for (let at = offset; at < offset + length; ) {
      const i = Math.floor(at / bs);
      const to = Math.min(offset + length, (i + 1) * bs);
      pushExtent(out, { offset: at, length: to - at, state: this.map.hashOf(i) ? 'data' : 'zero', depth: 0 });
      at = to;
    }
    return out;
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    const up = this.uploader();
    checkRange(this, offset, data.byteLength);
    const bytes = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    const bs = this.blockSize;
    for (let at = offset; at < offset + bytes.length; ) {
      const i = Math.floor(at / bs);
      const len = this.map.blockLength(i);
      const to = Math.min(offset + bytes.length, i * bs + len);
      let block: Buffer;
      if (at === i * bs && to === i * bs + len) {
        // The uploader keeps the bytes until they are sent; the caller may reuse its buffer at once.
        block = Buffer.from(bytes.subarray(at - offset, to - offset));
      } else {
        block = await this.readForUpdate(i);
        bytes.copy(block, at - i * bs, at - offset, to - offset);
      }
      await this.setBlock(up, i, block);
      at = to;
    }
  }

  async writeZeroes(offset: number, length: number): Promise<void> {
    const up = this.uploader();
    checkRange(this, offset, length);
    const bs = this.blockSize;
    for (let at = offset; at < offset + length; ) {
      const i = Math.floor(at / bs);
      const len = this.map.blockLength(i);
      const to = Math.min(offset + length, i * bs + len);
      if (at === i * bs && to === i * bs + len) {
        this.cache.delete(i);
        this.map.set(i, null);
      } else {
        const block = await this.readForUpdate(i);
        block.fill(0, at - i * bs, to - i * bs);
        await this.setBlock(up, i, block);
      }
      at = to;
    }
  }

  /** A private copy of block `i` as it reads now, for a write that covers part of it. */
  private async readForUpdate(i: number): Promise<Buffer> {
    // Blocks this point sent are read back from the store: wait until they are there.
    await this.uploader().drain();
    const block = Buffer.alloc(this.map.blockLength(i));
    await this.read(i * this.blockSize, block.length, block);
    return block;
  }

  private async setBlock(up: BlockUploader, i: number, block: Buffer): Promise<void> {
    this.cache.delete(i);
    if (isAllZero(block)) {
      this.map.set(i, null);
      return;
    }
    const digest = createHash('sha256').update(block).digest();
    this.map.set(i, digest);
    await up.put(digest.toString('hex'), block);
  }

  private uploader(): BlockUploader {
    if (!this.opts.uploader) throw new IoError('restore points are read-only', this.location.store.display(this.location.path));
    return this.opts.uploader;
  }

  async flush(): Promise<void> {
    await this.opts.uploader?.drain();
  }

  async close(): Promise<void> {
    try {
      await this.flush();
    } finally {
      // Prefetches still running must not surface later as unhandled failures; their results are dropped.
      await Promise.allSettled(this.cache.values());
      this.cache.clear();
    }
  }

  async identity(): Promise<DiskIdentity> {
    // A point is immutable: its virtual size and the time its map was written identify it (recorded in its list).
    return { format: 'raw', contentId: '', timestamp: 0, fileSize: this.virtualSize, mtimeMs: this.map.createdMs };
  }

  async info(): Promise<DiskInfo> {
    return {
      format: 'raw',
      type: 'object point',
      point: this.opts.pointId,
      virtualSize: this.virtualSize,
      blockSize: this.blockSize,
      blocks: this.map.blockCount,
      dataBlocks: this.map.hashes().size,
    };
  }
}

/** The point's virtual content as a read-only file (what a raw image's file would hold). */
function contentFile(disk: PointDisk): RandomAccessFile {
  return {
    name: disk.location.store.display(disk.location.path),
    writable: false,
    read: async (position, length, into) => {
      const n = Math.max(0, Math.min(length, disk.virtualSize - position));
      const out = await disk.read(position, n, into?.subarray(0, n));
      return out;
    },
    write: async () => {
      throw new IoError('restore points are read-only', disk.location.store.display(disk.location.path));
    },
    size: async () => disk.virtualSize,
    truncate: async () => {
      throw new IoError('restore points are read-only', disk.location.store.display(disk.location.path));
    },
    flush: async () => {},
    close: async () => {},
  };
}
