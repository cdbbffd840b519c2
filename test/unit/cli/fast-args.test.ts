import { writeFileSync } from 'node:fs';
import * as path from 'node:path';
import fc from 'fast-check';
import { buildParser, commandIndexIn, GLOBAL_OPTIONS } from '../../../src/cli/main.js';
import { loadCommands, loadFastCommand } from '../../../src/cli/commands/index.js';
import { parseSimple } from '../../../src/cli/fast-args.js';
import { setQuiet } from '../../../src/cli/output.js';
import { cli } from '../../helpers/cli.js';
import { makeTempDir } from '../../helpers/tmp.js';

// Words a createmeta command line is made of: options in every spelling yargs reads, their values (valid, invalid,
// option-like), positionals, and the forms the fast path leaves to yargs.
const WORDS = [
  '--json', '--no-json', '--json=true', '-q', '--quiet', '--no-quiet', '--debug', '--progress', '--no-progress', '-qj', '-j',
  '--hash', '--hash=sha256', '--hash=sha512', 'xxh128', 'sha256', 'sha512', '--no-hash',
  '--block-size', '--block-size=1M', '--block-size=', '64K', '4096', '--blockSize', '--block-size=-1',
  '--format', 'vbb', 'native', 'qcow2', '--format=vbb', '--input-format', '--input-format=vhd', 'raw',
  '--vhd-size', 'chs', 'current', '--ignore-checksums', '--ignore-parent-mismatch', '--ignore-checksums=false',
  '--smb-credentials', 'creds', '--smb-credentials=creds',
  'a.raw', 'b.vhdx', '1', 'true', 'false', '--', '-', '--bogus', '--help', '-h', '--version', 'createmeta',
];

// Mostly well-formed pieces (an option and a value of its kind, a file name), some words of any kind anywhere.
const anyWord = fc.constantFrom(...WORDS).map((w) => [w]);
const wellFormed = fc.oneof(
  fc.constantFrom(['a.raw'], ['b.vhdx'], ['--json'], ['-q'], ['--no-progress'], ['--debug'], ['--ignore-checksums'], ['--hash=sha256'], ['--block-size=1M']),
  fc.tuple(fc.constant('--hash'), fc.constantFrom('xxh128', 'sha256')),
  fc.tuple(fc.constant('--block-size'), fc.constantFrom('64K', '4096', '1M')),
  fc.tuple(fc.constant('--format'), fc.constantFrom('vbb', 'native')),
  fc.tuple(fc.constant('--input-format'), fc.constantFrom('raw', 'vhd', 'qcow2')),
  fc.tuple(fc.constant('--vhd-size'), fc.constantFrom('chs', 'current')),
  fc.constant(['--smb-credentials', 'creds']),
);
const piece = fc.oneof({ weight: 8, arbitrary: wellFormed }, { weight: 1, arbitrary: anyWord });
const globalPiece = fc.oneof({ weight: 8, arbitrary: fc.constantFrom(['--debug'], ['-q'], ['--no-progress'], ['--smb-credentials', 'creds']) }, { weight: 1, arbitrary: anyWord });

describe('the fast path reads createmeta command lines as yargs does', () => {
  const tmp = makeTempDir('fast-args-');
  const savedCredentials = process.env.VHDSYNC_SMB_CREDENTIALS;
  afterAll(() => {
    tmp.cleanup();
    setQuiet(false);
    if (savedCredentials === undefined) delete process.env.VHDSYNC_SMB_CREDENTIALS;
    else process.env.VHDSYNC_SMB_CREDENTIALS = savedCredentials;
  });

  it('gives the values yargs gives, or leaves the line to yargs (property, yargs as the oracle)', async () => {
    const command = (await loadFastCommand('createmeta'))!;
    const options = command.fast.options();
    const commands = await loadCommands('createmeta');
    const keys = ['files', 'debug', 'progress', 'quiet', 'smb-credentials', ...Object.keys(options)];
    let fastOnes = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.array(globalPiece, { maxLength: 2 }),
        // Options mostly once each (a repeated one is yargs' to read), file names anywhere among them.
        fc.uniqueArray(piece, { selector: (p) => (p[0].startsWith('-') ? p[0].split('=')[0] : p.join(' ')), maxLength: 6 }),
        fc.nat(6),
        async (before, after, fileAt) => {
          const own = after.flat();
          own.splice(Math.min(fileAt, own.length), 0, 'c.raw');
          const args = [...before.flat(), 'createmeta', ...own];
          const at = commandIndexIn(args);
          if (args[at] !== 'createmeta') return;
          const fast = parseSimple(args, at, 'files', GLOBAL_OPTIONS, options);
          if (!fast) return;
          fastOnes++;
          let seen: Record<string, unknown> | null = null;
          const capture = commands.map((c) => (c.command === command.command ? { ...c, handler: (a: Record<string, unknown>) => void (seen = a) } : c));
          await (await buildParser(args, capture)).parseAsync();
          expect(seen).not.toBeNull();
          for (const k of keys) expect([k, fast[k]]).toEqual([k, seen![k]]);
        },
      ),
      { numRuns: 300 },
    );
    // The property must have compared real command lines, not only lines left to yargs.
    expect(fastOnes).toBeGreaterThan(60);
  });

  it('runs createmeta without yargs, and with it for what the fast path leaves alone', () => {
    const img = path.join(tmp.dir, 'a.raw');
    writeFileSync(img, Buffer.alloc(3 << 20));
    const fast = cli(['createmeta', '--json', '--block-size', '1M', img]);
    expect(fast.status).toBe(0);
    expect(JSON.parse(fast.stdout)[0]).toMatchObject({ blocks: 3, blockSize: 1 << 20, zeroBlocks: 3 });
    // VhdBlockBackup's syntax, -q, and a camel-cased option (yargs' to read) give the same file.
    expect(cli(['--createmeta', '-q', img]).stdout).toBe('');
    const camel = cli(['createmeta', '--json', '--blockSize', '1M', img]);
    expect(JSON.parse(camel.stdout)[0]).toMatchObject({ blocks: 3, blockSize: 1 << 20 });
    const bad = cli(['createmeta', '--hash', 'sha512', img]);
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/^vhdsync: Invalid values: Argument: hash, Given: "sha512"/);
  });
});
