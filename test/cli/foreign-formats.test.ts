import * as fs from 'node:fs';
import * as path from 'node:path';
import { cli, expectOneLineError } from '../helpers/cli.js';
import { makeTempDir } from '../helpers/tmp.js';
import { HAVE_QEMU, requireTool, run } from '../helpers/tools.js';

/**
 * Containers vhdsync has no driver for, made by qemu-img, are refused by name on every command path (exit 1, one
 * line) instead of being read as raw disks of their container bytes; `--input-format raw` (`--format raw` where
 * that option is free) takes them as raw on purpose.
 */
const FORMATS: Array<[qemu: string, named: RegExp]> = [
  ['qcow', /qcow \(version 1\) image/],
  ['vmdk', /VMDK sparse extent/],
  ['vdi', /VirtualBox VDI image/],
  ['qed', /QED image/],
  ['parallels', /Parallels image/],
];

describe('formats vhdsync does not read', () => {
  let tmp: ReturnType<typeof makeTempDir>;
  const p = (name: string) => path.join(tmp.dir, name);
  const ok = (args: string[]) => {
    const r = cli(args);
    expect({ args, status: r.status, stderr: r.stderr }).toEqual({ args, status: 0, stderr: '' });
    return r.stdout;
  };
  beforeAll(() => {
    tmp = makeTempDir();
    if (!HAVE_QEMU) return;
    for (const [f] of FORMATS) run('qemu-img', ['create', '-q', '-f', f, p(`x.${f}`), '1M']);
    ok(['create', p('t.vhdx'), '--size', '4M']);
    ok(['createmeta', p('t.vhdx')]);
  });
  afterAll(() => tmp.cleanup());

  it.each(FORMATS.map(([f, named], i) => [f, named, i] as const))('%s: refused by name, accepted with --format raw / --input-format raw', (f, named, i) => {
    if (!requireTool(HAVE_QEMU, 'qemu-img')) return;
    const file = p(`x.${f}`);
    expectOneLineError(cli(['info', file]), 1, new RegExp(`${named.source}.*does not read.*--input-format raw`));
    expect(Number(ok(['get', file, 'virtual-size', i % 2 ? '--format' : '--input-format', 'raw']))).toBe(fs.statSync(file).size);
  });

  // Each command path once, the formats taking turns.
  const refusals: Array<[string, (x: string) => string[]]> = [
    ['info', (x) => ['info', x]],
    ['get', (x) => ['get', x, 'virtual-size']],
    ['createmeta', (x) => ['createmeta', x]],
    ['createmeta (several files)', (x) => ['createmeta', p('t.vhdx'), x]],
    ['check (source)', (x) => ['check', x, p('t.vhdx')]],
    ['check (target)', (x) => ['check', p('t.vhdx'), x]],
    ['validate', (x) => ['validate', x]],
    ['convert', (x) => ['convert', x, p('out.vhdx')]],
    ['copy (source)', (x) => ['copy', x, p('t.vhdx')]],
    ['copy (target)', (x) => ['copy', p('t.vhdx'), x]],
    ['copy --createmeta (VhdBlockBackup syntax)', (x) => ['--copy', '--createmeta', x, p('t.vhdx')]],
    ['merge', (x) => ['merge', x]],
    ['create --parent', (x) => ['create', p('child.vhdx'), '--parent', x]],
  ];
  it.each(refusals.map(([name, args], i) => [name, args, FORMATS[i % FORMATS.length]] as const))('%s refuses', (_name, args, [f, named]) => {
    if (!requireTool(HAVE_QEMU, 'qemu-img')) return;
    const file = p(`x.${f}`);
    const before = fs.readdirSync(tmp.dir).sort();
    const r = cli(args(file));
    if (args(file).includes(p('t.vhdx')) && args(file)[0] === 'createmeta') {
      // Several files: the foreign one is reported by name, the others are still processed.
      expect(r.status).toBe(1);
      expect(r.stderr).toMatch(new RegExp(`${file}: ${named.source}`));
    } else {
      expectOneLineError(r, 1, new RegExp(`${file}: ${named.source}, a format vhdsync does not read`));
    }
    // Nothing was left behind: no diff, no metafile, no lock, no temp file.
    expect(fs.readdirSync(tmp.dir).sort()).toEqual(before);
  });

  it('with --input-format raw a VMDK is hashed, compared, copied and converted as the raw disk it then is', () => {
    if (!requireTool(HAVE_QEMU, 'qemu-img')) return;
    const file = p('x.vmdk');
    const size = fs.statSync(file).size;
    ok(['create', p('same.vhdx'), '--size', String(size)]);
    ok(['createmeta', p('same.vhdx')]);
    ok(['createmeta', file, '--input-format', 'raw']);
    ok(['validate', file, '--format', 'raw']);
    expect(JSON.parse(ok(['check', file, p('same.vhdx'), '--format', 'raw', '--json'])).changedBlocks).toBe(1);
    ok(['copy', file, p('same.vhdx'), '--input-format', 'raw']);
    ok(['merge', p('same_diff.vhdx')]);
    ok(['convert', p('same.vhdx'), p('back.raw')]);
    expect(fs.readFileSync(p('back.raw')).equals(fs.readFileSync(file))).toBe(true);
    ok(['convert', file, p('direct.raw'), '--input-format', 'raw']);
    expect(fs.readFileSync(p('direct.raw')).equals(fs.readFileSync(file))).toBe(true);
    // The VMDK is still a VMDK to qemu: nothing wrote into it.
    expect(run('qemu-img', ['info', '--output=json', file]).toString()).toMatch(/"format": "vmdk"/);
  });
});
