/**
 * The merge state file `<parent>.merge-state.json`: what a merge in progress was doing, so a rerun after a
 * crash finishes the job instead of guessing. One JSON object, always replaced atomically (temp + flush + rename).
 */
import type { Location } from '../io/location.js';
import { displayLocation, sibling } from '../io/location.js';
import { readSmallFile, writeBytesAtomically } from '../io/atomic.js';
import { MetafileError } from '../util/errors.js';
import { parseJsonObject } from '../util/json-object.js';

/** Suffix appended to the parent's file name. */
export const MERGE_STATE_SUFFIX = '.merge-state.json';

/** A state file larger than this is not ours: refuse it instead of parsing megabytes of JSON. */
const MAX_STATE_BYTES = 64 << 10;

/**
 * The steps of a merge, in order. `merging`: data is being folded in (progress in `doneOffset`);
 * `rotating`: data is complete and flushed, the metafile is being replaced; `cleanup`: the parent and its
 * metafile are final, the diff and its metafile are being removed.
 */
export type MergeStep = 'merging' | 'rotating' | 'cleanup';

const STEPS: readonly MergeStep[] = ['merging', 'rotating', 'cleanup'];

/** What identified the parent before the merge touched it (for messages and forensics). */
export interface ParentBefore {
  contentId: string;
  fileSize: number;
  mtimeMs: number;
}

/** The content of a merge state file. Version 1 (no parentId/parentFinal) is still read; version 2 is written. */
export interface MergeState {
  version: 1 | 2;
  /** The diff's path in its store, as opened. */
  diff: string;
  /** The diff's own content id (VHD UniqueId / VHDX DataWriteGuid) so a different file under that name is not taken for it. */
  diffId: string;
  /** The parent's path in its store. */
  parent: string;
  parentBefore: ParentBefore;
  /**
   * The content id (VHD UniqueId / VHDX DataWriteGuid) this merge gives the parent, recorded before its first write:
   * a resumed merge refuses a parent carrying any other (someone else wrote to it). Empty for raw; absent in version 1.
   */
  parentId?: string;
  /** The parent's identity once the data step closed it (steps `rotating`, `cleanup`): nothing of ours writes it after. */
  parentFinal?: ParentBefore;
  step: MergeStep;
  /** Every depth-0 extent of the diff below this virtual offset is in the parent and flushed. */
  doneOffset: number;
  bytesMerged: number;
  extentsMerged: number;
  virtualSize: number;
  keepDiff: boolean;
  startedAt: string;
  /** The parent's metafile once the rotation wrote it (null: the diff had none). */
  metafile?: string | null;
}

/** Where the state file of a merge into `parent` lives. */
export function mergeStateLocationFor(parent: Location): Location {
  return sibling(parent, parent.store.paths.basename(parent.path) + MERGE_STATE_SUFFIX);
}

/** Parses and checks a state file's bytes; `subject` names the file in errors. */
export function parse(bytes: Uint8Array, subject?: string): MergeState {
  const bad = (why: string) => new MetafileError(`not a valid merge state file: ${why} (delete it only if no merge is pending)`, subject);
  const o = parseJsonObject(bytes, MAX_STATE_BYTES, bad);
  if (o.version !== 1 && o.version !== 2) throw bad(`unknown version ${String(o.version)}`);
  const str = (k: string): string => {
    if (typeof o[k] !== 'string') throw bad(`field ${k} missing`);
    return o[k] as string;
  };
  const num = (x: unknown, k: string): number => {
    if (typeof x !== 'number' || !Number.isSafeInteger(x) || x < 0) throw bad(`field ${k} is not a non-negative integer`);
    return x;
  };
  const step = str('step') as MergeStep;
  if (!STEPS.includes(step)) throw bad(`unknown step '${step}'`);
  const identity = (k: string): ParentBefore => {
    const pb = o[k] as Record<string, unknown> | undefined;
    if (typeof pb !== 'object' || pb === null || typeof pb.contentId !== 'string') throw bad(`field ${k} missing`);
    return { contentId: pb.contentId, fileSize: num(pb.fileSize, `${k}.fileSize`), mtimeMs: Number(pb.mtimeMs) || 0 };
  };
  const state: MergeState = {
    version: o.version,
    diff: str('diff'),
    diffId: str('diffId'),
    parent: str('parent'),
    parentBefore: identity('parentBefore'),
    step,
    doneOffset: num(o.doneOffset, 'doneOffset'),
    bytesMerged: num(o.bytesMerged, 'bytesMerged'),
    extentsMerged: num(o.extentsMerged, 'extentsMerged'),
    virtualSize: num(o.virtualSize, 'virtualSize'),
    keepDiff: o.keepDiff === true,
    startedAt: str('startedAt'),
  };
  if (typeof o.metafile === 'string' || o.metafile === null) state.metafile = o.metafile;
  if (o.version === 2) {
    state.parentId = str('parentId');
    if (step !== 'merging') state.parentFinal = identity('parentFinal');
  }
  if (state.doneOffset > state.virtualSize) throw bad('doneOffset is past the end of the disk');
  return state;
}

/** Serializes a state for writing. */
export function serialize(state: MergeState): Buffer {
  return Buffer.from(JSON.stringify(state, null, 2) + '\n', 'utf8');
}

/** Reads the state file at `loc`, or null when there is none. */
export async function readMergeState(loc: Location): Promise<MergeState | null> {
  const subject = displayLocation(loc);
  const bytes = await readSmallFile(loc, MAX_STATE_BYTES, () => new MetafileError('not a valid merge state file: too large', subject));
  return bytes && parse(bytes, subject);
}

/** Replaces the state file atomically: a crash leaves either the old state or the new one, never a torn file. */
export async function writeMergeState(loc: Location, state: MergeState): Promise<void> {
  await writeBytesAtomically(loc, serialize(state), { overwrite: true });
}

/** Removes the state file (the last step of a merge) and makes the removal durable. */
export async function removeMergeState(loc: Location): Promise<void> {
  if (await loc.store.stat(loc.path)) await loc.store.unlink(loc.path);
  await loc.store.syncDir(loc.store.paths.dirname(loc.path));
}
