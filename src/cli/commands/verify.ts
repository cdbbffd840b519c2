import type { CommandModule } from 'yargs';
import { CATALOG } from './catalog.js';
import { objectStoreOptionsFrom, withObjectStoreOptions, type ObjectStoreArgs } from '../options.js';
import { waitFrom, withWait, type WaitArgs } from '../wait-option.js';
import { checkDiskName, FileRepository, ObjectRepository, openRepository, repairManifest, repairObjectManifest, verifyDisk, type DiskReport, type RepairSummary } from '../../repo/index.js';
import { UnsupportedError, UsageError, VhdsyncError } from '../../util/errors.js';
import { out, outJson, withJson, type GlobalArgs } from '../output.js';

interface VerifyArgs extends ObjectStoreArgs, WaitArgs, GlobalArgs {
  repo: string;
  name?: string;
  repair?: boolean;
}

/** `vhdsync verify --repo REPO [NAME]`: re-hashes every restore point against its metafile; exit 1 on damage. */
export const verifyCommand: CommandModule<object, VerifyArgs> = {
  ...CATALOG.verify,
  builder: (y) =>
    withObjectStoreOptions(withWait(withJson(y)))
      .positional('name', { type: 'string', describe: 'only this disk (default: every disk)' })
      .option('repo', { type: 'string', demandOption: true, describe: 'the repository: a folder (local or SMB) or s3://BUCKET/PREFIX' })
      .option('repair', { type: 'boolean', describe: "first rebuild the named disk's manifest from its images and metafiles if it is missing or damaged" }) as never,
  handler: async (args) => {
    const wait = waitFrom(args);
    const repo = await openRepository(args.repo, true, objectStoreOptionsFrom(args));
    let repaired: RepairSummary | null = null;
    if (args.repair) {
      if (args.name === undefined) throw new UsageError('--repair needs the name of the disk whose manifest to rebuild');
      if (repo instanceof FileRepository) repaired = await repairManifest(repo, checkDiskName(args.name), wait);
      else if (repo instanceof ObjectRepository) repaired = await repairObjectManifest(repo, checkDiskName(args.name), wait);
      else throw new UnsupportedError('--repair does not know this kind of repository', repo.display);
    }
    const disks = args.name !== undefined ? [checkDiskName(args.name)] : await repo.listDisks();
    const reports: DiskReport[] = [];
    for (const disk of disks) reports.push(await verifyDisk(repo, disk, undefined, wait));
    if (args.json) outJson({ repository: repo.display, ok: reports.every((r) => r.ok), disks: reports, ...(repaired ? { repaired } : {}) });
    else {
      if (repaired) out(describeRepair(repaired));
      for (const r of reports) {
        out(`${r.disk}: ${r.ok ? `${r.points.length} restore points intact` : r.problem ?? 'damaged'}`);
        for (const p of r.points) if (!p.ok) out(`  ${p.id}: ${p.problem}`);
      }
    }
    const bad = reports.filter((r) => !r.ok);
    if (bad.length) {
      // Every problem is in the output above (or the JSON); the one error line carries the first.
      const problems = bad.flatMap((r) => [...(r.problem ? [r.problem] : []), ...r.points.filter((p) => !p.ok).map((p) => p.problem!)]);
      const more = problems.length > 1 ? ` (and ${problems.length - 1} more problem${problems.length > 2 ? 's' : ''}, listed by vhdsync verify)` : '';
      throw new VhdsyncError(`damage found: ${problems[0]}${more}`);
    }
  },
};

function describeRepair(r: RepairSummary): string {
  if (!r.rebuilt) return `${r.disk}: manifest intact, nothing to repair`;
  const ignored = r.ignored.length ? `; ignored ${r.ignored.join(', ')} (interrupted backups, deleted by the next backup)` : '';
  const aside = r.movedAside ? `; the damaged manifest is kept as ${r.movedAside}` : '';
  const fold = r.finishedFold ? `; first finished the interrupted fold of ${r.finishedFold}` : '';
  return `${r.disk}: manifest rebuilt (${r.reason}) from ${r.points.length} restore point${r.points.length === 1 ? '' : 's'}: ${r.points.map((p) => `${p.id} ${p.kind}`).join(', ')}${fold}${ignored}${aside}`;
}
