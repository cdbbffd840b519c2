import type { Argv, CommandModule, Options } from 'yargs';
import { CommandNotLoaded, isCommandName, loadCommands, loadFastCommand } from './commands/index.js';
import { parseSimple } from './fast-args.js';
import type { CommandName } from './commands/catalog.js';
import { rewriteLegacyArgs } from './legacy.js';
import { joinDashValues } from './stream-endpoints.js';
import { EXIT_USAGE, reportError } from './run.js';
import { setQuiet } from './output.js';
import { UsageError } from '../util/errors.js';
import { packageVersion } from '../meta/version.js';

/** The global options that take a value (all others are flags): needed to find the command word before parsing. */
const VALUED_GLOBALS = new Set(['--smb-credentials']);

/** Where the subcommand's word is in an argument list (the first word that is neither an option nor a global option's value), or -1. */
export function commandIndexIn(args: string[]): number {
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === '--') return i + 1 < args.length ? i + 1 : -1;
    if (!a.startsWith('-')) return i;
    if (VALUED_GLOBALS.has(a)) i++;
  }
  return -1;
}

/** The subcommand an argument list runs. */
export function commandWordIn(args: string[]): string | undefined {
  const at = commandIndexIn(args);
  return at < 0 ? undefined : args[at];
}

/** Runs the command line and returns the exit code (never calls process.exit itself). */
export async function main(argv: string[]): Promise<number> {
  const args = joinDashValues(rewriteLegacyArgs(argv));
  // Scripts ask for the version to tell which build they run: answer without loading the parser.
  if (args.length === 1 && args[0] === '--version') {
    process.stdout.write(packageVersion() + '\n');
    return 0;
  }
  const debug = args.includes('--debug');
  const word = commandWordIn(args);
  let code = 0;
  let loaded = false;
  try {
    const name = isCommandName(word) ? word : undefined;
    loaded = name !== undefined;
    if (name) await prewarmShares(args);
    try {
      if (!(name && (await runFast(args, name)))) await parse(args, name);
    } catch (err) {
      if (!(err instanceof CommandNotLoaded)) throw err;
      loaded = true;
      await parse(args, err.command);
    }
  } catch (err) {
    if (!(err instanceof UsageError) && isYargsValidation(err)) {
      process.stderr.write(`vhdsync: ${oneLine((err as Error).message)}\n`);
      return EXIT_USAGE;
    }
    code = reportError(err, debug);
  } finally {
    // Only a command that ran can have opened SMB sessions.
    if (loaded) await (await import('../io/schemes.js')).closeAllSmbSessions().catch(() => {});
  }
  return code;
}

/**
 * Starts logging on to the SMB servers a command line names while the command's modules load (a share's logon is
 * four round trips: 80 ms on a link of 10 ms each way). Not with --smb-credentials, which applies only once parsed,
 * nor for --help.
 */
async function prewarmShares(args: string[]): Promise<void> {
  if (args.some((a) => a === '--help' || a === '-h' || a.startsWith('--smb-credentials'))) return;
  const { isSmbLocation } = await import('../io/smb/location-syntax.js');
  const shares = args.filter((a) => isSmbLocation(a));
  if (!shares.length) return;
  const { prewarmSmb } = await import('../io/smb/scheme.js');
  for (const a of shares) prewarmSmb(a);
}

/** The options every command takes (yargs and the fast path read the same specs). */
export const GLOBAL_OPTIONS = {
  debug: { type: 'boolean', describe: 'print stack traces on errors' },
  progress: { type: 'boolean', describe: 'draw progress bars (default: when stderr is a terminal)' },
  quiet: { alias: 'q', type: 'boolean', describe: 'print nothing on stdout, --json included (errors still go to stderr; the exit code tells the result)' },
  'smb-credentials': {
    type: 'string',
    describe: 'mount.cifs-style file (username=, password=, domain=) for smb:// and \\\\host\\share locations',
  },
} satisfies Record<string, Options>;

/** What the global options do before a command runs. */
function applyGlobals(argv: Record<string, unknown>): void {
  setQuiet(Boolean(argv.quiet));
  // The SMB scheme reads credentials from the environment, so one place serves the CLI and the library.
  if (typeof argv['smb-credentials'] === 'string') process.env.VHDSYNC_SMB_CREDENTIALS = argv['smb-credentials'];
}

/**
 * Runs a command that offers the fast path (fast-args.ts) without loading yargs, when its arguments are all in the
 * plain forms; false when yargs must read them.
 */
async function runFast(args: string[], name: CommandName): Promise<boolean> {
  // XXH128 lists (the default: no --hash, no --format vbb) hash on helper threads: they start loading now, beside
  // the command's modules, instead of after them.
  if (name === 'createmeta' && !args.some((a) => /^--(hash|format)\b/.test(a))) (await import('../meta/hash-direct.js')).prestartHashThreads();
  const command = await loadFastCommand(name);
  if (!command) return false;
  const argv = parseSimple(args, commandIndexIn(args), command.fast.positionals, GLOBAL_OPTIONS, command.fast.options());
  if (!argv) return false;
  applyGlobals(argv);
  await command.handler(argv as never);
  return true;
}

/** The parser of a command line, with `commands` (one loaded, the others listed); tests build it to compare with the fast path. */
export async function buildParser(args: string[], commands: CommandModule<any, any>[]): Promise<Argv> { // eslint-disable-line @typescript-eslint/no-explicit-any
  const { default: yargs } = await import('yargs');
  return yargs(args)
    .scriptName('vhdsync')
    .usage('$0 <command> [options]\n\nBlock-level incremental backup of virtual disk images (VHD, VHDX, raw).')
    .options(GLOBAL_OPTIONS)
    .middleware((argv) => applyGlobals(argv), true)
    .command(commands)
    .demandCommand(1, 'name a command (see --help)')
    .strict()
    .recommendCommands()
    .help()
    .alias('h', 'help')
    .version(packageVersion())
    .epilog('Exit codes: 0 success, 1 operation failed, 2 usage error. See docs/cli.md.')
    .wrap(Math.min(110, process.stdout.columns ?? 100))
    .exitProcess(false)
    .fail((msg, err) => {
      throw err ?? new UsageError(oneLine(msg));
    });
}

/** Parses and runs the command line with `name` loaded (every other command listed for --help only). */
async function parse(args: string[], name: CommandName | undefined): Promise<void> {
  setQuiet(false);
  const parser = await buildParser(args, await loadCommands(name));
  skipHelpCache(parser);
  await parser.parseAsync();
}

/**
 * yargs renders the whole help text before every command's handler runs, to have it ready should the handler
 * fail; failures here print one line, never the help, and the rendering (string-width over every option) cost
 * 50-100 ms of each command's start-up. Reached through yargs' internal methods; a yargs without them renders as before.
 */
function skipHelpCache(parser: unknown): void {
  type Internals = { getInternalMethods?: () => { getUsageInstance?: () => { cacheHelpMessage?: () => void } } };
  const usage = (parser as Internals).getInternalMethods?.().getUsageInstance?.();
  if (usage && typeof usage.cacheHelpMessage === 'function') usage.cacheHelpMessage = () => {};
}

/** yargs words some messages over several lines ("Invalid values:\n  Argument: ..."); errors here are one line. */
function oneLine(text: string): string {
  return text.replace(/:\s*\n\s*/g, ': ').replace(/\s*\n\s*/g, '; ').trim();
}

function isYargsValidation(err: unknown): boolean {
  return err instanceof Error && err.name === 'YError';
}
