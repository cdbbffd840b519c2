/** Creating VHDX images: fixed, dynamic and differencing, laid out on 1 MiB boundaries. */
import type { CreateOptions, Disk } from '../disk.js';
import { displayLocation, type Location } from '../../io/location.js';
import type { RandomAccessFile } from '../../io/store.js';
import { UnsupportedError, UsageError } from '../../util/errors.js';
import { ZERO_GUID, newGuid } from '../../util/guid.js';
import { isPowerOfTwo } from '../../util/units.js';
import { lengthWithoutTrailingZeros } from '../../util/struct.js';
import * as fileId from './file-identifier.js';
import * as hdr from './header.js';
import * as rt from './region-table.js';
import * as md from './metadata.js';
import { BITMAP, Bat, PAYLOAD, SECTOR_BITMAP_BLOCK_SIZE, bitmapIndex, geometry, payloadIndex, regionLengthFor } from './bat.js';
import { VHDX_LOCATOR_TYPE, type ParentLocator } from './parent-locator.js';
import { VhdxDisk, readLayout } from './vhdx-disk.js';
import { FileView } from './replay.js';

const MIB = 1 << 20;
/** A new image's layout (create and the stream encoder): log, metadata and BAT each at a 1 MiB boundary. */
export const LOG_OFFSET = MIB;
export const LOG_LENGTH = MIB;
export const METADATA_OFFSET = 2 * MIB;
export const METADATA_LENGTH = MIB;
export const BAT_OFFSET = 3 * MIB;
/** Hyper-V's defaults. */
const DEFAULT_BLOCK_DYNAMIC = 32 * MIB;
const DEFAULT_BLOCK_DIFFERENCING = 2 * MIB;

/**
 * The locator of a child written at `finalLocation`: parent_linkage is the parent's DataWriteGuid;
 * relative_path is Windows style from the child's final folder (`.\name`, `..\dir\name`; none when the child's place
 * is unknown, a stream on a pipe);
 * absolute_win32_path is the parent's Windows path (UNC on a share), else as the store spells it. For a POSIX path that is not a
 * Win32 path, but writing it as is lets a reader on the same machine find the parent, and a Windows
 * reader falls back to relative_path first anyway.
 */
