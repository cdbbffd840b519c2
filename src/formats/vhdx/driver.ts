/** The VHDX format driver. */
import type { FormatDriver } from '../disk.js';
import { hasSignature } from './file-identifier.js';
import { openVhdx } from './vhdx-disk.js';
import { createVhdx } from './create.js';

/** Recognises, opens and creates VHDX images. */
export const vhdxDriver: FormatDriver = {
  name: 'vhdx',
  async probe(file) {
    return hasSignature(await file.read(0, 8));
  },
  open: openVhdx,
  create: createVhdx,
};
