/** `--wait[=SECONDS]` of the commands that take a disk's lock in a repository (backup, prune, verify). */
import type { Argv, Options } from 'yargs';
import { parseWait, type LockWait } from '../repo/index.js';

/** The option as parsed. */
export interface WaitArgs {
  wait?: string;
}

/** `--wait[=SECONDS]` as a yargs option spec (read by yargs and by the fast path, fast-args.ts). */
export const WAIT_OPTION = {
  type: 'string',
  describe: "when a disk's lock is held by another run, wait for it (at most SECONDS with --wait=SECONDS) instead of failing at once",
} satisfies Options;

/** Adds `--wait[=SECONDS]`. */
export function withWait<T>(y: Argv<T>): Argv<T & WaitArgs> {
  return y.option('wait', WAIT_OPTION) as Argv<T & WaitArgs>;
}

/** The wait asked for, if any. */
export function waitFrom(args: WaitArgs): LockWait | undefined {
  return parseWait(args.wait);
}
