/**
 * A restore point as a read-only Disk whose every read is checked against the point's list, in any order (Range
 * requests, deltas, encoders reading ahead in parallel): each block a read touches is read whole from the point and
 * its digest compared with the list's before any of its bytes are handed out. Blocks that the point's allocation
 * says read as zeros are never read, so they are all checked against the list when the disk is opened. This is how
 * `serve` exports repository points without ever sending bytes the point does not claim (docs/repository.md).
 */
import type { Disk, DiskIdentity, DiskInfo, Extent } from '../formats/disk.js';
import { checkRange } from '../formats/ranges.js';
import type { RandomAccessFile } from '../io/store.js';
import { digestBlock, zeroDigest, type Metafile } from '../meta/index.js';
import { DigestCursor } from '../sync/plan.js';
import { IoError } from '../util/errors.js';

/** Checked blocks kept for readers that come back to them (parallel reads of one block share one load). */
const CACHED_BLOCKS = 8;
const STATUS_WINDOW = 1 << 30;

/** `image` checked block by block against `list`; `damaged` makes the error for a block that does not match. */
export async function checkedDisk(image: Disk, list: Metafile, damaged: (why: string) => Error): Promise<Disk> {
  const disk = new CheckedDisk(image, list, damaged);
  await disk.checkZeroBlocks();
  return disk;
}

class CheckedDisk implements Disk {
  readonly format;
  readonly type;
  readonly location;
  readonly virtualSize;
  readonly logicalSectorSize;
  readonly physicalSectorSize;
  readonly blockSize;
  readonly writable = false;
  readonly parent;
  readonly file: RandomAccessFile;
  private readonly cursor: DigestCursor;
  private readonly listBlock: number;
  private readonly cache = new Map<number, Promise<Buffer>>();

  constructor(
    private readonly inner: Disk,
    private readonly list: Metafile,
    private readonly damaged: (why: string) => Error,
  ) {
    this.format = inner.format;
    this.type = inner.type;
    this.location = inner.location;
    this.virtualSize = inner.virtualSize;
    this.logicalSectorSize = inner.logicalSectorSize;
    this.physicalSectorSize = inner.physicalSectorSize;
    this.blockSize = inner.blockSize;
    // The chain stays visible (a delta against an ancestor is found from allocation); reads never go to it directly.
    this.parent = inner.parent;
    this.cursor = new DigestCursor(list);
    this.listBlock = list.summary.blockSize;
    this.file = readOnlyFile(this, inner.file.name);
  }

  private lengthOf(index: number): number {
    return Math.min(this.listBlock, this.virtualSize - index * this.listBlock);
  }

  /** Every block that no read will touch because the allocation says it reads as zeros must be zeros in the list. */
  async checkZeroBlocks(): Promise<void> {
    const bs = this.listBlock;
    const { algorithm } = this.list.summary;
    // Extents are contiguous and ascending: when one starts, every block before its first is fully described, and
    // a block holds data exactly when a data extent reached it (the highest such block is `dataUpTo`).
    let index = 0;
    let dataUpTo = -1;
    const settle = async (upTo: number) => {
      for (; index < upTo; index++) {
        if (index > dataUpTo && !(await this.cursor.digest(index)).equals(zeroDigest(algorithm, this.lengthOf(index)))) {
          throw this.damaged(`block ${index} at offset ${index * bs} reads as zeros but its metafile lists data`);
        }
      }
    };
    for (let at = 0; at < this.virtualSize; at += STATUS_WINDOW) {
      for (const e of await this.inner.status(at, Math.min(STATUS_WINDOW, this.virtualSize - at))) {
        await settle(Math.floor(e.offset / bs));
        if (e.state === 'data' && e.length > 0) dataUpTo = Math.max(dataUpTo, Math.floor((e.offset + e.length - 1) / bs));
      }
    }
    await settle(Math.ceil(this.virtualSize / bs));
  }

  /** Block `index`, read whole and checked; shared by concurrent readers while cached. */
  private block(index: number): Promise<Buffer> {
    let p = this.cache.get(index);
    if (p) {
      this.cache.delete(index);
    } else {
      p = this.load(index);
      p.catch(() => {});
    }
    this.cache.set(index, p);
    while (this.cache.size > CACHED_BLOCKS) this.cache.delete(this.cache.keys().next().value!);
    return p;
  }

  private async load(index: number): Promise<Buffer> {
    const bytes = Buffer.allocUnsafe(this.lengthOf(index));
    const got = await this.inner.read(index * this.listBlock, bytes.length, bytes);
    if (got.buffer !== bytes.buffer || got.byteOffset !== bytes.byteOffset) got.copy(bytes);
    if (!digestBlock(this.list.summary.algorithm, bytes).equals(await this.cursor.digest(index))) {
      throw this.damaged(`block ${index} at offset ${index * this.listBlock} differs from its metafile`);
    }
    return bytes;
  }

  async read(offset: number, length: number, into?: Buffer): Promise<Buffer> {
    checkRange(this, offset, length);
    const out = into ?? Buffer.alloc(length);
    const bs = this.listBlock;
    for (let at = offset; at < offset + length; ) {
      const index = Math.floor(at / bs);
      const to = Math.min(offset + length, (index + 1) * bs);
      (await this.block(index)).copy(out, at - offset, at - index * bs, to - index * bs);
      at = to;
    }
    return out;
  }

  status(offset: number, length: number): Promise<Extent[]> {
    return this.inner.status(offset, length);
  }

  async write(): Promise<void> {
    throw new IoError('restore points are read-only', this.file.name);
  }

  async writeZeroes(): Promise<void> {
    throw new IoError('restore points are read-only', this.file.name);
  }

  async flush(): Promise<void> {}

  async close(): Promise<void> {
    await Promise.allSettled(this.cache.values());
    this.cache.clear();
  }

  identity(): Promise<DiskIdentity> {
    return this.inner.identity();
  }

  info(): Promise<DiskInfo> {
    return this.inner.info();
  }
}

/** The checked content as a read-only file (what a raw image of the point would hold). */
function readOnlyFile(disk: Disk, name: string): RandomAccessFile {
  const refuse = async (): Promise<never> => {
    throw new IoError('restore points are read-only', name);
  };
  return {
    name,
    writable: false,
    read: (position, length, into) => {
      const n = Math.max(0, Math.min(length, disk.virtualSize - position));
      return disk.read(position, n, into?.subarray(0, n));
    },
    write: refuse,
    size: async () => disk.virtualSize,
    truncate: refuse,
    flush: async () => {},
    close: async () => {},
  };
}
