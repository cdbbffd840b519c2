import { VhdsyncError } from '../util/errors.js';

/** Exit codes, documented in docs/cli.md. */
export const EXIT_OK = 0;
export const EXIT_FAILED = 1;
export const EXIT_USAGE = 2;
/** backup: its restore point is recorded, but a step after it failed (RecordedError). */
export const EXIT_RECORDED = 3;

/** Prints an error as one line (`vhdsync: <subject>: <why>`) and returns the exit code; a stack only with --debug. */
export function reportError(err: unknown, debug: boolean): number {
  if (err instanceof VhdsyncError) {
    process.stderr.write(`vhdsync: ${err.describe()}\n`);
    if (debug && err.stack) process.stderr.write(err.stack + '\n');
    return err.exitCode;
  }
  const e = err as Error;
  process.stderr.write(`vhdsync: internal error: ${e?.message ?? String(err)}${debug ? '' : ' (run with --debug for details)'}\n`);
  if (debug && e?.stack) process.stderr.write(e.stack + '\n');
  return EXIT_FAILED;
}
