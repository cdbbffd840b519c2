/**
 * Whether the parent a merge is about to write is still the image the diff was made against. A VHD keeps its
 * UniqueId through writes, so the diff's ParentUniqueId alone does not tell; copy records the target's whole
 * identity in the diff's metafile (docs/metafile.md, version 2) and merge compares it before its first write.
 */
import type { DiskIdentity } from '../formats/disk.js';
import { identityProblem } from '../meta/index.js';

/** What the diff side says about the parent: the identity copy recorded, else when the diff was last written. */
export interface ParentRecord {
  /** From the diff's metafile (version 2); null for older or vbb metafiles, or none. */
  parentIdentity: DiskIdentity | null;
  /** mtime of the diff's metafile, or of the diff when it has none: the parent must not be newer. */
  writtenMs: number;
}

/**
 * Why `current` (the parent's identity, taken before it was opened writable) is not the parent the diff was
 * made against, or null. Without a recorded identity, a VHD or raw parent modified after the diff's metafile
 * (VhdBlockBackup's own staleness rule) is taken as changed; a VHDX parent is left to its parent_linkage check.
 */
export function parentChange(record: ParentRecord, current: DiskIdentity): string | null {
  if (record.parentIdentity) return identityProblem(record.parentIdentity, current)?.replace("the image's", 'its').replace('the image', 'it') ?? null;
  if (current.format === 'vhdx' || current.mtimeMs <= record.writtenMs) return null;
  return `it was modified at ${new Date(current.mtimeMs).toISOString()}, after the diff was written (${new Date(record.writtenMs).toISOString()})`;
}
