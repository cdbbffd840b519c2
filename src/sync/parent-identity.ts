/**
 * Whether the parent a merge is about to write is still the image the diff was made against. A VHD keeps its
 * UniqueId through writes, so the diff's ParentUniqueId alone does not tell; copy records the target's whole
 * identity in the diff's metafile (docs/metafile.md, version 2) and merge compares it before its first write.
 */
import type { DiskIdentity } from '../formats/disk.js';
import { identityProblem } from '../meta/fresh.js';

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
  if (record.parentIdentity) return about(identityProblem(record.parentIdentity, current), 'copy checked it at');
  if (current.format === 'vhdx' || current.mtimeMs <= record.writtenMs) return null;
  return `it was modified at ${new Date(current.mtimeMs).toISOString()}, after the diff was written (${new Date(record.writtenMs).toISOString()})`;
}

/** What a merge state file records about the parent (see merge-state.ts). */
interface RecordedParent {
  step: 'merging' | 'rotating' | 'cleanup';
  parentBefore: { contentId: string; fileSize: number; mtimeMs: number };
  parentId?: string;
  parentFinal?: { contentId: string; fileSize: number; mtimeMs: number };
}

/**
 * Why a resumed merge must not continue into `current`, or null. While merging, the parent must carry the id this
 * merge gives it, or still be exactly as it was before (killed before the id reached it); once the data step has
 * closed it, its whole identity must be the one recorded then. In `cleanup` the parent's part is over.
 */
export function resumeProblem(state: RecordedParent, current: DiskIdentity): string | null {
  if (state.step === 'merging') {
    if (state.parentId === undefined || current.contentId === state.parentId) return null;
    const b = state.parentBefore;
    if (current.contentId === b.contentId && current.fileSize === b.fileSize && current.mtimeMs === b.mtimeMs) return null;
    return `its id is ${current.contentId || '(none)'}, the merge gave it ${state.parentId}`;
  }
  if (state.step === 'cleanup' || !state.parentFinal) return null;
  const f = state.parentFinal;
  return about(identityProblem({ ...current, ...f }, current, true), 'the merge ended at');
}

/** identityProblem's sentence said of the parent, with what the recorded time was. */
function about(why: string | null, recordedAt: string): string | null {
  return why?.replace("the image's", 'its').replace('the image', 'it').replace("the metafile's record of", recordedAt) ?? null;
}
