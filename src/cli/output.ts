import type { Argv, Options } from 'yargs';
import { silenceNotices } from '../util/notice.js';

/** Options every command accepts. */
export interface GlobalArgs {
  debug?: boolean;
  json?: boolean;
  quiet?: boolean;
  progress?: boolean;
}

let quiet = false;

/** Sets whether `out` and `outJson` print at all: `-q` silences every command in this one place. */
export function setQuiet(on: boolean): void {
  quiet = on;
  silenceNotices(on);
}

/** Prints a line on stdout (nothing with -q). */
export function out(line = ''): void {
  if (!quiet) process.stdout.write(line + '\n');
}

/** Prints a value as JSON on stdout (pretty when stdout is a terminal; nothing with -q). */
export function outJson(value: unknown): void {
  if (!quiet) process.stdout.write(JSON.stringify(value, null, process.stdout.isTTY ? 2 : undefined) + '\n');
}

/** Whether progress bars should be drawn: only on a terminal, never with --json or --quiet. */
export function wantProgress(args: GlobalArgs): boolean {
  if (args.progress === false || args.json || args.quiet) return false;
  return Boolean(process.stderr.isTTY);
}

/** `--json`, as a yargs option spec. */
export const JSON_OPTION = { type: 'boolean', describe: 'print machine-readable JSON on stdout' } satisfies Options;

/** Adds `--json` to a command. */
export function withJson<T>(y: Argv<T>): Argv<T & { json?: boolean }> {
  return y.option('json', JSON_OPTION);
}
