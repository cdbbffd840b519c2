import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';
import fc from 'fast-check';
import { buildParser, commandIndexIn, GLOBAL_OPTIONS } from '../../../src/cli/main.js';
import { loadCommands, loadFastCommand } from '../../../src/cli/commands/index.js';
import { parseSimple } from '../../../src/cli/fast-args.js';
import { setQuiet } from '../../../src/cli/output.js';
import { BIN, cli } from '../../helpers/cli.js';
import { makeTempDir } from '../../helpers/tmp.js';

import type { CommandName } from '../../../src/cli/commands/catalog.js';

/** Words any command line may hold: global options, and the forms the fast path leaves to yargs. */
const COMMON = [
  '-q', '--quiet', '--no-quiet', '--debug', '--progress', '--no-progress', '-qj', '-j', '--json', '--no-json', '--json=true',
  '--smb-credentials', 'creds', '--smb-credentials=creds', '--vhd-size', 'chs', 'current', '--ignore-checksums',
  '--ignore-parent-mismatch', '--ignore-checksums=false', '1', 'true', 'false', '--', '-', '--bogus', '--help', '-h', '--version',
];

/**
 * What a command's lines are made of: its own words (options in every spelling yargs reads, their values: valid,
 * invalid, option-like), mostly well-formed pieces (an option and a value of its kind), and the positional words
 * each line gets at random places.
 */
interface Grammar {
  words: string[];
  pieces: string[][];
  positionals: string[];
  /** Runs of the property, and how many more than `minFast` the fast path must read (each run builds a yargs parser: the four commands share about the time the createmeta property had alone). */
  runs: number;
  minFast: number;
}

