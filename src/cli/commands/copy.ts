import type { CommandModule } from 'yargs';
import { CATALOG } from './catalog.js';
import { parseLocation } from '../../io/location.js';
import { copyToDiff } from '../../sync/copy.js';
import { createProgress, type Progress } from '../../util/progress.js';
import { formatSize } from '../../util/units.js';
import { withInputFormat, withVhdSize, type InputFormatArgs, type VhdSizeArgs } from '../options.js';
import { out, outJson, wantProgress, withJson, type GlobalArgs } from '../output.js';

interface CopyArgs extends GlobalArgs, InputFormatArgs, VhdSizeArgs {
  source: string;
  target: string;
  createmeta?: boolean;
  diffdir?: string;
  force?: boolean;
  'diff-format'?: 'image' | 'chunked';
}

/** `vhdsync copy SOURCE TARGET`: writes the changed blocks as a differencing image parented on TARGET. */
export const copyCommand: CommandModule<object, CopyArgs> = {
  ...CATALOG.copy,
  builder: (y) =>
    withJson(withVhdSize(withInputFormat(y, true)))
      .positional('source', { type: 'string', demandOption: true, describe: 'the new content (raw, VHD or VHDX; any chain)' })
      .positional('target', { type: 'string', demandOption: true, describe: 'the VHD or VHDX the diff will be merged into' })
      .option('createmeta', { type: 'boolean', describe: "hash the source in the same pass (no source metafile needed) and write its new metafile" })
      .option('diffdir', { type: 'string', describe: "write the diff in this folder (its parent locators still point from TARGET's folder)" })
      .option('force', { type: 'boolean', describe: 'replace an existing diff' })
      .option('diff-format', {
        choices: ['image', 'chunked'] as const,
        describe: "image: a differencing VHD/VHDX; chunked: XAPI chunked frames in TARGET_diff.chunked (smallest to carry; merge and serve apply it)",
      }) as never,
  handler: async (args) => {
    let progress: Progress | null = null;
    const summary = await copyToDiff(await parseLocation(args.source), await parseLocation(args.target), {
      createmeta: args.createmeta,
      diffdir: args.diffdir ? await parseLocation(args.diffdir) : undefined,
      force: args.force,
      diffFormat: args['diff-format'],
      open: { format: args['input-format'], vhdSize: args['vhd-size'] },
      onTotal: (total) => (progress = createProgress(args.createmeta ? 'hashing+copying' : 'copying', total, wantProgress(args))),
      onProgress: (n) => progress?.advance(n),
    });
    (progress as Progress | null)?.finish();
    if (args.json) outJson(summary);
    else if (!args.quiet) {
      out(
        `${summary.diff}: ${summary.changedBlocks} of ${summary.totalBlocks} blocks changed (${formatSize(summary.changedBytes)}): ` +
          `${formatSize(summary.dataBytes)} data, ${formatSize(summary.zeroBytes)} zeros` +
          `${summary.subBlockSize ? ` (changed ${formatSize(summary.subBlockSize)} sub-blocks only)` : ''}; ${summary.seconds.toFixed(2)} s`,
      );
      if (summary.sourceMetafile) out(`source metafile written: ${summary.sourceMetafile}`);
      if (summary.diff !== summary.diffFinalLocation) out(`move it (and ${summary.diffMetafile}) to ${summary.diffFinalLocation}, then run vhdsync merge there`);
    }
  },
};
