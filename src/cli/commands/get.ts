import type { CommandModule } from 'yargs';
import { CATALOG } from './catalog.js';
import { openDisk } from '../../formats/index.js';
import type { Disk } from '../../formats/disk.js';
import { displayLocation } from '../../io/location.js';
import { UsageError } from '../../util/errors.js';
import { openOptionsFrom, withOpenOptions, type OpenArgs } from '../options.js';
import { out } from '../output.js';
import { describeDisk } from './info.js';

interface GetArgs extends OpenArgs {
  file: string;
  field: string;
}

/** Fields every format has, computed from the Disk model rather than from format-specific info keys. */
const COMMON: Record<string, (d: Disk) => Promise<string | number>> = {
  format: async (d) => d.format,
  type: async (d) => d.type,
  'virtual-size': async (d) => d.virtualSize,
  'block-size': async (d) => d.blockSize,
  'logical-sector-size': async (d) => d.logicalSectorSize,
  'physical-sector-size': async (d) => d.physicalSectorSize,
  'file-size': async (d) => d.file.size(),
  uuid: async (d) => (await d.identity()).contentId,
  parent: async (d) => (d.parent ? displayLocation(d.parent.location) : ''),
  'parent-uuid': async (d) => (d.parent ? (await d.parent.identity()).contentId : ''),
};

const kebab = (k: string) => k.replace(/([a-z0-9])([A-Z])/g, '$1-$2').toLowerCase();

/** `vhdsync get FILE FIELD`: one field, printed bare for scripts (like `vhd-tool get`). */
export const getCommand: CommandModule<object, GetArgs> = {
  ...CATALOG.get,
  builder: (y) =>
    withOpenOptions(y, true)
      .positional('file', { type: 'string', demandOption: true })
      .positional('field', { type: 'string', demandOption: true, describe: 'field name; `vhdsync get FILE list` lists them' }) as never,
  handler: async (args) => {
    const disk = await openDisk(args.file, openOptionsFrom(args));
    try {
      const field = args.field.toLowerCase();
      if (COMMON[field]) {
        out(String(await COMMON[field](disk)));
        return;
      }
      const info = await describeDisk(disk);
      const extra = Object.fromEntries(Object.entries(info).map(([k, v]) => [kebab(k), v]));
      if (field === 'list') {
        for (const name of [...new Set([...Object.keys(COMMON), ...Object.keys(extra)])].sort()) out(name);
        return;
      }
      if (!(field in extra)) {
        throw new UsageError(`unknown field '${args.field}' (try: ${Object.keys(COMMON).join(', ')}; 'list' shows all)`);
      }
      const v = extra[field];
      out(v === null ? '' : Array.isArray(v) ? v.join('\n') : typeof v === 'object' ? JSON.stringify(v) : String(v));
    } finally {
      await disk.close();
    }
  },
};
