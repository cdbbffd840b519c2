import { writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { commandWordIn } from '../../../src/cli/main.js';
import { CATALOG, type CommandName } from '../../../src/cli/commands/catalog.js';
import { loadCommands } from '../../../src/cli/commands/index.js';
import { cli } from '../../helpers/cli.js';
import { makeTempDir } from '../../helpers/tmp.js';

describe('the CLI loads only the command that runs', () => {
  const tmp = makeTempDir('lazy-cli-');
  afterAll(() => tmp.cleanup());

  it.each([
    [['info', 'x'], 'info'],
    [['-q', '--debug', 'copy', 's', 't'], 'copy'],
    [['--smb-credentials', 'creds', 'createmeta', 'a'], 'createmeta'],
    [['--smb-credentials=creds', 'merge', 'd'], 'merge'],
    [['--no-progress', 'check', 's', 't'], 'check'],
    [['--help'], undefined],
    [['--', 'info', 'x'], 'info'],
  ])('%j runs %s', (args, word) => expect(commandWordIn(args)).toBe(word));

  it('lists every command and loads the named one with its options', async () => {
    for (const name of Object.keys(CATALOG) as CommandName[]) {
      const commands = await loadCommands(name);
      expect(commands.map((c) => c.command)).toEqual(Object.values(CATALOG).map((c) => c.command));
      for (const c of commands) expect(c.builder !== undefined).toBe(c.command === CATALOG[name].command);
    }
  });

  it('runs a command after global options, shows a command\'s own help, and answers --version', () => {
    const img = path.join(tmp.dir, 'a.raw');
    writeFileSync(img, Buffer.alloc(1 << 20));
    const info = cli(['--debug', '-q', 'info', '--json', img]);
    expect(info.status).toBe(0);
    expect(info.stdout).toBe('');
    const verbose = cli(['--no-progress', 'get', img, 'virtual-size']);
    expect(verbose.stdout.trim()).toBe(String(1 << 20));
    const help = cli(['copy', '--help']);
    expect(help.status).toBe(0);
    expect(help.stdout).toContain('--diffdir');
    const version = cli(['--version']);
    expect(version.stdout.trim()).toBe(cli(['--debug', '--version']).stdout.trim());
  });
});
