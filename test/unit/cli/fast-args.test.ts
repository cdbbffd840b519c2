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

// The same for merge's command line: one positional word, its flags.
const MERGE_WORDS = [
  '--json', '--no-json', '-q', '--quiet', '--debug', '--progress', '--no-progress', '--keep-diff', '--no-keep-diff', '--keep-diff=true',
  '--keepDiff', '--discard', '--no-discard', '--vhd-size', '--vhd-size=chs', '--vhd-size=bogus', 'chs', 'current', '--smb-credentials', 'creds',
  'a_diff.vhdx', 'b_diff.vhd', '1', 'true', 'false', '--', '-', '--bogus', '--help', '-h', '--version', 'merge',
];
const mergeWellFormed = fc.oneof(
  fc.constantFrom(['--json'], ['-q'], ['--no-progress'], ['--debug'], ['--keep-diff'], ['--discard'], ['--vhd-size=current']),
  fc.tuple(fc.constant('--vhd-size'), fc.constantFrom('chs', 'current')),
  fc.constant(['--smb-credentials', 'creds']),
);
const mergePiece = fc.oneof({ weight: 8, arbitrary: mergeWellFormed }, { weight: 1, arbitrary: fc.constantFrom(...MERGE_WORDS).map((w) => [w]) });

/**
 * Property, yargs as the oracle: every command line of `pieces` (around one positional word `word`) that the fast
 * path reads gives the values yargs gives; more than `minFast` of the `runs` must have been read by the fast path
 * (each run builds a yargs parser: the two commands share the 300 runs the createmeta property had alone).
 */
async function agreesWithYargs(name: 'createmeta' | 'merge', pieces: fc.Arbitrary<readonly string[]>, word: string, runs: number, minFast: number): Promise<void> {
  const command = (await loadFastCommand(name))!;
  const options = command.fast.options();
  const commands = await loadCommands(name);
  const keys = [command.fast.positional, 'debug', 'progress', 'quiet', 'smb-credentials', ...Object.keys(options)];
  let fastOnes = 0;
  await fc.assert(
    fc.asyncProperty(
      fc.array(globalPiece, { maxLength: 2 }),
      // Options mostly once each (a repeated one is yargs' to read), positional words anywhere among them.
      fc.uniqueArray(pieces, { selector: (p) => (p[0].startsWith('-') ? p[0].split('=')[0] : p.join(' ')), maxLength: 6 }),
      fc.nat(6),
      async (before, after, wordAt) => {
        const own = after.flat();
        own.splice(Math.min(wordAt, own.length), 0, word);
        const args = [...before.flat(), name, ...own];
        const at = commandIndexIn(args);
        if (args[at] !== name) return;
        const fast = parseSimple(args, at, command.fast.positional, GLOBAL_OPTIONS, options, command.fast.one);
        if (!fast) return;
        fastOnes++;
        let seen: Record<string, unknown> | null = null;
        const capture = commands.map((c) => (c.command === command.command ? { ...c, handler: (a: Record<string, unknown>) => void (seen = a) } : c));
        await (await buildParser(args, capture)).parseAsync();
        expect(seen).not.toBeNull();
        for (const k of keys) expect([k, fast[k]]).toEqual([k, seen![k]]);
      },
    ),
    { numRuns: runs },
  );
  // The property must have compared real command lines, not only lines left to yargs.
  expect(fastOnes).toBeGreaterThan(minFast);
}

describe('the fast path reads createmeta and merge command lines as yargs does', () => {
  const tmp = makeTempDir('fast-args-');
  const savedCredentials = process.env.VHDSYNC_SMB_CREDENTIALS;
  afterAll(() => {
    tmp.cleanup();
    setQuiet(false);
    if (savedCredentials === undefined) delete process.env.VHDSYNC_SMB_CREDENTIALS;
    else process.env.VHDSYNC_SMB_CREDENTIALS = savedCredentials;
  });

  it('gives the values yargs gives, or leaves the line to yargs (property, yargs as the oracle)', async () => {
    await agreesWithYargs('createmeta', piece, 'c.raw', 220, 45);
  });

  it('reads merge lines as yargs does, with exactly one diff (property, yargs as the oracle)', async () => {
    await agreesWithYargs('merge', mergePiece, 'c_diff.vhdx', 80, 20);
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

  it('leaves merge lines with other than one diff to yargs, whose messages they keep', () => {
    const missing = path.join(tmp.dir, 'gone_diff.vhdx');
    const fast = cli(['merge', '--json', '--keep-diff', missing]);
    expect([fast.status, fast.stderr]).toEqual([1, `vhdsync: ${missing}: no such file\n`]);
    const two = cli(['merge', missing, 'other']);
    expect([two.status, two.stderr]).toEqual([2, 'vhdsync: Unknown argument: other\n']);
    expect(cli(['merge', '-q']).stderr).toMatch(/^vhdsync: Not enough non-option arguments/);
  });
});
