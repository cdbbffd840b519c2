import yargs from 'yargs';
import { commands } from './commands/index.js';
import { rewriteLegacyArgs } from './legacy.js';
import { joinDashValues } from './stream-endpoints.js';
import { EXIT_USAGE, reportError } from './run.js';
import { setQuiet } from './output.js';
import { UsageError } from '../util/errors.js';
import '../formats/index.js';
import { closeAllSmbSessions } from '../io/schemes.js';

/** Runs the command line and returns the exit code (never calls process.exit itself). */
export async function main(argv: string[]): Promise<number> {
  const args = joinDashValues(rewriteLegacyArgs(argv));
  const debug = args.includes('--debug');
  let code = 0;
  setQuiet(false);
  const parser = yargs(args)
    .scriptName('vhdsync')
    .usage('$0 <command> [options]\n\nBlock-level incremental backup of virtual disk images (VHD, VHDX, raw).')
    .option('debug', { type: 'boolean', describe: 'print stack traces on errors' })
    .option('progress', { type: 'boolean', describe: 'draw progress bars (default: when stderr is a terminal)' })
    .option('quiet', { alias: 'q', type: 'boolean', describe: 'print nothing on stdout, --json included (errors still go to stderr; the exit code tells the result)' })
    .option('smb-credentials', {
      type: 'string',
      describe: 'mount.cifs-style file (username=, password=, domain=) for smb:// and \\\\host\\share locations',
    })
    .middleware((argv) => {
      setQuiet(Boolean(argv.quiet));
      // The SMB scheme reads credentials from the environment, so one place serves the CLI and the library.
      if (typeof argv['smb-credentials'] === 'string') process.env.VHDSYNC_SMB_CREDENTIALS = argv['smb-credentials'];
    }, true)
    .command(commands)
    .demandCommand(1, 'name a command (see --help)')
    .strict()
    .recommendCommands()
    .help()
    .alias('h', 'help')
    .version()
    .epilog('Exit codes: 0 success, 1 operation failed, 2 usage error. See docs/cli.md.')
    .wrap(Math.min(110, process.stdout.columns ?? 100))
    .exitProcess(false)
    .fail((msg, err) => {
      throw err ?? new UsageError(oneLine(msg));
    });
  try {
    await parser.parseAsync();
  } catch (err) {
    if (!(err instanceof UsageError) && isYargsValidation(err)) {
      process.stderr.write(`vhdsync: ${oneLine((err as Error).message)}\n`);
      return EXIT_USAGE;
    }
    code = reportError(err, debug);
  } finally {
    await closeAllSmbSessions().catch(() => {});
  }
  return code;
}

/** yargs words some messages over several lines ("Invalid values:\n  Argument: ..."); errors here are one line. */
function oneLine(text: string): string {
  return text.replace(/:\s*\n\s*/g, ': ').replace(/\s*\n\s*/g, '; ').trim();
}

function isYargsValidation(err: unknown): boolean {
  return err instanceof Error && err.name === 'YError';
}
