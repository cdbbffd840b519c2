/** vhdsync as a library: open, create and convert disk images through one Disk model. */
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
