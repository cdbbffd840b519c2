import type { Argv } from 'yargs';

/** Options every command accepts. */
export interface GlobalArgs {
  debug?: boolean;
  json?: boolean;
  quiet?: boolean;
  progress?: boolean;
}

/** Prints a line on stdout. */
export function out(line = ''): void {
  process.stdout.write(line + '\n');
}

/** Prints a value as JSON on stdout (pretty when stdout is a terminal). */
export function outJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, process.stdout.isTTY ? 2 : undefined) + '\n');
}

/** Whether progress bars should be drawn: only on a terminal, never with --json or --quiet. */
export function wantProgress(args: GlobalArgs): boolean {
  if (args.progress === false || args.json || args.quiet) return false;
  return Boolean(process.stderr.isTTY);
}

/** Adds `--json` to a command. */
export function withJson<T>(y: Argv<T>): Argv<T & { json?: boolean }> {
  return y.option('json', { type: 'boolean', describe: 'print machine-readable JSON on stdout' });
}
