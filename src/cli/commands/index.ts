import type { CommandModule } from 'yargs';
import { createCommand } from './create.js';
import { infoCommand } from './info.js';
import { getCommand } from './get.js';
import { convertCommand } from './convert.js';
import { copyCommand } from './copy.js';
import { mergeCommand } from './merge.js';
import { createmetaCommand } from './createmeta.js';
import { checkCommand } from './check.js';
import { validateCommand } from './validate.js';
import { streamCommand } from './stream.js';
import { serveCommand } from './serve.js';
import { backupCommand } from './backup.js';
import { listCommand } from './list.js';
import { restoreCommand } from './restore.js';
import { pruneCommand } from './prune.js';
import { verifyCommand } from './verify.js';

/** Every subcommand, in the order `--help` lists them. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export const commands: CommandModule<any, any>[] = [createCommand, infoCommand, getCommand, convertCommand, copyCommand, mergeCommand, createmetaCommand, checkCommand, validateCommand, streamCommand, serveCommand, backupCommand, listCommand, restoreCommand, pruneCommand, verifyCommand];
