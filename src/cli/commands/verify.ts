import type { CommandModule } from 'yargs';
import { CATALOG } from './catalog.js';
import { checkDiskName, openRepository, verifyDisk, type DiskReport } from '../../repo/index.js';
import { VhdsyncError } from '../../util/errors.js';
import { out, outJson, withJson, type GlobalArgs } from '../output.js';

interface VerifyArgs extends GlobalArgs {
  repo: string;
  name?: string;
}

/** `vhdsync verify --repo REPO [NAME]`: re-hashes every restore point against its metafile; exit 1 on damage. */
export const verifyCommand: CommandModule<object, VerifyArgs> = {
  ...CATALOG.verify,
  builder: (y) =>
    withJson(y)
      .positional('name', { type: 'string', describe: 'only this disk (default: every disk)' })
      .option('repo', { type: 'string', demandOption: true, describe: 'the repository folder (local or SMB)' }) as never,
  handler: async (args) => {
    const repo = await openRepository(args.repo);
    const disks = args.name !== undefined ? [checkDiskName(args.name)] : await repo.listDisks();
    const reports: DiskReport[] = [];
    for (const disk of disks) reports.push(await verifyDisk(repo, disk));
    if (args.json) outJson({ repository: repo.display, ok: reports.every((r) => r.ok), disks: reports });
    else {
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
