/**
 * `vhdsync serve DIR`: the images in DIR over HTTP(S), compatible with XAPI's /import_raw_vdi and
 * /export_raw_vdi (src/serve/). `serve --hash-password` makes a line for the credentials file.
 */
import type { CommandModule } from 'yargs';
import { CATALOG } from './catalog.js';
import { readFileSync } from 'node:fs';
import { parseLocation } from '../../io/location.js';
import { repositoryToServe } from '../../repo/open.js';
import { loadCredentials } from '../../serve/auth.js';
import { hashPassword } from '../../serve/password.js';
import { startServer, type LogEntry } from '../../serve/server.js';
import { UsageError } from '../../util/errors.js';
import { objectStoreOptionsFrom, withObjectStoreOptions, type ObjectStoreArgs } from '../options.js';
import { out, type GlobalArgs } from '../output.js';

interface ServeArgs extends GlobalArgs, ObjectStoreArgs {
  dir?: string;
  listen: string;
  'tls-cert'?: string;
  'tls-key'?: string;
  credentials?: string;
  anonymous?: boolean;
  'read-only'?: boolean;
  'atomic-only'?: boolean;
  'json-log'?: boolean;
  'hash-password'?: boolean;
  'max-transfers': number;
  'idle-timeout': number;
  'head-timeout': number;
}

export const serveCommand: CommandModule<object, ServeArgs> = {
  ...CATALOG.serve,
  builder: (y) =>
    withObjectStoreOptions(y)
      .positional('dir', { type: 'string', describe: 'folder of images (local path or smb://), or a backup repository (a folder with vhdsync-repository.json, or s3://BUCKET/PREFIX), served read-only' })
      .option('listen', { type: 'string', default: '127.0.0.1:8080', describe: 'HOST:PORT to listen on (port 0: any free port)' })
      .option('tls-cert', { type: 'string', describe: 'PEM certificate: serve HTTPS (with --tls-key)' })
      .option('tls-key', { type: 'string', describe: 'PEM private key of --tls-cert' })
      .option('credentials', { type: 'string', describe: 'file of user:HASH lines (HASH from --hash-password); requests then need Basic auth or a session' })
      .option('anonymous', { type: 'boolean', describe: 'allow serving a non-loopback address without --credentials' })
      .option('read-only', { type: 'boolean', describe: 'refuse every import (403); write nothing in DIR' })
      .option('atomic-only', { type: 'boolean', describe: 'refuse imports into raw disks (they are written in place, not all or nothing)' })
      .option('json-log', { type: 'boolean', describe: 'log one JSON object per line on stdout instead of text' })
      .option('hash-password', { type: 'boolean', describe: 'read a password from standard input, print its hash for the credentials file, and exit' })
      .option('max-transfers', { type: 'number', default: 16, describe: 'imports and exports at once; more are answered 503' })
      .option('idle-timeout', { type: 'number', default: 300, describe: 'seconds a connection may go without moving a byte' })
      .option('head-timeout', { type: 'number', default: 30, describe: 'seconds a client has to send its request head' }) as never,
  handler: async (args) => {
    if (args['hash-password']) {
      const password = readFileSync(0, 'utf8').replace(/\r?\n$/, '');
      if (!password) throw new UsageError('no password on standard input');
      out(await hashPassword(password));
      return;
    }
    if (!args.dir) throw new UsageError('name the folder to serve: vhdsync serve DIR');
    const { host, port } = parseListen(args.listen);
    if (Boolean(args['tls-cert']) !== Boolean(args['tls-key'])) throw new UsageError('--tls-cert and --tls-key go together');
    const users = args.credentials ? await loadCredentials(args.credentials) : null;
    if (!users && !isLoopback(host) && !args.anonymous) {
      throw new UsageError(`${host} is reachable from other machines: give --credentials (or --anonymous to serve without authentication)`);
    }
    for (const [name, v] of [['--max-transfers', args['max-transfers']], ['--idle-timeout', args['idle-timeout']], ['--head-timeout', args['head-timeout']]] as const) {
      if (!(Number.isFinite(v) && v > 0)) throw new UsageError(`${name} must be a positive number`);
    }
    const tls = args['tls-cert'] ? { cert: readPem(args['tls-cert']), key: readPem(args['tls-key'] as string) } : undefined;
    const jsonLog = Boolean(args['json-log']);
    const repository = await repositoryToServe(args.dir, objectStoreOptionsFrom(args));
    const readOnly = Boolean(args['read-only']) || repository !== null;
    const server = await startServer({
      ...(repository ? { repository } : { root: await parseLocation(args.dir) }),
      host,
      port,
      tls,
      users,
      readOnly: args['read-only'],
      atomicOnly: args['atomic-only'],
      maxTransfers: Math.floor(args['max-transfers']),
      idleTimeoutMs: args['idle-timeout'] * 1000,
      headTimeoutMs: args['head-timeout'] * 1000,
      log: (e) => out(jsonLog ? JSON.stringify({ event: 'request', ...e }) : textLine(e)),
    });
    for (const r of server.recovered) {
      const what = { merged: 'finished the merge of an interrupted import', removed: 'removed an unfinished import', unlocked: 'removed the lock of a dead run', busy: 'left an import another run holds' }[r.action];
      out(jsonLog ? JSON.stringify({ event: 'recovered', ...r }) : `${r.disk}: ${what} (${r.file})`);
    }
    const what = repository ? 'the restore points of ' : '';
    out(
      jsonLog
        ? JSON.stringify({ event: 'listening', url: server.url, dir: args.dir, readOnly, repository: repository !== null })
        : `serving ${what}${args.dir} on ${server.url}${readOnly ? ' (read-only)' : ''}`,
    );
    await new Promise<void>((resolve) => {
      const stop = () => {
        process.off('SIGINT', stop);
        process.off('SIGTERM', stop);
        void server
          .close()
          .then(() => repository?.close?.())
          .then(resolve);
      };
      process.on('SIGINT', stop);
      process.on('SIGTERM', stop);
    });
    out(jsonLog ? JSON.stringify({ event: 'stopped' }) : 'stopped');
  },
};

/** `HOST:PORT`, `[v6]:PORT` or `PORT`. */
export function parseListen(text: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+))?:?(\d{1,5})$/.exec(text.trim());
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new UsageError(`--listen '${text}': expected HOST:PORT`);
  return { host: m[1] ?? m[2] ?? '127.0.0.1', port };
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\./.test(host);
}

function readPem(file: string): Buffer {
  try {
    return readFileSync(file);
  } catch {
    throw new UsageError('cannot read the file', file);
  }
}

function textLine(e: LogEntry): string {
  const extra = [e.user && e.user !== 'anonymous' ? `user=${e.user}` : '', e.task ? `task=${e.task}` : '', e.error ? `error: ${e.error}` : ''].filter(Boolean).join(' ');
  return `${e.time} ${e.address} ${e.method} ${e.target} ${e.status} ${e.bytes} ${e.seconds.toFixed(3)}s${extra ? ' ' + extra : ''}`;
}
