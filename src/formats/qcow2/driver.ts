/** The QCOW2 format driver; the reader and writer load on the first QCOW2 opened or created (start-up, decision 0015). */
import type { FormatDriver } from '../disk.js';
import { hasMagic } from './header.js';

/** Recognises, opens and creates QCOW2 images. */
export const qcow2Driver: FormatDriver = {
  name: 'qcow2',
  // Version 1 (qcow) is another format, named by the container signatures; versions past 3 are ours to refuse by number.
  async probe(file) {
    const head = await file.read(0, 8);
    return hasMagic(head) && head.length === 8 && head.readUInt32BE(4) >= 2;
  },
  open: async (file, location, opts, openParent) => (await import('./open-image.js')).openQcow2(file, location, opts, openParent),
  create: async (location, opts) => (await import('./create.js')).createQcow2(location, opts),
};
