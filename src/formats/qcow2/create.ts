/**
 * New QCOW2 images (version 3, standard L2 entries, 16-bit refcounts), laid out as qemu-img lays them out: header
 * cluster (header, backing-format extension, backing file name), refcount table, refcount blocks, L1 table.
 */
import type { CreateOptions, Disk, DiskFormat } from '../disk.js';
import { displayLocation, type Location } from '../../io/location.js';
import { UnsupportedError, UsageError } from '../../util/errors.js';
import * as hdr from './header.js';
import * as ext from './extensions.js';
import { setEntry } from './refcount.js';
import { readLayout } from './layout.js';
import { Qcow2WritableDisk } from './writable-disk.js';

/** Cluster size of images we create unless told otherwise (qemu-img's default). */
export const DEFAULT_CLUSTER_SIZE = 64 * 1024;
const REFCOUNT_ORDER = 4;
/** qemu's names for the formats a backing-format extension may name. */
const QEMU_FORMAT_NAMES: Record<DiskFormat, string> = { qcow2: 'qcow2', raw: 'raw', vhd: 'vpc', vhdx: 'vhdx' };

/** The backing file name an overlay at `final` stores for `parent`: relative to the overlay's folder when they share a store. */
function backingNameFor(parent: Disk, final: Location): string {
  if (parent.location.store !== final.store) throw new UnsupportedError(`a QCOW2 overlay and its backing file must be in the same store (${displayLocation(parent.location)})`, displayLocation(final));
  const paths = final.store.paths;
  return paths.relative(paths.dirname(final.path), parent.location.path);
}

/** Creates a dynamic QCOW2 image (an overlay when `opts.parent` is set) and returns it opened for writing. */
export async function createQcow2(location: Location, opts: CreateOptions): Promise<Disk> {
  const subject = displayLocation(location);
  if (opts.type === 'fixed') throw new UnsupportedError('fixed (preallocated) QCOW2 images are not supported: use dynamic', subject);
  const parent = opts.parent ?? null;
  if ((opts.type === 'differencing') !== Boolean(parent)) throw new UsageError(parent ? `a ${opts.type} image has no parent` : 'a differencing image needs a parent', subject);
  const cs = opts.blockSize ?? DEFAULT_CLUSTER_SIZE;
  const clusterBits = Math.log2(cs);
  if (!Number.isInteger(clusterBits) || clusterBits < hdr.MIN_CLUSTER_BITS || clusterBits > hdr.MAX_CLUSTER_BITS) {
    throw new UsageError(`QCOW2 cluster size must be a power of two from 512 bytes to 2 MiB, not ${cs}`, subject);
  }
  const requested = opts.virtualSize ?? parent?.virtualSize;
  if (requested === undefined) throw new UsageError('a size is needed (--size)', subject);
  // qemu works in 512-byte sectors: round up as qemu-img create does.
  const size = Math.ceil(requested / 512) * 512;
  const l1Size = Math.max(1, Math.ceil(size / ((cs / 8) * cs)));
  if (l1Size * 8 > hdr.MAX_L1_BYTES) throw new UsageError(`a ${size}-byte QCOW2 needs bigger clusters than ${cs} bytes (its L1 table would pass qemu's limit)`, subject);
  const l1Clusters = Math.ceil((l1Size * 8) / cs);
  const perBlock = (cs * 8) / 2 ** REFCOUNT_ORDER;
  // Refcount blocks and table must count themselves too: iterate to the fixed point.
  let blocks = 1;
  let tableClusters = 1;
  for (;;) {
    const total = 1 + tableClusters + blocks + l1Clusters;
    const b = Math.ceil(total / perBlock);
    const t = Math.ceil((b * 8) / cs);
    if (b === blocks && t === tableClusters) break;
    blocks = b;
    tableClusters = t;
  }
  const total = 1 + tableClusters + blocks + l1Clusters;
  const backingName = parent ? backingNameFor(parent, opts.finalLocation ?? location) : null;
  const extensions = ext.serialize(parent ? QEMU_FORMAT_NAMES[parent.format] : null);
  const headerLength = 112;
  const nameBytes = backingName === null ? null : Buffer.from(backingName, 'utf8');
  if (nameBytes && nameBytes.length > hdr.MAX_BACKING_NAME) throw new UsageError(`the backing file name is longer than ${hdr.MAX_BACKING_NAME} bytes`, subject);
  if (headerLength + extensions.length + (nameBytes?.length ?? 0) > cs) throw new UsageError('the backing file name does not fit in the header cluster: use bigger clusters', subject);
  const header: hdr.Qcow2Header = {
    version: 3,
    backingFileOffset: nameBytes ? headerLength + extensions.length : 0,
    backingFileSize: nameBytes?.length ?? 0,
    clusterBits,
    clusterSize: cs,
    size,
    cryptMethod: 0,
    l1Size,
    l1TableOffset: (1 + tableClusters + blocks) * cs,
    refcountTableOffset: cs,
    refcountTableClusters: tableClusters,
    nbSnapshots: 0,
    snapshotsOffset: 0,
    incompatible: 0n,
    compatible: 0n,
    autoclear: 0n,
    refcountOrder: REFCOUNT_ORDER,
    headerLength,
    compressionType: hdr.COMPRESSION_DEFLATE,
  };
  const image = Buffer.alloc(total * cs);
  hdr.serialize(header).copy(image, 0);
  extensions.copy(image, headerLength);
  nameBytes?.copy(image, header.backingFileOffset);
  for (let b = 0; b < blocks; b++) image.writeBigUInt64BE(BigInt((1 + tableClusters + b) * cs), cs + b * 8);
  const blockArea = image.subarray((1 + tableClusters) * cs, (1 + tableClusters + blocks) * cs);
  for (let c = 0; c < total; c++) setEntry(blockArea.subarray(Math.floor(c / perBlock) * cs), c % perBlock, 2 ** REFCOUNT_ORDER, 1);
  const file = await location.store.createExclusive(location.path);
  try {
    await file.write(0, image);
    await file.flush();
    const layout = await readLayout(file, subject);
    return new Qcow2WritableDisk(file, location, layout, parent, null);
  } catch (err) {
    await file.close().catch(() => {});
    await location.store.unlink(location.path).catch(() => {});
    throw err;
  }
}
