/** The VHDX block allocation table ([MS-VHDX] 2.5): 64-bit entries, payload blocks interleaved with sector bitmap blocks. */
import { CorruptImageError } from '../../util/errors.js';

/** Payload block states (bits 0-2 of an entry). */
export const PAYLOAD = {
  NOT_PRESENT: 0,
  UNDEFINED: 1,
  ZERO: 2,
  UNMAPPED: 3,
  FULLY_PRESENT: 6,
  PARTIALLY_PRESENT: 7,
} as const;
/** Sector bitmap block states. */
export const BITMAP = { NOT_PRESENT: 0, PRESENT: 6 } as const;
/** Sector bitmap blocks are always 1 MiB. */
export const SECTOR_BITMAP_BLOCK_SIZE = 1 << 20;
const MIB = 1 << 20;
const ENTRY_SIZE = 8;
/** The unit a BAT is logged and kept in: 4 KiB sectors. */
const BAT_SECTOR = 4096;

/** The shape of a BAT, derived from the metadata. */
export interface BatGeometry {
  blockSize: number;
  logicalSectorSize: number;
  /** Payload blocks per sector bitmap block. */
  chunkRatio: number;
  payloadBlocks: number;
  totalEntries: number;
}

/** Chunk ratio = 2^23 * logical sector size / block size (one 1 MiB bitmap covers this many blocks). */
export function geometry(virtualSize: number, blockSize: number, logicalSectorSize: number, differencing: boolean): BatGeometry {
  const chunkRatio = (2 ** 23 * logicalSectorSize) / blockSize;
  const payloadBlocks = Math.ceil(virtualSize / blockSize);
  const totalEntries = differencing
    ? Math.ceil(payloadBlocks / chunkRatio) * (chunkRatio + 1)
    : payloadBlocks + Math.floor((payloadBlocks - 1) / chunkRatio);
  return { blockSize, logicalSectorSize, chunkRatio, payloadBlocks, totalEntries };
}

/** BAT index of payload block `i`. */
export function payloadIndex(g: BatGeometry, i: number): number {
  return i + Math.floor(i / g.chunkRatio);
}

/** BAT index of the sector bitmap block of chunk `k`. */
export function bitmapIndex(g: BatGeometry, k: number): number {
  return k * (g.chunkRatio + 1) + g.chunkRatio;
}

/** One decoded entry: state and byte offset in the file. */
export interface BatEntry {
  state: number;
  fileOffset: number;
}

/** The table held in memory as raw bytes, so dirty 4 KiB sectors can be logged as they are. */
export class Bat {
  constructor(
    readonly geometry: BatGeometry,
    readonly bytes: Buffer,
  ) {}

  /** Parses a BAT region, refusing one too small for the entries the geometry needs. */
  static parse(g: BatGeometry, region: Buffer, subject?: string): Bat {
    if (g.totalEntries * ENTRY_SIZE > region.length) {
      throw new CorruptImageError(`BAT region holds ${Math.floor(region.length / ENTRY_SIZE)} entries, ${g.totalEntries} needed`, subject);
    }
    return new Bat(g, region);
  }

  /**
   * An empty (all NOT_PRESENT) table for a region of `regionLength` bytes, holding the whole 4 KiB sectors its entries
   * need (as a reader keeps them): the region's padding is zeros in a new file and is not made in memory.
   */
  static empty(g: BatGeometry, regionLength: number): Bat {
    return new Bat(g, Buffer.alloc(Math.min(regionLength, Math.ceil((g.totalEntries * ENTRY_SIZE) / BAT_SECTOR) * BAT_SECTOR)));
  }

  /** The table's bytes (the start of its region; the rest of the region is zeros). */
  serialize(): Buffer {
    return this.bytes;
  }

  /** Decodes entry `index`: state in bits 0-2, FileOffsetMB in bits 20-63. */
  get(index: number): BatEntry {
    const lo = this.bytes.readUInt32LE(index * ENTRY_SIZE);
    const hi = this.bytes.readUInt32LE(index * ENTRY_SIZE + 4);
    return { state: lo & 7, fileOffset: ((lo >>> 20) + hi * 4096) * MIB };
  }

  /** Sets entry `index`; returns the byte offset of the entry within the region. */
  set(index: number, e: BatEntry): number {
    const mb = e.fileOffset / MIB;
    const at = index * ENTRY_SIZE;
    this.bytes.writeUInt32LE((((mb % 4096) << 20) | e.state) >>> 0, at);
    this.bytes.writeUInt32LE(Math.floor(mb / 4096), at + 4);
    return at;
  }
}

/** Bytes needed for a BAT of `entries` entries, rounded up to 1 MiB as every region is. */
export function regionLengthFor(entries: number): number {
  return Math.max(MIB, Math.ceil((entries * ENTRY_SIZE) / MIB) * MIB);
}
