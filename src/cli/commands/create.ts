import type { CommandModule } from 'yargs';
import { CATALOG } from './catalog.js';
import { createDisk, openDisk } from '../../formats/index.js';
import type { Disk } from '../../formats/disk.js';
import { parseLocation, displayLocation } from '../../io/location.js';
import { writeAtomically } from '../../io/atomic.js';
import { formatSize, parseSize } from '../../util/units.js';
import { UsageError } from '../../util/errors.js';
import { formatForOutput, OUTPUT_FORMATS, openOptionsFrom, withOpenOptions, type OpenArgs } from '../options.js';
import { out, outJson, withJson } from '../output.js';

interface CreateArgs extends OpenArgs {
  file: string;
  size?: string;
  format?: string;
  type?: string;
  'block-size'?: string;
  parent?: string;
  'logical-sector-size'?: number;
  'physical-sector-size'?: number;
  force?: boolean;
  json?: boolean;
}

/** `vhdsync create`: a new empty image, or a differencing image on a parent. */
export const createCommand: CommandModule<object, CreateArgs> = {
  ...CATALOG.create,
  builder: (y) =>
    withJson(withOpenOptions(y))
      .positional('file', { type: 'string', demandOption: true, describe: 'image to create' })
      .option('size', { type: 'string', describe: 'virtual size (16GiB, 100M, bytes); not with --parent' })
      .option('format', { choices: OUTPUT_FORMATS, describe: 'image format (default: from the file extension)' })
      .option('type', { choices: ['dynamic', 'fixed'] as const, describe: 'allocation (default dynamic)' })
      .option('block-size', { type: 'string', alias: 'cluster-size', describe: 'block size (VHD default 2MiB; VHDX 32MiB dynamic, 2MiB differencing); QCOW2 cluster size (default 64KiB)' })
      .option('parent', { type: 'string', describe: 'make a differencing image on this parent' })
      .option('logical-sector-size', { type: 'number', choices: [512, 4096], describe: 'VHDX logical sector size' })
      .option('physical-sector-size', { type: 'number', choices: [512, 4096], describe: 'VHDX physical sector size' })
      .option('force', { type: 'boolean', describe: 'replace an existing file' }) as never,
  handler: async (args) => {
    const format = formatForOutput(args.file, args.format);
    const target = await parseLocation(args.file);
    let parent: Disk | undefined;
    if (args.parent) {
      if (args.size) throw new UsageError('--size cannot be combined with --parent (the size comes from the parent)');
      if (args.type === 'fixed') throw new UsageError('a differencing image cannot be --type fixed');
      parent = await openDisk(args.parent, openOptionsFrom(args));
    } else if (!args.size) {
      throw new UsageError('--size is required (or --parent for a differencing image)');
    }
    try {
      const info = await writeAtomically(
        target,
        async (temp) => {
          const disk = await createDisk(temp, {
            format,
            type: parent ? 'differencing' : ((args.type ?? 'dynamic') as 'dynamic' | 'fixed'),
            virtualSize: args.size ? parseSize(args.size) : undefined,
            blockSize: args['block-size'] ? parseSize(args['block-size'], 'block size') : undefined,
            logicalSectorSize: args['logical-sector-size'],
            physicalSectorSize: args['physical-sector-size'],
            parent,
            finalLocation: target,
          });
          try {
            return { type: disk.type, virtualSize: disk.virtualSize, blockSize: disk.blockSize };
          } finally {
            await disk.close();
          }
        },
        { overwrite: args.force },
      );
      const file = displayLocation(target);
      if (args.json) outJson({ file, format, ...info, parent: parent ? displayLocation(parent.location) : null });
      else out(`created ${file}: ${format} ${info.type}, ${formatSize(info.virtualSize)}${parent ? `, parent ${displayLocation(parent.location)}` : ''}`);
    } finally {
      await parent?.close();
    }
  },
};
