import type { CommandModule } from 'yargs';
import { CATALOG } from './catalog.js';
import { parseLocation } from '../../io/location.js';
import { mergeDiff } from '../../sync/merge.js';
import { createProgress, type Progress } from '../../util/progress.js';
import { formatSize } from '../../util/units.js';
import { withVhdSize, type VhdSizeArgs } from '../options.js';
import { out, outJson, wantProgress, withJson, type GlobalArgs } from '../output.js';

interface MergeArgs extends GlobalArgs, VhdSizeArgs {
  diff: string;
  'keep-diff'?: boolean;
}

/** `vhdsync merge DIFF`: folds a differencing image into its parent and rotates the metafile; reruns resume. */
export const mergeCommand: CommandModule<object, MergeArgs> = {
  ...CATALOG.merge,
  builder: (y) =>
    withJson(withVhdSize(y))
      .positional('diff', { type: 'string', demandOption: true, describe: 'the differencing image (e.g. TARGET_diff.vhdx)' })
      .option('keep-diff', { type: 'boolean', describe: 'keep the diff and its metafile after merging' }) as never,
  handler: async (args) => {
    let progress: Progress | null = null;
    const summary = await mergeDiff(await parseLocation(args.diff), {
      keepDiff: args['keep-diff'],
      vhdSize: args['vhd-size'],
      onTotal: (total) => (progress = createProgress('merging', total, wantProgress(args))),
      onProgress: (n) => progress?.advance(n),
    });
    (progress as Progress | null)?.finish();
    if (args.json) outJson(summary);
    else if (!args.quiet) {
      const resumed = summary.resumed ? ` (resumed from step ${summary.resumedFrom})` : '';
      out(`merged ${summary.diff} into ${summary.parent}${resumed}: ${formatSize(summary.bytesMerged)} in ${summary.extentsMerged} extents, ${summary.seconds.toFixed(2)} s`);
      if (summary.metafile) out(`metafile rotated: ${summary.metafile}`);
      else out('the diff had no metafile: run vhdsync createmeta on the parent before the next check');
    }
  },
};