export function childLocator(parent: Disk, parentGuid: string, finalLocation: Location | null): ParentLocator {
  const entries: Array<[string, string]> = [['parent_linkage', `{${parentGuid}}`]];
  if (finalLocation && parent.location.store === finalLocation.store) {
    const paths = finalLocation.store.paths;
    let rel = paths.relative(paths.dirname(finalLocation.path), parent.location.path).replace(/\//g, '\\');
    if (!rel.startsWith('..\\')) rel = `.\\${rel}`;
    entries.push(['relative_path', rel]);
  }
  const { store, path } = parent.location;
  entries.push(['absolute_win32_path', store.windowsPath?.(path) ?? store.display(path)]);
  return { type: VHDX_LOCATOR_TYPE, entries };
}

/** The header and region table of a new image whose BAT region is `batLength` bytes: fresh GUIDs, an empty log, the layout above. */
export function newHeaderAndRegions(batLength: number): { header: hdr.VhdxHeader; regions: rt.Region[] } {
  const header: hdr.VhdxHeader = {
    sequenceNumber: 1n,
    fileWriteGuid: newGuid(),
    dataWriteGuid: newGuid(),
    logGuid: Buffer.from(ZERO_GUID),
    logVersion: 0,
    version: 1,
    logLength: LOG_LENGTH,
    logOffset: LOG_OFFSET,
  };
  const regions: rt.Region[] = [
    { guid: rt.BAT_REGION, fileOffset: BAT_OFFSET, length: batLength, required: true },
    { guid: rt.METADATA_REGION, fileOffset: METADATA_OFFSET, length: METADATA_LENGTH, required: true },
  ];
  return { header, regions };
}

/** Checks and completes the creation options. */
async function plan(location: Location, opts: CreateOptions) {
  const subject = displayLocation(location);
  const differencing = opts.type === 'differencing';
  const parent = opts.parent;
  if (differencing !== Boolean(parent)) throw new UsageError(differencing ? 'a differencing image needs a parent' : `a ${opts.type} image has no parent`, subject);
  if (parent && parent.format !== 'vhdx') {
    throw new UnsupportedError(`a VHDX differencing image needs a VHDX parent (${displayLocation(parent.location)} is ${parent.format}; Hyper-V does not allow it)`, subject);
  }
  const logicalSectorSize = opts.logicalSectorSize ?? parent?.logicalSectorSize ?? 512;
  if (logicalSectorSize !== 512 && logicalSectorSize !== 4096) throw new UsageError(`logical sector size must be 512 or 4096 (got ${logicalSectorSize})`, subject);
  if (parent && logicalSectorSize !== parent.logicalSectorSize) throw new UsageError(`a child must have its parent's logical sector size (${parent.logicalSectorSize})`, subject);
  const physicalSectorSize = opts.physicalSectorSize ?? parent?.physicalSectorSize ?? 4096;
  if (physicalSectorSize !== 512 && physicalSectorSize !== 4096) throw new UsageError(`physical sector size must be 512 or 4096 (got ${physicalSectorSize})`, subject);
  if (physicalSectorSize < logicalSectorSize) throw new UsageError(`physical sector size ${physicalSectorSize} is smaller than the logical sector size ${logicalSectorSize}`, subject);
  const blockSize = opts.blockSize ?? (differencing ? DEFAULT_BLOCK_DIFFERENCING : DEFAULT_BLOCK_DYNAMIC);
  if (!isPowerOfTwo(blockSize) || blockSize < MIB || blockSize > 256 * MIB) throw new UsageError(`VHDX block size must be a power of two from 1 MiB to 256 MiB (got ${blockSize})`, subject);
  const virtualSize = parent ? parent.virtualSize : opts.virtualSize;
  if (parent && opts.virtualSize !== undefined && opts.virtualSize !== parent.virtualSize) throw new UsageError(`a child has its parent's size (${parent.virtualSize})`, subject);
  if (virtualSize === undefined) throw new UsageError('a size is needed (--size)', subject);
  if (!Number.isSafeInteger(virtualSize) || virtualSize <= 0 || virtualSize > md.MAX_VIRTUAL_SIZE || virtualSize % logicalSectorSize !== 0) {
    throw new UsageError(`VHDX size must be a multiple of ${logicalSectorSize} bytes from ${logicalSectorSize} to 64 TiB (got ${virtualSize})`, subject);
  }
  return { subject, differencing, parent, logicalSectorSize, physicalSectorSize, blockSize, virtualSize };
}

/** Creates a VHDX image at `location` (which must not exist) and returns it opened for writing. */
export async function createVhdx(location: Location, opts: CreateOptions): Promise<VhdxDisk> {
  const p = await plan(location, opts);
  const g = geometry(p.virtualSize, p.blockSize, p.logicalSectorSize, p.differencing);
  const batLength = regionLengthFor(g.totalEntries);
  const payloadStart = BAT_OFFSET + batLength;
  const bat = Bat.empty(g, batLength);
  let fileSize = payloadStart;
  if (p.differencing) {
    // Every chunk gets its sector bitmap block now, all zeros, left as a hole: libvhdi reads a chunk whose bitmap entry
    // is NOT_PRESENT as if its bitmap lay at file offset 0 and shows header bytes instead of the parent's (decision 0031).
    const chunks = Math.ceil(g.payloadBlocks / g.chunkRatio);
    for (let k = 0; k < chunks; k++) bat.set(bitmapIndex(g, k), { state: BITMAP.PRESENT, fileOffset: payloadStart + k * SECTOR_BITMAP_BLOCK_SIZE });
    fileSize = payloadStart + chunks * SECTOR_BITMAP_BLOCK_SIZE;
  }
  if (opts.type === 'fixed') {
    for (let i = 0; i < g.payloadBlocks; i++) bat.set(payloadIndex(g, i), { state: PAYLOAD.FULLY_PRESENT, fileOffset: payloadStart + i * p.blockSize });
    fileSize = payloadStart + g.payloadBlocks * p.blockSize;
  }
  const parentGuid = p.parent ? (opts.parentIdentity ?? (await p.parent.identity())).contentId : '';
  const meta: md.VhdxMetadata = {
    blockSize: p.blockSize,
    leaveBlockAllocated: opts.type === 'fixed',
    hasParent: p.differencing,
    virtualSize: p.virtualSize,
    logicalSectorSize: p.logicalSectorSize,
    physicalSectorSize: p.physicalSectorSize,
    page83: newGuid(),
    parentLocator: p.parent ? childLocator(p.parent, parentGuid, opts.finalLocation ?? location) : null,
  };
  const { header, regions } = newHeaderAndRegions(batLength);
  const file = await location.store.createExclusive(location.path, { syncIo: opts.syncIo, writeBehind: opts.writeBehind });
  try {
    const written = new NewFile(file, fileSize);
    await writeStructures(written, { header, regions, meta, bat, fileSize }, !opts.unpublished);
    // Parsed from the bytes just written, as a reader would, without reading them back (on a share: 4 round trips).
    const { layout } = await readLayout(written, p.subject, false);
    return new VhdxDisk(file, location, layout, new FileView(file), p.parent ?? null, true, opts.unpublished === true);
  } catch (err) {
    await file.close().catch(() => {});
    await location.store.unlink(location.path).catch(() => {});
    throw err;
  }
}

/**
 * Writes a new image's structures into its new (empty) file. Their trailing zeros are left out, since the file's
 * unwritten bytes read as zeros (an empty BAT is 1 MiB of them); the file is extended to its size last, which on a
 * share goes out behind the writes instead of waiting for a round trip first.
 */
async function writeStructures(
  file: NewFile,
  s: { header: hdr.VhdxHeader; regions: rt.Region[]; meta: md.VhdxMetadata; bat: Bat; fileSize: number },
  durable: boolean,
): Promise<void> {
  await file.write(0, fileId.serialize({ creator: 'vhdsync' }));
  const h = hdr.serialize(s.header);
  for (const o of hdr.HEADER_OFFSETS) await file.write(o, h);
  const table = rt.serialize(s.regions);
  for (const o of rt.REGION_TABLE_OFFSETS) await file.write(o, table);
  await file.write(METADATA_OFFSET, md.serializeItems(s.meta, METADATA_LENGTH));
  await file.write(BAT_OFFSET, s.bat.serialize());
  await file.truncate(s.fileSize);
  if (durable) await file.flush();
}

/**
 * A file just created (all zeros) as its writer fills it: each write goes to the file without its trailing zeros and
 * is kept, so the layout can be read back from memory. Only for the few structures of a new image.
 */
class NewFile implements RandomAccessFile {
  readonly writable = true;
  private readonly parts: Array<{ at: number; data: Buffer }> = [];

  constructor(
    private readonly file: RandomAccessFile,
    private readonly fileSize: number,
  ) {}

  get name(): string {
    return this.file.name;
  }

  async write(position: number, data: Uint8Array): Promise<void> {
    // Only the bytes before the trailing zeros are kept and written: a new diff's BAT and metadata regions are 1 MiB
    // each and almost all zeros, and a fresh copy of each cost 5-7 ms of page faults on a VM (docs/performance.md).
    const end = lengthWithoutTrailingZeros(data);
    if (end === 0) return;
    const kept = Buffer.from(data.subarray(0, end));
    this.parts.push({ at: position, data: kept });
    await this.file.write(position, kept);
  }

  /** Reads what was written, zeros elsewhere, up to the size the file will have. */
  async read(position: number, length: number, into?: Buffer): Promise<Buffer> {
    const n = Math.max(0, Math.min(length, this.fileSize - position));
    const out = (into ?? Buffer.allocUnsafe(length)).subarray(0, n);
    out.fill(0);
    for (const { at, data } of this.parts) {
      const from = Math.max(position, at);
      const to = Math.min(position + n, at + data.length);
      if (from < to) data.copy(out, from - position, from - at, to - at);
    }
    return out;
  }

  async size(): Promise<number> {
    return this.fileSize;
  }

  async truncate(size: number): Promise<void> {
    await this.file.truncate(size);
  }

  async flush(): Promise<void> {
    await this.file.flush();
  }

  async close(): Promise<void> {
    await this.file.close();
  }
}
