import type { CommandModule, Options } from 'yargs';
import type { FastCommand } from '../fast-args.js';
import { CATALOG } from './catalog.js';
import { parseLocation } from '../../io/location.js';
import { mergeDiff } from '../../sync/merge.js';
import { discardMerge } from '../../sync/merge-leftovers.js';
import { createProgress, type Progress } from '../../util/progress.js';
import { formatSize } from '../../util/units.js';
import { VHD_SIZE_OPTION, type VhdSizeArgs } from '../options.js';
import { JSON_OPTION, out, outJson, wantProgress, type GlobalArgs } from '../output.js';

interface MergeArgs extends GlobalArgs, VhdSizeArgs {
  diff: string;
  'keep-diff'?: boolean;
  discard?: boolean;
}

/** merge's options (its positional `diff` aside), as data: yargs reads them, and so does the fast path (fast-args.ts). */
export function mergeOptions(): Record<string, Options> {
  return {
    'vhd-size': VHD_SIZE_OPTION,
    json: JSON_OPTION,
    'keep-diff': { type: 'boolean', describe: 'keep the diff and its metafile after merging' },
    discard: {
      type: 'boolean',
      describe: 'give up an interrupted merge whose diff is gone (DIFF may name the parent): remove its state so the parent can be written again',
    },
  };
}

/** `vhdsync merge DIFF`: folds a differencing image into its parent and rotates the metafile; reruns resume. */
export const mergeCommand: CommandModule<object, MergeArgs> & FastCommand = {
  ...CATALOG.merge,
  builder: (y) =>
    y.positional('diff', { type: 'string', demandOption: true, describe: 'the differencing image (e.g. TARGET_diff.vhdx)' }).options(mergeOptions()) as never,
  // Merge follows every copy (and repositories merge on every prune): yargs would be a fifth of its CPU time.
  fast: { positionals: ['diff'], options: mergeOptions },
  handler: async (args) => {
    if (args.discard) {
      const r = await discardMerge(await parseLocation(args.diff));
      if (args.json) outJson(r);
      else if (!args.quiet) {
        if (r.finished) out(`the merge of ${r.diff} into ${r.parent} had only its cleanup left: finished`);
        else {
          const what = r.step === 'merging' ? 'part of the diff (the merge had not finished): restore it from a backup unless that is what you want' : 'all of the merged data';
          out(`discarded the interrupted merge of ${r.diff} into ${r.parent}; ${r.parent} holds ${what}; run vhdsync createmeta ${r.parent} before the next check or copy`);
        }
      }
      return;
    }
    let progress: Progress | null = null;
    // The total costs a pass over the diff's allocation tables: asked for only when a bar will show it.
    const bar = wantProgress(args);
    const summary = await mergeDiff(await parseLocation(args.diff), {
      keepDiff: args['keep-diff'],
      vhdSize: args['vhd-size'],
      onTotal: bar ? (total) => (progress = createProgress('merging', total, true)) : undefined,
      onProgress: bar ? (n) => progress?.advance(n) : undefined,
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
