import type { CommandModule, Options } from 'yargs';
import type { FastCommand } from '../fast-args.js';
import { CATALOG } from './catalog.js';
import { createDisk, openDisk } from '../../formats/index.js';
import { copyDiskContent } from '../../formats/transfer.js';
import { displayLocation, parseLocation } from '../../io/location.js';
import { writeAtomically } from '../../io/atomic.js';
import { createProgress } from '../../util/progress.js';
import { formatSize, parseSize } from '../../util/units.js';
import { formatForOutput, OUTPUT_FORMATS, openOptionSpecs, openOptionsFrom, type OpenArgs } from '../options.js';
import { JSON_OPTION, out, outJson, wantProgress, type GlobalArgs } from '../output.js';

interface ConvertArgs extends OpenArgs, GlobalArgs {
  src: string;
  dst: string;
  format?: string;
  type?: string;
  'block-size'?: string;
  'logical-sector-size'?: number;
  force?: boolean;
}

/** convert's options (its positionals aside), as data: yargs reads them, and so does the fast path (fast-args.ts). */
export function convertOptions(): Record<string, Options> {
  return {
    ...openOptionSpecs(),
    json: JSON_OPTION,
    format: { choices: OUTPUT_FORMATS, describe: 'output format (default: from the extension of DST)' },
    type: { choices: ['dynamic', 'fixed'] as const, describe: 'output allocation (default dynamic)' },
    'block-size': { type: 'string', alias: 'cluster-size', describe: 'output block size (QCOW2: cluster size, default 64KiB)' },
    'logical-sector-size': { type: 'number', choices: [512, 4096], describe: 'VHDX output logical sector size (default: the source)' },
    force: { type: 'boolean', describe: 'replace DST if it exists' },
  };
}

/** `vhdsync convert`: flattens an image (and its chain) into a new image of any format. */
export const convertCommand: CommandModule<object, ConvertArgs> & FastCommand = {
  ...CATALOG.convert,
  builder: (y) =>
    y
      .positional('src', { type: 'string', demandOption: true })
      .positional('dst', { type: 'string', demandOption: true })
      .options(convertOptions()) as never,
  fast: { positionals: ['src', 'dst'], options: convertOptions },
  handler: async (args) => {
    const format = formatForOutput(args.dst, args.format);
    // A VHD stream on a pipe (vhd-tool's, Xen Orchestra's, ours): read forward once, written into the new image.
    // The stream modules (19 of them) are loaded only then: an image needs none of them.
    const streams = args.src === '-' || args.src === 'stdin:' ? await import('../../stream/index.js') : null;
    const piped = streams ? await streams.vhdStreamContent(new streams.ForwardReader(process.stdin, 'stdin'), args['vhd-size']) : null;
    const src = piped ? null : await openDisk(args.src, openOptionsFrom(args));
    const virtualSize = piped ? piped.virtualSize : src!.virtualSize;
    const started = Date.now();
    try {
      const target = await parseLocation(args.dst);
      const progress = createProgress(`converting`, virtualSize, wantProgress(args));
      const stats = await writeAtomically(
        target,
        async (temp) => {
          const dst = await createDisk(temp, {
            format,
            type: (args.type ?? 'dynamic') as 'dynamic' | 'fixed',
            virtualSize,
            blockSize: args['block-size'] ? parseSize(args['block-size'], 'block size') : undefined,
            logicalSectorSize: args['logical-sector-size'] ?? (format === 'vhdx' && src ? src.logicalSectorSize : undefined),
            finalLocation: target,
          });
          try {
            if (!src) {
              const written = await streams!.writeContentOnto(piped!, dst, { fresh: true, onProgress: (n) => progress.advance(n) });
              return { scanned: virtualSize, read: piped!.ranges.reduce((s, r) => s + r.length, 0), written, skipped: virtualSize - written };
            }
            return await copyDiskContent(src, dst, { onProgress: (n) => progress.advance(n) });
          } finally {
            await dst.close();
          }
        },
        { overwrite: args.force },
      );
      progress.finish();
      const seconds = (Date.now() - started) / 1000;
      const summary = { source: src ? displayLocation(src.location) : 'stdin', destination: displayLocation(target), format, virtualSize, bytesRead: stats.read, bytesWritten: stats.written, seconds };
      if (args.json) outJson(summary);
      else if (!args.quiet) {
        out(`converted ${summary.source} -> ${summary.destination} (${format}): ${formatSize(stats.written)} of data written, ${formatSize(stats.skipped)} skipped as zero or unallocated, ${seconds.toFixed(2)} s`);
      }
    } finally {
      await src?.close();
    }
  },
};
