import type { Location } from '../io/location.js';
import type { RandomAccessFile, StoreStat } from '../io/store.js';

/** Formats the tool reads and writes. */
export type DiskFormat = 'raw' | 'vhd' | 'vhdx' | 'qcow2';

/** The allocation kind of an image. */
export type DiskType = 'raw' | 'fixed' | 'dynamic' | 'differencing';

/**
 * What a range of virtual content is, known from allocation tables without reading data.
 * - `data`: stored in layer `depth` of the chain (0 = this image); must be read.
 * - `zero`: known to read as zeros (for example a VHDX ZERO block), stored in layer `depth`.
 * - `unallocated`: present in no layer of the chain; reads as zeros.
 */
export type ExtentState = 'data' | 'zero' | 'unallocated';

/** What a status() caller needs to know. */
export interface StatusOptions {
  /**
   * Only this image's own content (depth 0) matters: a range it leaves to its parent is not looked up in the parent
   * but reported as one extent of depth 1, state `unallocated` (merge moves depth 0 and nothing else). A disk may
   * ignore it and answer in full: depth 0 is the same either way.
   */
  ownOnly?: boolean;
}

/** A run of virtual content with one state. */
export interface Extent {
  offset: number;
  length: number;
  state: ExtentState;
  /** The chain layer that decides this range: 0 for this image, 1 for its parent, ... */
  depth: number;
}

/**
 * Where a run of virtual content is stored: `length` bytes of the local file `path` from `fileOffset` (a file
 * that ends early reads as zeros past its end), or zeros when `path` is null.
 */
export interface FileRun {
  length: number;
  path: string | null;
  fileOffset: number;
}

/**
 * What identifies one version of an image's content, recorded in metafiles so a stale one is
 * detected. `contentId` changes whenever the format says the content changed (VHDX DataWriteGuid);
 * file size and mtime catch writers that do not update it.
 */
export interface DiskIdentity {
  format: DiskFormat;
  /** VHD UniqueId or VHDX DataWriteGuid, as text; empty for raw. */
  contentId: string;
  /** VHD footer timestamp (seconds since 2000-01-01), 0 otherwise. */
  timestamp: number;
  fileSize: number;
  mtimeMs: number;
}

/**
 * The size and mtime an identity records for an image file: what the store said when the file was closed, or, for a
 * file open read-only, when it was opened (SMB's CLOSE or CREATE reply: no round trip), else a stat by name.
 */
export async function identityStat(file: RandomAccessFile, location: Location): Promise<StoreStat | null> {
  return file.closedStat?.() ?? file.openedStat?.() ?? (await location.store.stat(location.path));
}

/**
 * Closes an image's file and its parent together (on a share, two closes in one round trip), throwing the first
 * failure once both are done.
 */
export async function closeBoth(file: RandomAccessFile, parent: Disk | null): Promise<void> {
  const [a, b] = await Promise.allSettled([file.close(), parent?.close()]);
  if (a.status === 'rejected') throw a.reason;
  if (b.status === 'rejected') throw b.reason;
}

/** Everything `info` shows: common fields plus format-specific ones. */
export type DiskInfo = Record<string, string | number | boolean | null | string[] | Record<string, unknown>>;

/** A virtual disk, seen through one interface whatever its format and wherever it is stored. */
export interface Disk {
  readonly format: DiskFormat;
  readonly type: DiskType;
  readonly location: Location;
  readonly virtualSize: number;
  readonly logicalSectorSize: number;
  readonly physicalSectorSize: number;
  /** Allocation unit of the format (VHD/VHDX block); for raw, 0. */
  readonly blockSize: number;
  readonly writable: boolean;
  /** The opened parent for differencing images. */
  readonly parent: Disk | null;
  /** The underlying file (for identity, sizes and durability). */
  readonly file: RandomAccessFile;

