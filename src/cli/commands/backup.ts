import type { CommandModule, Options } from 'yargs';
import type { FastCommand } from '../fast-args.js';
import { CATALOG } from './catalog.js';
import { WAIT_OPTION, waitFrom, type WaitArgs } from '../wait-option.js';
import { backupMany, checkDiskName, checkPolicy, defaultDiskName, openRepository, type BackupJob, type BackupSummary, type ReflinkMode } from '../../repo/index.js';
import { RecordedError, UsageError, VhdsyncError } from '../../util/errors.js';
import { createMultiProgress } from '../../util/multi-progress.js';
import { createProgress, type Progress } from '../../util/progress.js';
import { formatSize, parseSize } from '../../util/units.js';
import { inputFormatSpec, VHD_SIZE_OPTION, type InputFormatArgs, type VhdSizeArgs, objectStoreOptionsFrom, OBJECT_STORE_OPTIONS, type ObjectStoreArgs } from '../options.js';
import { JSON_OPTION, out, outJson, wantProgress, type GlobalArgs } from '../output.js';
import { expandPattern } from './createmeta.js';
import { httpBackupSource, isUrl, urlDiskName } from '../backup-source.js';
import { HTTP_OPTIONS, httpOptionsFrom, type HttpArgs } from '../http-args.js';

interface BackupArgs extends ObjectStoreArgs, WaitArgs, GlobalArgs, InputFormatArgs, VhdSizeArgs, HttpArgs {
  sources: string[];
  repo: string;
  name?: string;
  keep?: number;
  'keep-daily'?: number;
  'keep-weekly'?: number;
  reflink: ReflinkMode;
  jobs: number;
  full?: boolean;
  'block-size'?: string;
  hash?: 'xxh128' | 'sha256';
}

/** backup's options (its positional `sources` aside), as data: yargs reads them, and so does the fast path (fast-args.ts). */
export function backupOptions(): Record<string, Options> {
  return {
    'input-format': inputFormatSpec(),
    'vhd-size': VHD_SIZE_OPTION,
    json: JSON_OPTION,
    ...HTTP_OPTIONS,
    wait: WAIT_OPTION,
    ...OBJECT_STORE_OPTIONS,
    repo: { type: 'string', demandOption: true, describe: 'the repository: a folder (local or SMB) or s3://BUCKET/PREFIX; created on first use' },
    name: { type: 'string', describe: "the disk's name in the repository (one source only; default: the source's file name without extension)" },
    keep: { type: 'number', describe: 'afterwards, keep only the newest N restore points of each disk backed up' },
    'keep-daily': { type: 'number', describe: 'afterwards, also keep the newest point of each of the last D days that have points' },
    'keep-weekly': { type: 'number', describe: 'afterwards, also keep the newest point of each of the last W weeks that have points' },
    reflink: { choices: ['auto', 'always', 'never'] as const, default: 'auto' as ReflinkMode, describe: 'make each point a full image sharing unchanged blocks with the previous one (XFS reflink, Btrfs): where possible, required, or never (differencing images)' },
    jobs: { type: 'number', default: 2, describe: 'disks backed up in parallel' },
    full: { type: 'boolean', describe: 'store a full point even if the newest point could be built on' },
    'block-size': { type: 'string', describe: "a new disk's metafile block size (default 2M); later points keep the disk's" },
    hash: { choices: ['xxh128', 'sha256'] as const, describe: "a new disk's metafile digest (default xxh128); later points keep the disk's" },
  };
}