const GRAMMARS: Partial<Record<CommandName, Grammar>> = {
  createmeta: {
    words: [
      '--hash', '--hash=sha256', '--hash=sha512', 'xxh128', 'sha256', 'sha512', '--no-hash',
      '--block-size', '--block-size=1M', '--block-size=', '64K', '4096', '--blockSize', '--block-size=-1',
      '--format', 'vbb', 'native', 'qcow2', '--format=vbb', '--input-format', '--input-format=vhd', 'raw', 'a.raw', 'b.vhdx', 'createmeta',
    ],
    pieces: [
      ['a.raw'], ['b.vhdx'], ['--json'], ['-q'], ['--no-progress'], ['--debug'], ['--ignore-checksums'], ['--hash=sha256'], ['--block-size=1M'],
      ['--hash', 'xxh128'], ['--hash', 'sha256'], ['--block-size', '64K'], ['--block-size', '4096'], ['--format', 'vbb'], ['--format', 'native'],
      ['--input-format', 'raw'], ['--input-format', 'qcow2'], ['--vhd-size', 'chs'], ['--smb-credentials', 'creds'],
    ],
    positionals: ['c.raw'],
    runs: 100,
    minFast: 20,
  },
  merge: {
    words: [
      '--keep-diff', '--no-keep-diff', '--keep-diff=true', '--keepDiff', '--discard', '--no-discard', '--vhd-size=chs', '--vhd-size=bogus',
      'a_diff.vhdx', 'b_diff.vhd', 'merge',
    ],
    pieces: [['--json'], ['-q'], ['--no-progress'], ['--debug'], ['--keep-diff'], ['--discard'], ['--vhd-size=current'], ['--vhd-size', 'chs'], ['--vhd-size', 'current'], ['--smb-credentials', 'creds']],
    positionals: ['c_diff.vhdx'],
    runs: 60,
    minFast: 15,
  },
  convert: {
    words: [
      '--format', '--format=qcow2', 'vhd', 'vhdx', 'qcow2', 'raw', 'bogus', '--type', 'fixed', 'dynamic', '--type=fixed',
      '--block-size', '--cluster-size', '--cluster-size=64K', '--clusterSize', '2M', '--block-size=', '--logical-sector-size',
      '--logical-sector-size=4096', '4096', '512', '--force', '--no-force', '--force=true', '--input-format', '--input-format=vhd',
      'a.vhd', 'stdin:', 'convert',
    ],
    pieces: [
      ['--json'], ['-q'], ['--no-progress'], ['--force'], ['--ignore-checksums'], ['--format=vhdx'], ['--cluster-size=1M'],
      ['--format', 'raw'], ['--format', 'qcow2'], ['--type', 'fixed'], ['--type', 'dynamic'], ['--block-size', '2M'], ['--cluster-size', '64K'],
      ['--input-format', 'vhd'], ['--vhd-size', 'current'], ['--logical-sector-size', '4096'], ['--smb-credentials', 'creds'],
    ],
    positionals: ['s.qcow2', 'd.raw'],
    runs: 80,
    minFast: 15,
  },
  stream: {
    words: [
      '--source', '--source=-', '--source=', 'stdin:', 'in.vhdx', '--destination', '--destination=null:', 'null:', 'out.vhd', 'http://h/x',
      '--destination-format', '--destination-format=vhd', 'vhd', 'vhdx', 'chunked', 'qcow2', 'raw', 'bogus', '--input-format',
      '--source-format', '--source-format=qcow2', '--relative-to', 'base.vhd', '--size', '1G', '--force', '--machine', '--no-machine',
      '--insecure', '--ca-cert', 'ca.pem', '--http-credentials', 'creds.txt', '--destinationFormat', 'stream',
    ],
    pieces: [
      ['--json'], ['-q'], ['--no-progress'], ['--progress'], ['--force'], ['--machine'], ['--insecure'], ['--destination=out.vhd'],
      ['--source', 'in.vhdx'], ['--source', 'stdin:'], ['--destination', 'out.vhd'], ['--destination', 'null:'], ['--destination', 'http://h/x'],
      ['--destination-format', 'vhd'], ['--destination-format', 'qcow2'], ['--source-format', 'raw'], ['--input-format', 'vhd'],
      ['--relative-to', 'base.vhd'], ['--size', '1G'], ['--ca-cert', 'ca.pem'], ['--http-credentials', 'creds.txt'], ['--vhd-size', 'chs'],
    ],
    positionals: [],
    runs: 80,
    minFast: 15,
  },
  copy: {
    words: [
      '--createmeta', '--no-createmeta', '--createmeta=true', '--diffdir', '--diffdir=', 'dd', '--force', '--no-force', '--diff-format',
      'image', 'chunked', 'bogus', '--diff-format=chunked', '--diffFormat', '--format', 'vhdx', 'raw', '--input-format=vhd', 'a.raw', 'copy',
    ],
    pieces: [
      ['--json'], ['-q'], ['--no-progress'], ['--createmeta'], ['--force'], ['--diffdir', 'dd'], ['--diffdir=dd'], ['--diff-format', 'chunked'],
      ['--diff-format', 'image'], ['--format', 'raw'], ['--input-format', 'vhdx'], ['--vhd-size', 'current'], ['--smb-credentials', 'creds'],
    ],
    positionals: ['s.raw', 't.vhdx'],
    runs: 60,
    minFast: 15,
  },
  backup: {
    words: [
      '--repo', '--repo=', 'r', 's3://b/p', '--name', 'd', '--keep', '3', '--keep=3', '--keepDaily', '--jobs', '4', '--jobs=1', '--reflink',
      'auto', 'always', 'bogus', '--full', '--no-full', '--full=true', '--block-size', '1M', '--hash', 'sha256', 'sha512', '--wait',
      '--wait=5', '--profile', 'p', '--s3-path-style', '--no-s3-path-style', '--insecure', '--ca-cert', 'ca.pem', '--input-format', 'vhdx',
      'a.raw', 'backup',
    ],
    pieces: [
      ['--json'], ['-q'], ['--no-progress'], ['--full'], ['--insecure'], ['--s3-path-style'],
      ['--no-s3-path-style'], ['--name', 'd'], ['--name=d'], ['--reflink', 'never'], ['--reflink=always'], ['--hash', 'sha256'], ['--block-size', '64K'],
      ['--wait=5'], ['--wait', '10'], ['--profile', 'p'], ['--ca-cert', 'ca.pem'], ['--input-format', 'vhdx'], ['--vhd-size', 'chs'], ['--keep', '3'],
    ],
    // --repo is required (a line without it is yargs' to refuse, checked below): every line gets one, anywhere.
    positionals: ['c.raw', '--repo=s3://b/p'],
    runs: 60,
    minFast: 10,
  },
};

const globalPiece = (words: string[]) =>
  fc.oneof(
    { weight: 8, arbitrary: fc.constantFrom(['--debug'], ['-q'], ['--no-progress'], ['--smb-credentials', 'creds']) },
    { weight: 1, arbitrary: fc.constantFrom(...words).map((w) => [w]) },
  );

