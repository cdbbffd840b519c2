import type { CommandModule } from 'yargs';
import { CATALOG } from './catalog.js';
import { objectStoreOptionsFrom, withObjectStoreOptions, type ObjectStoreArgs } from '../options.js';
import { checkDiskName, listRepository, openRepository } from '../../repo/index.js';
import { VhdsyncError } from '../../util/errors.js';
import { formatSize } from '../../util/units.js';
import { out, outJson, withJson, type GlobalArgs } from '../output.js';

interface ListArgs extends ObjectStoreArgs, GlobalArgs {
  repo: string;
  name?: string;
}

/** `vhdsync list --repo REPO [NAME]`: disks and restore points. */
export const listCommand: CommandModule<object, ListArgs> = {
  ...CATALOG.list,
  builder: (y) =>
    withObjectStoreOptions(withJson(y))
      .positional('name', { type: 'string', describe: 'only this disk' })
      .option('repo', { type: 'string', demandOption: true, describe: 'the repository: a folder (local or SMB) or s3://BUCKET/PREFIX' }) as never,
  handler: async (args) => {
    const repo = await openRepository(args.repo, true, objectStoreOptionsFrom(args));
    const listing = await listRepository(repo, args.name !== undefined ? checkDiskName(args.name) : undefined);
    if (args.json) outJson(listing);
    else {
      for (const d of listing.disks) {
        out(`${d.name}:${d.error ? ` ${d.error}` : ''}${d.pending ? ` (an interrupted prune is pending: run vhdsync prune --repo ${args.repo} ${d.name})` : ''}`);
        for (const p of d.points) {
          const size = p.fileSize === null ? 'missing' : formatSize(p.fileSize);
          out(`  ${p.id}  ${p.time}  ${p.kind.padEnd(5)}  ${formatSize(p.virtualSize)} disk, ${formatSize(p.changedBytes)} changed, image ${size}${p.state !== 'ok' ? `  [${p.state}]` : ''}`);
        }
      }
    }
    const bad = listing.disks.filter((d) => d.error);
    if (bad.length) throw new VhdsyncError(`${bad.length} disk${bad.length > 1 ? 's' : ''} could not be listed (see above)`, repo.display);
  },
};
