/** `--wait[=SECONDS]` of the commands that take a disk's lock in a repository (backup, prune, verify). */
import type { Argv } from 'yargs';
import { parseWait, type LockWait } from '../repo/index.js';

/** The option as parsed. */
export interface WaitArgs {
  wait?: string;
}

/** Adds `--wait[=SECONDS]`. */
export function withWait<T>(y: Argv<T>): Argv<T & WaitArgs> {
  return y.option('wait', {
    type: 'string',
    describe: "when a disk's lock is held by another run, wait for it (at most SECONDS with --wait=SECONDS) instead of failing at once",
  }) as Argv<T & WaitArgs>;
}

/** The wait asked for, if any. */
export function waitFrom(args: WaitArgs): LockWait | undefined {
  return parseWait(args.wait);
}
