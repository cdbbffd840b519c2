/** The VHDX format driver; the reader and writer load on the first VHDX opened or created (start-up, decision 0015). */
import type { FormatDriver } from '../disk.js';
import { hasSignature } from './file-identifier.js';

/** Recognises, opens and creates VHDX images. */
export const vhdxDriver: FormatDriver = {
  name: 'vhdx',
  async probe(file) {
    return hasSignature(await file.read(0, 8));
  },
  open: async (file, location, opts, openParent) => (await import('./vhdx-disk.js')).openVhdx(file, location, opts, openParent),
  create: async (location, opts) => (await import('./create.js')).createVhdx(location, opts),
};
