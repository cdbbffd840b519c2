/** The QCOW2 format driver. */
import type { FormatDriver } from '../disk.js';
import { displayLocation } from '../../io/location.js';
import { UnsupportedError } from '../../util/errors.js';
import { hasMagic } from './header.js';
import { openQcow2 } from './qcow2-disk.js';

/** Recognises and opens QCOW2 images (creating them is not supported yet). */
export const qcow2Driver: FormatDriver = {
  name: 'qcow2',
  // Version 1 (qcow) is another format, named by the container signatures; versions past 3 are ours to refuse by number.
  async probe(file) {
    const head = await file.read(0, 8);
    return hasMagic(head) && head.length === 8 && head.readUInt32BE(4) >= 2;
  },
  open: openQcow2,
  async create(location) {
    throw new UnsupportedError('creating QCOW2 images is not supported yet', displayLocation(location));
  },
};