  /** Reads `length` bytes of virtual content at `offset`, resolving the parent chain. */
  read(offset: number, length: number, into?: Buffer): Promise<Buffer>;
  /** Describes [offset, offset+length) as extents, from allocation tables only. Extents are contiguous and cover the range. */
  status(offset: number, length: number, opts?: StatusOptions): Promise<Extent[]>;
  /** Writes virtual content; allocates blocks and sets presence bits as needed. */
  write(offset: number, data: Uint8Array): Promise<void>;
  /** Makes [offset, offset+length) read as zeros, deallocating or using zero states where the format allows. */
  writeZeroes(offset: number, length: number): Promise<void>;
  /** Makes all writes durable (data before the metadata that points at it). */
  flush(): Promise<void>;
  /** Flushes if writable, then closes this image and its parents. */
  close(): Promise<void>;
  identity(): Promise<DiskIdentity>;
  /**
   * Durably gives a writable image the content id `id` (GUID text as identity() reports it: VHD UniqueId, VHDX
   * DataWriteGuid), so children and metafiles made against the old content no longer match it. Absent for raw.
   * Idempotent; a VHDX keeps `id` for the rest of this open instead of renewing it at the first write.
   */
  setContentId?(id: string): Promise<void>;
  info(): Promise<DiskInfo>;
  /**
   * [offset, offset+length) as runs of local files' bytes and zeros, through the parent chain, so a reader can read
   * the files itself (meta/hash-direct.ts); null when part of it is not a plain byte range of a local file as it
   * is now (another store, compressed clusters, a log replayed in memory, writes not yet flushed).
   */
  mapFile?(offset: number, length: number): Promise<FileRun[] | null>;
}

/** Options for opening images. */
export interface OpenOptions {
  writable?: boolean;
  /** Accept a parent whose id does not match the child's record of it (VHDX parent_linkage, VHD ParentUniqueId). */
  ignoreParentMismatch?: boolean;
  /** Accept wrong VHD checksums (for recovery; never the default). */
  ignoreChecksums?: boolean;
  /** Force a format instead of detecting it by content. */
  format?: DiskFormat;
  /** VHD: take the virtual size from the CHS geometry or from current_size instead of the creator's rule. */
  vhdSize?: 'chs' | 'current';
  /** Local files of the chain read and write on the calling thread (OpenHints.syncIo): for merge's small pieces. */
  syncIo?: boolean;
  /** The writable image's local file starts writing back what it is given before a flush (OpenHints.writeBehind). */
  writeBehind?: boolean;
}

/** Options for creating images. */
export interface CreateOptions {
  format: DiskFormat;
  type: 'fixed' | 'dynamic' | 'differencing';
  /** Required unless differencing (then it comes from the parent). */
  virtualSize?: number;
  blockSize?: number;
  logicalSectorSize?: number;
  physicalSectorSize?: number;
  /** The opened parent, for differencing images. */
  parent?: Disk;
  /** The parent's identity as the caller has just read it (spares reading it again); read from `parent` when absent. */
  parentIdentity?: DiskIdentity;
  /**
   * The image is written under a temporary name that only a flush-then-rename publishes (io/atomic.ts): a crash
   * leaves a file nobody opens (the next run removes it), so a writer may skip the ordering it needs in place (VHDX:
   * its log and the flushes between data, BAT and headers; decision 0026). flush() still makes it durable.
   */
  unpublished?: boolean;
  /** A local file is written on the calling thread (OpenHints.syncIo): for copy's small pieces. */
  syncIo?: boolean;
  /** A local file starts writing back what it is given before the final flush (OpenHints.writeBehind). */
  writeBehind?: boolean;
  /**
   * Where the child will finally live, when it is written elsewhere first (a temp name, a --diffdir):
   * parent locators are computed from this place.
   */
  finalLocation?: Location;
}

/** Opens a parent image named by a child; provided by the generic opener so formats need not import it. */
export type ParentOpener = (candidates: Location[], child: Location, opts: OpenOptions, expect: ParentExpectation) => Promise<Disk>;

/** What a child records about its parent, to check the candidate found. */
export interface ParentExpectation {
  /** VHD: ParentUniqueId (hex of 16 bytes); VHDX: parent_linkage GUID text. */
  id: string;
  /** Human description of the id for messages, e.g. `ParentUniqueId` or `parent_linkage`. */
  idName: string;
  /** Which identity field of the parent must equal `id`. */
  matches(parent: Disk): Promise<boolean>;
  /** The parent's format when the child names it (QCOW2 backing-format extension); detected by content otherwise. */
  format?: DiskFormat;
}

/** One image format: how to recognise, open and create it. */
export interface FormatDriver {
  readonly name: DiskFormat;
  /** True when the file's content is of this format. */
  probe(file: RandomAccessFile): Promise<boolean>;
  open(file: RandomAccessFile, location: Location, opts: OpenOptions, openParent: ParentOpener): Promise<Disk>;
  /** Creates a new image at `location` (which must not exist) and returns it opened for writing. */
  create(location: Location, opts: CreateOptions): Promise<Disk>;
}
