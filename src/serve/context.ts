/** What every request handler of `serve` shares: the disks, tasks, locks, authentication and settings. */
import type { Authenticator } from './auth.js';
import type { Catalog } from './catalog.js';
import type { DiskLocks } from './disk-locks.js';
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
  catalog: Catalog;
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