describe('the fast path reads command lines as yargs does', () => {
  const tmp = makeTempDir('fast-args-');
  const savedCredentials = process.env.VHDSYNC_SMB_CREDENTIALS;
  afterAll(() => {
    tmp.cleanup();
    setQuiet(false);
    if (savedCredentials === undefined) delete process.env.VHDSYNC_SMB_CREDENTIALS;
    else process.env.VHDSYNC_SMB_CREDENTIALS = savedCredentials;
  });

  it.each(Object.keys(GRAMMARS) as CommandName[])('%s: the values yargs gives, or the line left to yargs (property, yargs as the oracle)', async (name) => {
    const grammar = GRAMMARS[name]!;
    const words = [...COMMON, ...grammar.words];
    const command = (await loadFastCommand(name))!;
    const options = command.fast.options();
    const positionals = command.fast.positionals;
    const commands = await loadCommands(name);
    const names = 'rest' in positionals ? [positionals.rest] : [...positionals];
    const keys = [...names, 'debug', 'progress', 'quiet', 'smb-credentials', ...Object.keys(options)];
    const piece = fc.oneof({ weight: 8, arbitrary: fc.constantFrom(...grammar.pieces) }, { weight: 1, arbitrary: fc.constantFrom(...words).map((w) => [w]) });
    let fastOnes = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.array(globalPiece(words), { maxLength: 2 }),
        // Options mostly once each (a repeated one is yargs' to read), the positional words anywhere among them.
        fc.uniqueArray(piece, { selector: (p) => (p[0].startsWith('-') ? p[0].split('=')[0] : p.join(' ')), maxLength: 6 }),
        fc.array(fc.nat(6), { minLength: grammar.positionals.length, maxLength: grammar.positionals.length }),
        async (before, after, places) => {
          const own = after.flat();
          grammar.positionals.forEach((w, k) => own.splice(Math.min(places[k], own.length), 0, w));
          const args = [...before.flat(), name, ...own];
          const at = commandIndexIn(args);
          if (args[at] !== name) return;
          const fast = parseSimple(args, at, positionals, GLOBAL_OPTIONS, options);
          if (!fast) return;
          fastOnes++;
          let seen: Record<string, unknown> | null = null;
          const capture = commands.map((c) => (c.command === command.command ? { ...c, handler: (a: Record<string, unknown>) => void (seen = a) } : c));
          await (await buildParser(args, capture)).parseAsync();
          expect(seen).not.toBeNull();
          for (const k of keys) expect([k, fast[k]]).toEqual([k, seen![k]]);
        },
      ),
      { numRuns: grammar.runs },
    );
    // The property must have compared real command lines, not only lines left to yargs.
    expect(fastOnes).toBeGreaterThan(grammar.minFast);
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

  it('leaves backup lines without --repo to yargs, whose message they keep', async () => {
    const command = (await loadFastCommand('backup'))!;
    expect(parseSimple(['backup', 'a.raw'], 0, command.fast.positionals, GLOBAL_OPTIONS, command.fast.options())).toBeNull();
    expect(parseSimple(['backup', 'a.raw', '--repo', 'r'], 0, command.fast.positionals, GLOBAL_OPTIONS, command.fast.options())).toMatchObject({ sources: ['a.raw'], repo: 'r', jobs: 2, reflink: 'auto' });
    expect(cli(['backup', 'a.raw'])).toMatchObject({ status: 2, stderr: 'vhdsync: Missing required argument: repo\n' });
  });

  it('runs convert and stream without yargs (defaults included), and leaves wrong counts of positionals to it', () => {
    const img = path.join(tmp.dir, 'b.raw');
    writeFileSync(img, Buffer.alloc(3 << 20, 7));
    const converted = cli(['convert', '--json', img, '--cluster-size', '1M', path.join(tmp.dir, 'b.qcow2')]);
    expect(converted.status).toBe(0);
    expect(JSON.parse(converted.stdout)).toMatchObject({ format: 'qcow2', virtualSize: 3 << 20 });
    const qemu = JSON.parse(spawnSync('qemu-img', ['info', '--output=json', path.join(tmp.dir, 'b.qcow2')], { encoding: 'utf8' }).stdout);
    expect(qemu).toMatchObject({ format: 'qcow2', 'cluster-size': 1 << 20, 'virtual-size': 3 << 20 });
    // No --destination, no --destination-format: raw on stdout, as yargs' defaults say.
    const streamed = spawnSync(process.execPath, [BIN, 'stream', '--source', img], { maxBuffer: 1 << 24 });
    expect(streamed.status).toBe(0);
    expect(Buffer.compare(streamed.stdout, Buffer.alloc(3 << 20, 7))).toBe(0);
    expect(cli(['convert', img])).toMatchObject({ status: 2, stderr: 'vhdsync: Not enough non-option arguments: got 1, need at least 2\n' });
    expect(cli(['stream', img])).toMatchObject({ status: 2, stderr: `vhdsync: Unknown argument: ${img}\n` });
  });
});
