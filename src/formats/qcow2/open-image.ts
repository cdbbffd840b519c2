/** Opening a QCOW2 image: its layout, external data file and backing chain, read-only or for writing. */
import { notice } from '../../util/notice.js';
import type { Disk, OpenOptions, ParentOpener } from '../disk.js';
import { displayLocation, type Location } from '../../io/location.js';
import type { RandomAccessFile } from '../../io/store.js';
import { fromSystemError } from '../../util/errors.js';
import * as hdr from './header.js';
import { readLayout } from './layout.js';
import { backingFormat, resolveStoredName } from './names.js';
import { Qcow2Disk } from './qcow2-disk.js';

/** Opens a QCOW2 image with its external data file and backing chain (the backing files always read-only). */
export async function openQcow2(file: RandomAccessFile, location: Location, opts: OpenOptions, openParent: ParentOpener): Promise<Qcow2Disk> {
  const subject = displayLocation(location);
  const layout = await readLayout(file, subject);
  const h = layout.header;
  const writable = Boolean(opts.writable && file.writable);
  // The writer loads only for writable opens: reading (createmeta, the direct path) skips its modules.
  const writer = writable ? await import('./writable-disk.js') : null;
  if (writer) writer.checkWritable(h, layout.extensions, subject);
  else if (h.incompatible & hdr.INCOMPAT.CORRUPT) {
    notice(subject, 'warning: the image is marked corrupt (incompatible bit 1); reading it anyway, never writing it');
  }
  let dataFile: RandomAccessFile | null = null;
  let parent: Disk | null = null;
  try {
    if (h.incompatible & hdr.INCOMPAT.DATA_FILE) {
      const loc = resolveStoredName(location, layout.extensions.dataFile!, 'external data file', subject);
      dataFile = await loc.store.open(loc.path, writable ? 'readwrite' : 'read').catch((err: unknown) => {
        throw fromSystemError(err, `${subject}: external data file ${displayLocation(loc)}`);
      });
    }
    if (layout.backingName !== null) {
      const format = backingFormat(layout.extensions.backingFormat, subject);
      const loc = resolveStoredName(location, layout.backingName, 'backing file', subject);
      parent = await openParent([loc], location, { ...opts, writable: false }, { id: layout.backingName, idName: 'backing file', format, matches: async () => true });
    }
  } catch (err) {
    await dataFile?.close();
    throw err;
  }
  if (!writer) return new Qcow2Disk(file, location, layout, parent, dataFile);
  const disk = new writer.Qcow2WritableDisk(file, location, layout, parent, dataFile);
  try {
    const changed = await disk.repairIfDirty();
    if (changed !== null) process.stderr.write(`vhdsync: ${subject}: warning: the image was left dirty by a writer that stopped; refcounts rebuilt (${changed} clusters corrected)\n`);
  } catch (err) {
    await disk.close().catch(() => {});
    throw err;
  }
  return disk;
}
