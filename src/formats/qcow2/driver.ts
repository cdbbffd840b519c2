/** The QCOW2 format driver. */
import type { FormatDriver } from '../disk.js';
import { hasMagic } from './header.js';
import { openQcow2 } from './open-image.js';
import { createQcow2 } from './create.js';

/** Recognises, opens and creates QCOW2 images. */
export const qcow2Driver: FormatDriver = {
  name: 'qcow2',
  // Version 1 (qcow) is another format, named by the container signatures; versions past 3 are ours to refuse by number.
  async probe(file) {
    const head = await file.read(0, 8);
    return hasMagic(head) && head.length === 8 && head.readUInt32BE(4) >= 2;
  },
  open: openQcow2,
  create: createQcow2,
};
