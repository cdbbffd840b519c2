import type { CommandModule } from 'yargs';
import { CATALOG } from './catalog.js';
import { parseLocation } from '../../io/location.js';
import { checkDiskName, listRepository, openRepository, restorePoint, type StreamTarget } from '../../repo/index.js';
import { UsageError } from '../../util/errors.js';
import { createProgress, type Progress } from '../../util/progress.js';
import { formatSize } from '../../util/units.js';
import { formatForOutput, OUTPUT_FORMATS, objectStoreOptionsFrom, withObjectStoreOptions, type ObjectStoreArgs } from '../options.js';
import { out, outJson, wantProgress, withJson, type GlobalArgs } from '../output.js';
import { isUrl, parseUrl, urlDisplay } from '../backup-source.js';
import { httpDestination, httpOptionsFrom, isXapiImport, withHttpOptions, type HttpArgs } from '../http-args.js';
import type { StreamFormat } from '../../stream/index.js';

interface RestoreArgs extends ObjectStoreArgs, GlobalArgs, HttpArgs {
  repo: string;
  name?: string;
  at?: string;
  to: string;
  format?: string;
  force?: boolean;
  verify?: boolean;
}

/** `vhdsync restore --repo REPO NAME --to DST`: writes the disk as it was at a restore point. */
export const restoreCommand: CommandModule<object, RestoreArgs> = {
  ...CATALOG.restore,
  builder: (y) =>
    withObjectStoreOptions(withHttpOptions(withJson(y)))
      .positional('name', { type: 'string', describe: 'the disk (may be left out when the repository holds one disk)' })
      .option('repo', { type: 'string', demandOption: true, describe: 'the repository: a folder (local or SMB) or s3://BUCKET/PREFIX' })
      .option('at', { type: 'string', describe: 'a restore point id, or a time (the newest point at or before it); default the newest point' })
      .option('to', { type: 'string', demandOption: true, describe: 'the image to write (local or SMB), or an http(s):// URL to PUT it to (XAPI import_raw_vdi, serve)' })
      .option('format', { choices: OUTPUT_FORMATS, describe: "output format (default: from the extension of --to; for a URL, its format= or raw)" })
      .option('force', { type: 'boolean', describe: 'replace --to if it exists' })
      .option('verify', { type: 'boolean', default: true, describe: 'check every block against the point\'s metafile (--no-verify writes a point whose metafile is lost)' }) as never,
  handler: async (args) => {
    const repo = await openRepository(args.repo, true, objectStoreOptionsFrom(args));
    let name = args.name;
    if (name === undefined) {
      const disks = (await listRepository(repo)).disks.map((d) => d.name);
      if (disks.length !== 1) throw new UsageError(`name the disk to restore (the repository holds ${disks.length ? disks.join(', ') : 'none'})`);
      name = disks[0];
    }
    let progress: Progress | null = null;
    const s = await restorePoint(repo, checkDiskName(name), isUrl(args.to) ? urlTarget(args) : await parseLocation(args.to), {
      at: args.at,
      format: isUrl(args.to) ? undefined : formatForOutput(args.to, args.format),
      force: args.force,
      verify: args.verify,
      onTotal: (n) => (progress = createProgress('restoring', n, wantProgress(args))),
      onProgress: (n) => progress?.advance(n),
    });
    (progress as Progress | null)?.finish();
    if (args.json) outJson(s);
    else out(`restored ${s.disk} at ${s.point} (${s.time}) to ${s.destination} (${s.format}): ${formatSize(s.bytesWritten)} ${isUrl(args.to) ? 'sent' : 'of data written'}${s.verified ? ', every block checked' : ', NOT checked (--no-verify)'}; ${s.seconds.toFixed(2)} s`);
  },
};

/** `--to URL`: a PUT shaped as `stream --destination` sends it, in `--format`, else the URL's `format=`, else raw. */
function urlTarget(args: RestoreArgs): StreamTarget {
  if (args.force) throw new UsageError('--force applies to files; a URL is written by the server');
  const http = httpOptionsFrom(args);
  const u = parseUrl(args.to);
  const inUrl = u.searchParams.get('format')?.toLowerCase();
  if (args.format && inUrl && inUrl !== args.format) throw new UsageError(`--format ${args.format} contradicts the URL's format=${inUrl.slice(0, 20)}`);
  const asked = args.format ?? inUrl ?? 'raw';
  if (!(OUTPUT_FORMATS as readonly string[]).includes(asked)) throw new UsageError(`the URL asks for format=${asked.slice(0, 20)}: give --format raw|vhd|vhdx|qcow2`);
  const format = asked as StreamFormat;
  return {
    kind: 'stream',
    display: urlDisplay(args.to),
    format,
    zerosAsData: isXapiImport(u),
    send: (stream, onProgress) => httpDestination(args.to, stream, http, onProgress),
  };
}
