import type { CommandModule } from 'yargs';
import { CATALOG } from './catalog.js';
import { objectStoreOptionsFrom, withObjectStoreOptions, type ObjectStoreArgs } from '../options.js';
import { waitFrom, withWait, type WaitArgs } from '../wait-option.js';
import { checkDiskName, checkPolicy, hasRule, openRepository, pruneDisk, type PruneSummary } from '../../repo/index.js';
import { VhdsyncError } from '../../util/errors.js';
import { out, outJson, withJson, type GlobalArgs } from '../output.js';

interface PruneArgs extends ObjectStoreArgs, WaitArgs, GlobalArgs {
  repo: string;
  name?: string;
  keep?: number;
  'keep-daily'?: number;
  'keep-weekly'?: number;
}

/** `vhdsync prune --repo REPO [NAME] --keep N`: drops restore points beyond a retention policy. */
export const pruneCommand: CommandModule<object, PruneArgs> = {
  ...CATALOG.prune,
  builder: (y) =>
    withObjectStoreOptions(withWait(withJson(y)))
      .positional('name', { type: 'string', describe: 'only this disk (default: every disk)' })
      .option('repo', { type: 'string', demandOption: true, describe: 'the repository: a folder (local or SMB) or s3://BUCKET/PREFIX' })
      .option('keep', { type: 'number', describe: 'keep the newest N restore points' })
      .option('keep-daily', { type: 'number', describe: 'keep the newest point of each of the last D days that have points' })
      .option('keep-weekly', { type: 'number', describe: 'keep the newest point of each of the last W weeks that have points' }) as never,
  handler: async (args) => {
    const wait = waitFrom(args);
    const policy = checkPolicy({ keep: args.keep, daily: args['keep-daily'], weekly: args['keep-weekly'] });
    const repo = await openRepository(args.repo, true, objectStoreOptionsFrom(args));
    const disks = args.name !== undefined ? [checkDiskName(args.name)] : await repo.listDisks();
    const done: PruneSummary[] = [];
    const failed: string[] = [];
    for (const disk of disks) {
      try {
        done.push(await pruneDisk(repo, disk, policy, wait));
      } catch (err) {
        if (disks.length === 1 || !(err instanceof VhdsyncError)) throw err;
        failed.push(err.describe());
        process.stderr.write(`vhdsync: ${err.describe()}\n`);
      }
    }
    // Every disk: also the lease objects of disks that never got a manifest (a first backup killed before it).
    let leases: string[] = [];
    let leaseError: VhdsyncError | null = null;
    if (args.name === undefined && repo.dropOrphanLocks) {
      try {
        leases = await repo.dropOrphanLocks();
      } catch (err) {
        if (!(err instanceof VhdsyncError)) throw err;
        leaseError = err;
      }
    }
    if (args.json) outJson(args.name !== undefined ? done[0] : { disks: done, failed, removedLeases: leases });
    else {
      for (const s of done) {
        const what = s.dropped.length ? `dropped ${s.dropped.join(', ')} (${s.folded} merged forward)` : hasRule(policy) ? 'nothing to drop' : 'no policy given: nothing dropped';
        out(`${s.disk}: ${what}; ${s.kept.length} restore point${s.kept.length === 1 ? '' : 's'} kept${s.finishedInterrupted ? '; finished an interrupted prune first' : ''}`);
      }
      for (const key of leases) out(`removed ${key}: the lease of a disk with no manifest and no other object (a first backup killed before its first manifest)`);
    }
    if (failed.length) {
      if (leaseError) process.stderr.write(`vhdsync: ${leaseError.describe()}\n`);
      throw new VhdsyncError(`${failed.length} of ${disks.length} disks failed (see above)`);
    }
    if (leaseError) throw leaseError;
  },
};
