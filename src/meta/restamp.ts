/**
 * Re-stamping a list with a new image identity: after a merge, the diff's list describes the parent's new content
 * and becomes the parent's list. A native list's entries and sub-digest table are copied byte for byte behind a new
 * header instead of being decoded and encoded entry by entry (which cost 0.1-0.8 s for 65 536 entries at the end of
 * every merge; docs/performance.md, merge).
 */
import type { DiskIdentity } from '../formats/disk.js';
import { writeSizedAtomically } from '../io/atomic.js';
import type { Location } from '../io/location.js';
import { HEADER_SIZE, entrySize, serializeHeader, subSlotSize } from './header.js';
import { TRAILER_SIZE } from './entries.js';
import { finishNative, headerFor, readMetafile, writableFields, writeMetafile, type Metafile, type ReadMetafileOptions } from './metafile.js';

/**
 * Writes `list` to `to` (atomically; `to` may be the list's own file) recording `identity` and `parentIdentity` (none
 * unless given: a diff's list names its parent); the logical sector size comes from the list, or `logicalSectorSize`
 * for a vbb list, which records neither and is copied.
 */
export async function restampList(
  list: Metafile,
  to: Location,
  identity: DiskIdentity,
  logicalSectorSize = 512,
  parentIdentity: DiskIdentity | null = null,
): Promise<void> {
  const s = list.summary;
  const fields = { ...writableFields(list), logicalSectorSize: s.logicalSectorSize ?? logicalSectorSize, identity, parentIdentity };
  if (s.layout !== 'native') return writeMetafile(to, fields, list.records());
  const header = headerFor(fields);
  const trailerPos = HEADER_SIZE + s.blockCount * entrySize(s.digestLength) + (s.sub ? s.blockCount * subSlotSize(s.blockSize, s.sub) : 0);
  await writeSizedAtomically(
    to,
    trailerPos + TRAILER_SIZE,
    async (file) => {
      await file.write(0, serializeHeader(header));
      const { listCrc, tableCrc } = await list.copyBody(file);
      await finishNative(file, header, trailerPos, listCrc, tableCrc);
    },
    { overwrite: true },
  );
}

/** Writes the list of metafile `from` to `to` (atomically; `to` may equal `from`) recording a new image identity. */
export async function restampMetafile(from: Location, to: Location, identity: DiskIdentity, opts: ReadMetafileOptions = {}): Promise<void> {
  const list = await readMetafile(from, opts);
  try {
    await restampList(list, to, identity);
  } finally {
    await list.close();
  }
}
