/**
 * New QCOW2 images (version 3, standard L2 entries, 16-bit refcounts), laid out as qemu-img lays them out: header
 * cluster (header, backing-format extension, backing file name), refcount table, refcount blocks, L1 table.
 */
import type { CreateOptions, Disk } from '../disk.js';
import { displayLocation, type Location } from '../../io/location.js';
import { UnsupportedError, UsageError } from '../../util/errors.js';
import { allOnesRefcountBlock, clusterBitsOf, headerCluster, l1SizeFor, QEMU_FORMAT_NAMES, refcountSpace, refcountTable } from './new-image.js';
import { readLayout } from './layout.js';
import { Qcow2WritableDisk } from './writable-disk.js';

/** Cluster size of images we create unless told otherwise (qemu-img's default). */
export const DEFAULT_CLUSTER_SIZE = 64 * 1024;

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
  const clusterBits = clusterBitsOf(cs, subject);
  const requested = opts.virtualSize ?? parent?.virtualSize;
  if (requested === undefined) throw new UsageError('a size is needed (--size)', subject);
  // qemu works in 512-byte sectors: round up as qemu-img create does.
  const size = Math.ceil(requested / 512) * 512;
  const l1Size = l1SizeFor(size, cs, subject);
  const l1Clusters = Math.ceil((l1Size * 8) / cs);
  const { blocks, tableClusters } = refcountSpace(1 + l1Clusters, cs, subject);
  const total = 1 + tableClusters + blocks + l1Clusters;
  const backing = parent ? { name: backingNameFor(parent, opts.finalLocation ?? location), format: QEMU_FORMAT_NAMES[parent.format] } : null;
  const image = Buffer.alloc(total * cs);
  const head = { clusterBits, size, l1Size, l1TableOffset: (1 + tableClusters + blocks) * cs, refcountTableOffset: cs, refcountTableClusters: tableClusters, backing };
  headerCluster(head, subject).copy(image, 0);
  refcountTable(tableClusters, blocks, (1 + tableClusters) * cs, cs).copy(image, cs);
  for (let b = 0; b < blocks; b++) allOnesRefcountBlock(b, total, cs).copy(image, (1 + tableClusters + b) * cs);
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
