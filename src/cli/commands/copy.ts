import type { CommandModule, Options } from 'yargs';
import type { FastCommand } from '../fast-args.js';
import { CATALOG } from './catalog.js';
import { parseLocation } from '../../io/location.js';
import { copyToDiff } from '../../sync/copy.js';
import { createProgress, type Progress } from '../../util/progress.js';
import { formatSize } from '../../util/units.js';
import { inputFormatSpec, VHD_SIZE_OPTION, type InputFormatArgs, type VhdSizeArgs } from '../options.js';
import { JSON_OPTION, out, outJson, wantProgress, type GlobalArgs } from '../output.js';

interface CopyArgs extends GlobalArgs, InputFormatArgs, VhdSizeArgs {
  source: string;
  target: string;
  createmeta?: boolean;
  diffdir?: string;
  force?: boolean;
  'diff-format'?: 'image' | 'chunked';
}

/** copy's options (its positionals aside), as data: yargs reads them, and so does the fast path (fast-args.ts). */
export function copyOptions(): Record<string, Options> {
  return {
    'input-format': inputFormatSpec(true),
    'vhd-size': VHD_SIZE_OPTION,
    json: JSON_OPTION,
    createmeta: { type: 'boolean', describe: 'hash the source in the same pass (no source metafile needed) and write its new metafile' },
    diffdir: { type: 'string', describe: "write the diff in this folder (its parent locators still point from TARGET's folder)" },
    force: { type: 'boolean', describe: 'replace an existing diff' },
    'diff-format': {
      choices: ['image', 'chunked'] as const,
      describe: 'image: a differencing VHD/VHDX; chunked: XAPI chunked frames in TARGET_diff.chunked (smallest to carry; merge and serve apply it)',
    },
  };
}

/** `vhdsync copy SOURCE TARGET`: writes the changed blocks as a differencing image parented on TARGET. */
export const copyCommand: CommandModule<object, CopyArgs> & FastCommand = {
  ...CATALOG.copy,
  builder: (y) =>
    y
      .positional('source', { type: 'string', demandOption: true, describe: 'the new content (raw, VHD or VHDX; any chain)' })
      .positional('target', { type: 'string', demandOption: true, describe: 'the VHD or VHDX the diff will be merged into' })
      .options(copyOptions()) as never,
  // copy is issue 14's 1% rows (local and onto a share): yargs would be 50 ms of each run's start-up.
  fast: { positionals: ['source', 'target'], options: copyOptions },
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