/** `vhdsync backup SRC... --repo REPO`: adds a restore point per source disk. */
export const backupCommand: CommandModule<object, BackupArgs> & FastCommand = {
  ...CATALOG.backup,
  builder: (y) =>
    y
      .positional('sources', { type: 'string', array: true, demandOption: true, describe: 'images (any format, local or SMB), quoted patterns such as "/vms/*.vhdx", or http(s):// export URLs (a VHD, QCOW2 or raw stream)' })
      .options(backupOptions()) as never,
  // An incremental backup to S3 is issue 15's row: yargs (a 230 KB chunk) would be 50 ms of its time to first request.
  fast: { positionals: { rest: 'sources' }, options: backupOptions },
  handler: async (args) => {
    const wait = waitFrom(args);
    const http = args.sources.some(isUrl) ? httpOptionsFrom(args) : null;
    const work: BackupJob[] = [];
    for (const s of args.sources) {
      if (isUrl(s)) {
        const name = args.name ?? urlDiskName(s);
        if (name === null) throw new UsageError('name the disk of an http(s):// source with --name (its URL has no vdi= that is a disk name)');
        work.push({ source: httpBackupSource(s, http!, { format: args['input-format'], vhdSize: args['vhd-size'] }), disk: checkDiskName(name) });
      } else {
        for (const source of await expandPattern(s)) work.push({ source, disk: args.name !== undefined ? checkDiskName(args.name) : defaultDiskName(source.store.paths.basename(source.path)) });
      }
    }
    if (args.name !== undefined && work.length !== 1) throw new UsageError('--name needs exactly one source (several disks take their names from their files)');
    if (!Number.isSafeInteger(args.jobs) || args.jobs < 1) throw new UsageError('--jobs must be a whole number of at least 1');
    const retention = checkPolicy({ keep: args.keep, daily: args['keep-daily'], weekly: args['keep-weekly'] });
    const hasRetention = retention.keep !== undefined || retention.daily !== undefined || retention.weekly !== undefined;
    const repo = await openRepository(args.repo, false, objectStoreOptionsFrom(args));
    const blockSize = args['block-size'] !== undefined ? parseSize(args['block-size'], 'block size') : undefined;
    // One source: one bar. Several: a summary line and a bar per disk in progress, redrawn in place.
    const showBars = wantProgress(args);
    const multi = work.length > 1 ? createMultiProgress('backing up', work.length, showBars) : null;
    const bars = new Map<string, Progress>();
    const results = await backupMany(
      repo,
      work,
      args.jobs,
      (job) => ({
        reflink: args.reflink,
        full: args.full,
        wait,
        retention: hasRetention ? retention : undefined,
        hash: args.hash,
        blockSize,
        open: { format: args['input-format'], vhdSize: args['vhd-size'] },
        onTotal: (n) => bars.set(job.disk, multi ? multi.task(job.disk, n) : createProgress('backing up', n, showBars)),
        onProgress: (n) => bars.get(job.disk)?.advance(n),
      }),
      (job) => {
        if (multi) bars.get(job.disk)?.finish();
      },
    );
    if (multi) multi.finish();
    else for (const bar of bars.values()) bar.finish();
    const failed = results.filter((r) => r.error);
    for (const r of failed) if (!(r.error instanceof VhdsyncError)) throw r.error;
    if (results.length === 1 && failed.length) {
      // A script reading --json still learns which point stands when the exit is 3.
      if (args.json && failed[0].error instanceof RecordedError) outJson(failedJson(failed[0]));
      throw failed[0].error;
    }
    const done = results.filter((r) => r.summary).map((r) => r.summary!);
    if (args.json) outJson(results.length === 1 ? done[0] : { backups: done, failed: failed.map(failedJson) });
    else for (const s of done) out(describe(s));
    for (const r of failed) process.stderr.write(`vhdsync: ${(r.error as VhdsyncError).describe()}\n`);
    if (!failed.length) return;
    // Exit 3 only when every failed disk has its point recorded (a step after it failed); anything worse is exit 1.
    if (failed.every((r) => r.error instanceof RecordedError)) throw new RecordedError(`${failed.length} of ${results.length} disks have their restore point recorded, but a step after it failed (see above)`);
    throw new VhdsyncError(`${failed.length} of ${results.length} disks failed (see above)`);
  },
};

/** A failed disk for --json: `{disk, error}`, plus `recorded: true, point, generation` when its point stands (exit 3). */
function failedJson(r: { job: BackupJob; error?: unknown }): object {
  const err = r.error as VhdsyncError;
  const recorded = err instanceof RecordedError && err.recorded ? { recorded: true, point: err.recorded.point, generation: err.recorded.generation } : {};
  return { disk: r.job.disk, error: err.describe(), ...recorded };
}

function describe(s: BackupSummary): string {
  const how = s.kind === 'diff' ? `differencing image of ${s.parent}` : s.kind === 'clone' ? 'reflinked full image' : 'full image';
  const extra = [s.note, s.dropped.length ? `dropped ${s.dropped.join(', ')}` : null, s.finishedInterrupted ? 'finished an interrupted prune first' : null].filter(Boolean);
  return `${s.disk}: restore point ${s.point} (${how}): ${formatSize(s.changedBytes)} changed, image ${formatSize(s.imageBytes)}; ${s.seconds.toFixed(2)} s${extra.length ? ` (${extra.join('; ')})` : ''}`;
}
