/**
 * What `serve` exports from: a folder of images (catalog.ts) or a backup repository's restore points
 * (repo-catalog.ts). Exports and the listing see only this seam; imports need a folder and use the Catalog itself.
 */
import type { Disk } from '../formats/disk.js';
import type { Metafile } from '../meta/index.js';

/** A disk opened for one export; close it exactly once. */
export interface ExportedDisk {
  disk: Disk;
  /**
   * The list of the disk's content when the source keeps one that is known to match (a restore point's): a `base=`
   * delta between two such disks is then found from their digests without reading either.
   */
  list: Metafile | null;
  /**
   * Whether a full export reads the data first to drop all-zero runs its allocation does not show (images); false
   * for restore points, whose allocation is what the backup found, so their blocks are fetched once, not twice.
   */
  zeroScan: boolean;
  close(): Promise<void>;
}

/** The disks a server offers for export. */
export interface DiskSource {
  /** Checks the source is there and usable (before the server listens). */
  init(): Promise<void>;
  /** What `GET /` returns: one entry per exportable disk. */
  list(): Promise<object[]>;
  /**
   * Resolves a `vdi=` or `base=` value to the canonical name of one disk; anything that names none is a 404
   * (RequestError), a missing value a 400.
   */
  resolve(text: string | undefined, what: 'vdi' | 'base'): Promise<string>;
  /** Opens a resolved disk for reading, holding whatever keeps it readable until `close`. */
  openExport(name: string): Promise<ExportedDisk>;
  /** A message with where the disks live on the server's side taken out (clients learn names, not places). */
  hide(message: string): string;
}
