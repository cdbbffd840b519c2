/**
 * A point's map (`disks/<disk>/<id>.map`, docs/repository.md): for each block of the point's virtual content, the
 * SHA-256 of its bytes (the name of the block object holding them) or 32 zero bytes for a block that reads as
 * zeros. Binary, little-endian:
 *
 *   0   16  ASCII "vhdsync-pointmap"
 *   16   4  version (1)
 *   20   4  block size in bytes (a power of two, 4 KiB to 256 MiB)
 *   24   8  virtual size in bytes
 *   32   4  logical sector size (512 or 4096)
 *   36   4  zero
 *   40   8  when the point was written (ms since 1970): its identity, recorded in its list
 *   48   8  block count = ceil(virtual size / block size)
 *   56   8  zero
 *   64  32 x block count  the entries
 *   end 32  SHA-256 of every byte before it
 */
import { createHash } from 'node:crypto';

const MAGIC = Buffer.from('vhdsync-pointmap', 'ascii');
const VERSION = 1;
export const MAP_HEADER = 64;
export const ENTRY = 32;
/** Maps above this are refused (written and read): 8 Mi blocks, 16 TiB at the default 2 MiB blocks. */
export const MAP_LIMIT = MAP_HEADER + ENTRY * (8 << 20) + 32;
/** The smallest block size a map may have (a metafile's). */
const MIN_MAP_BLOCK = 4 << 10;

/** The most bytes a map of a point of `virtualSize` bytes can have (at the smallest block size), within MAP_LIMIT. */
export function mapLimitFor(virtualSize: number): number {
  return Math.min(MAP_LIMIT, MAP_HEADER + mapEntriesBytes(MIN_MAP_BLOCK, virtualSize) + 32);
}

const ZERO_ENTRY = Buffer.alloc(ENTRY);

/** A point's block map in memory: one 32-byte entry per block. */
export class PointMap {
  constructor(
    readonly blockSize: number,
    readonly virtualSize: number,
    readonly logicalSectorSize: number,
    readonly createdMs: number,
    /** blockCount x 32 bytes. */
    readonly entries: Buffer,
  ) {}

  /** An all-zero map of a new disk. */
  static empty(blockSize: number, virtualSize: number, logicalSectorSize: number): PointMap {
    return new PointMap(blockSize, virtualSize, logicalSectorSize, 0, Buffer.alloc(mapEntriesBytes(blockSize, virtualSize)));
  }

  get blockCount(): number {
    return this.entries.length / ENTRY;
  }

  /** Bytes of block `i` (the last block may be short). */
  blockLength(i: number): number {
    return Math.min(this.blockSize, this.virtualSize - i * this.blockSize);
  }

  /** Block `i`'s SHA-256 as hex, or null when it reads as zeros. */
  hashOf(i: number): string | null {
    const e = this.entries.subarray(i * ENTRY, (i + 1) * ENTRY);
    return e.equals(ZERO_ENTRY) ? null : e.toString('hex');
  }

  /** Sets block `i` to the content whose SHA-256 is `digest`, or to zeros with null. */
  set(i: number, digest: Buffer | null): void {
    (digest ?? ZERO_ENTRY).copy(this.entries, i * ENTRY);
  }

  /** A copy that the new point changes (the base's map stays as it was). */
  derive(): PointMap {
    return new PointMap(this.blockSize, this.virtualSize, this.logicalSectorSize, 0, Buffer.from(this.entries));
  }

  /** Every distinct block hash (hex) the map references. */
  hashes(into = new Set<string>()): Set<string> {
    for (let i = 0; i < this.blockCount; i++) {
      const h = this.hashOf(i);
      if (h) into.add(h);
    }
    return into;
  }

  /** The map's object bytes, stamped with `createdMs`. */
  serialize(createdMs: number): Buffer {
    const out = Buffer.alloc(MAP_HEADER + this.entries.length + 32);
    MAGIC.copy(out, 0);
    out.writeUInt32LE(VERSION, 16);
    out.writeUInt32LE(this.blockSize, 20);
    out.writeBigUInt64LE(BigInt(this.virtualSize), 24);
    out.writeUInt32LE(this.logicalSectorSize, 32);
    out.writeBigUInt64LE(BigInt(createdMs), 40);
    out.writeBigUInt64LE(BigInt(this.blockCount), 48);
    this.entries.copy(out, MAP_HEADER);
    createHash('sha256').update(out.subarray(0, out.length - 32)).digest().copy(out, out.length - 32);
    return out;
  }
}

/** Bytes of the entries of a map of this geometry. */
export function mapEntriesBytes(blockSize: number, virtualSize: number): number {
  return Math.ceil(virtualSize / blockSize) * ENTRY;
}

/** Why these bytes are not a point map, or the map. */
export function parsePointMap(bytes: Buffer): PointMap | string {
  if (bytes.length < MAP_HEADER + 32) return `${bytes.length} bytes, shorter than a map`;
  if (!bytes.subarray(0, 16).equals(MAGIC)) return 'not a point map (wrong magic)';
  const sum = createHash('sha256').update(bytes.subarray(0, bytes.length - 32)).digest();
  if (!sum.equals(bytes.subarray(bytes.length - 32))) return 'its checksum does not match its bytes';
  const version = bytes.readUInt32LE(16);
  if (version !== VERSION) return `version ${version}, this vhdsync reads ${VERSION}`;
  const blockSize = bytes.readUInt32LE(20);
  const virtualSize = Number(bytes.readBigUInt64LE(24));
  const sector = bytes.readUInt32LE(32);
  const createdMs = Number(bytes.readBigUInt64LE(40));
  const count = Number(bytes.readBigUInt64LE(48));
  if (blockSize < 4096 || blockSize > 256 << 20 || (blockSize & (blockSize - 1)) !== 0) return `block size ${blockSize} is not a power of two from 4 KiB to 256 MiB`;
  if (sector !== 512 && sector !== 4096) return `logical sector size ${sector}`;
  if (!Number.isSafeInteger(virtualSize) || virtualSize <= 0 || virtualSize % sector !== 0) return `virtual size ${virtualSize}`;
  if (count !== Math.ceil(virtualSize / blockSize) || bytes.length !== MAP_HEADER + count * ENTRY + 32) return `${count} blocks do not fit its size`;
  return new PointMap(blockSize, virtualSize, sector, createdMs, Buffer.from(bytes.subarray(MAP_HEADER, MAP_HEADER + count * ENTRY)));
}
