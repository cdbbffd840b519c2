/** vhdsync as a library: disk images through one Disk model, metafiles, and the copy/merge workflow. */
import './formats/index.js';
import './io/schemes.js';

export { openDisk, createDisk, chainOf, registeredFormats } from './formats/index.js';
export type { Disk, DiskFormat, DiskType, DiskIdentity, DiskInfo, Extent, ExtentState, OpenOptions, CreateOptions } from './formats/disk.js';
export { copyDiskContent, type TransferStats } from './formats/transfer.js';
export { parseLocation, displayLocation, type Location } from './io/location.js';
export type { ByteStore, RandomAccessFile } from './io/store.js';
export { writeAtomically } from './io/atomic.js';
export * from './util/errors.js';
export { parseSize, formatSize } from './util/units.js';

// Metafiles: per-block digests of virtual content (docs/metafile.md).
export {
  readMetafile,
  writeMetafile,
  metafileLocationFor,
  createMetafile,
  compareMetafiles,
  changedRanges,
  checkFresh,
  hashDisk,
  Metafile,
} from './meta/index.js';
export type { CreateMetafileOptions, CreateMetafileResult, Comparison, BlockRange, HashAlgorithm } from './meta/index.js';

// The backup workflow: copy changed blocks into a differencing image, merge it into its parent.
export { copyToDiff, diffNameFor, type CopyOptions, type CopySummary } from './sync/copy.js';
export { mergeDiff, type MergeOptions, type MergeSummary } from './sync/merge.js';
