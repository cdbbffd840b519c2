import type { CommandModule } from 'yargs';
import type { FastCommand } from '../fast-args.js';
import { CATALOG, type CommandName } from './catalog.js';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type AnyCommand = CommandModule<any, any>;

/** Each command's module, loaded only when that command runs (or shows its own --help). */
const LOADERS: Record<CommandName, () => Promise<AnyCommand>> = {
  create: async () => (await import('./create.js')).createCommand,
  info: async () => (await import('./info.js')).infoCommand,
  get: async () => (await import('./get.js')).getCommand,
  convert: async () => (await import('./convert.js')).convertCommand,
  copy: async () => (await import('./copy.js')).copyCommand,
  merge: async () => (await import('./merge.js')).mergeCommand,
  createmeta: async () => (await import('./createmeta.js')).createmetaCommand,
  check: async () => (await import('./check.js')).checkCommand,
  validate: async () => (await import('./validate.js')).validateCommand,
  stream: async () => (await import('./stream.js')).streamCommand,
  serve: async () => (await import('./serve.js')).serveCommand,
  backup: async () => (await import('./backup.js')).backupCommand,
  list: async () => (await import('./list.js')).listCommand,
  restore: async () => (await import('./restore.js')).restoreCommand,
  prune: async () => (await import('./prune.js')).pruneCommand,
  verify: async () => (await import('./verify.js')).verifyCommand,
};

/** Commands that offer the fast path past yargs (fast-args.ts): those whose start-up counts (run on many images or after every copy, against qemu-img and curl, or timed to the first S3 request). */
const FAST: Partial<Record<CommandName, () => Promise<AnyCommand & FastCommand>>> = {
  createmeta: async () => (await import('./createmeta.js')).createmetaCommand as AnyCommand & FastCommand,
  merge: async () => (await import('./merge.js')).mergeCommand as AnyCommand & FastCommand,
  convert: async () => (await import('./convert.js')).convertCommand as AnyCommand & FastCommand,
  stream: async () => (await import('./stream.js')).streamCommand as AnyCommand & FastCommand,
  backup: async () => (await import('./backup.js')).backupCommand as AnyCommand & FastCommand,
  copy: async () => (await import('./copy.js')).copyCommand as AnyCommand & FastCommand,
};

/** The command `name` loaded (with the format drivers and location schemes) if it offers the fast path, else null. */
export async function loadFastCommand(name: CommandName): Promise<(AnyCommand & FastCommand) | null> {
  const load = FAST[name];
  if (!load) return null;
  await Promise.all([import('../../formats/index.js'), import('../../io/schemes.js')]);
  return load();
}

/** Whether a word names a subcommand. */
export function isCommandName(word: string | undefined): word is CommandName {
  return word !== undefined && Object.hasOwn(CATALOG, word);
}

/**
 * Every subcommand, in the order `--help` lists them: `name`'s fully loaded (with the format drivers and location
 * schemes it opens images through), the others as their usage line and description only, which is all `--help`,
 * `recommendCommands` and a usage error need. Loading one command instead of all of them is most of the CLI's
 * start-up (docs/performance.md).
 */
export async function loadCommands(name: CommandName | undefined): Promise<AnyCommand[]> {
  let loaded: AnyCommand | undefined;
  if (name) {
    await Promise.all([import('../../formats/index.js'), import('../../io/schemes.js')]);
    loaded = await LOADERS[name]();
  }
  return (Object.keys(CATALOG) as CommandName[]).map((n) => (n === name && loaded ? loaded : listed(n)));
}

/** Thrown by a command that was listed but not loaded: the caller loads it and parses again. */
export class CommandNotLoaded extends Error {
  constructor(readonly command: CommandName) {
    super(`command ${command} was not loaded`);
  }
}

/** A command known by its name and description only (for --help); running it asks for it to be loaded. */
function listed(name: CommandName): AnyCommand {
  return {
    ...CATALOG[name],
    handler: () => {
      throw new CommandNotLoaded(name);
    },
  };
}
