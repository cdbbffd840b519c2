/** What every request handler of `serve` shares: the disks, tasks, locks, authentication and settings. */
import { RequestError } from '../util/errors.js';
import type { Authenticator } from './auth.js';
import type { Catalog } from './catalog.js';
import type { DiskLocks } from './disk-locks.js';
import type { DiskSource } from './source.js';
import type { Tasks } from './tasks.js';

/** Settings of one server. */
export interface ServeSettings {
  /** Refuse every PUT (403) and write nothing in the folder. */
  readOnly: boolean;
  /** Refuse imports into raw disks, which cannot be written all-or-nothing. */
  atomicOnly: boolean;
  /** A request head must arrive within this time. */
  headTimeoutMs: number;
  /** A transfer with no byte moving for this long is cut off. */
  idleTimeoutMs: number;
  /** Imports and exports running at once; more are answered 503. */
  maxTransfers: number;
}

/** The shared state. */
export interface ServeContext {
  /** What exports and the listing read. */
  source: DiskSource;
  /** The folder imports write into; null when the server exports a backup repository. */
  catalog: Catalog | null;
  tasks: Tasks;
  locks: DiskLocks;
  auth: Authenticator;
  settings: ServeSettings;
}

/** What a handler reports for the access log. */
export interface Outcome {
  status: number;
  /** Body bytes received or sent. */
  bytes: number;
  task?: string;
  disk?: string;
  error?: string;
}

/** The folder an import may write into; 403 on a read-only server (`--read-only`, or a backup repository). */
export function writableFolder(ctx: ServeContext): Catalog {
  if (ctx.settings.readOnly || !ctx.catalog) throw new RequestError(403, ctx.catalog ? 'this server is read-only' : 'this server exports a backup repository, which is read-only');
  return ctx.catalog;
}
