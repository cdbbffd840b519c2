/** Registers every built-in format; import this once before opening images. */
import { registerFormat } from './open.js';
import { rawDriver } from './raw/raw-disk.js';
import { vhdDriver } from './vhd/vhd-disk.js';
import { vhdxDriver } from './vhdx/driver.js';
import { qcow2Driver } from './qcow2/driver.js';

registerFormat(rawDriver);
registerFormat(vhdDriver);
registerFormat(vhdxDriver);
registerFormat(qcow2Driver);

export { openDisk, createDisk, chainOf, formatDriver, registeredFormats } from './open.js';
export type * from './disk.js';
