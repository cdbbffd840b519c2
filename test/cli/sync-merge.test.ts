import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { makeTempDir } from '../helpers/tmp.js';
import { HAVE_QEMU, PYTHON_VHDI, requireTool, pyvhdiRead, run } from '../helpers/tools.js';
import { cli, expectOneLineError } from '../helpers/cli.js';
import { MiB, ourDiff, qemuImage, qemuSame, type Change } from './sync-helpers.js';

const ok = requireTool(HAVE_QEMU && PYTHON_VHDI !== null, 'qemu-img, qemu-io and pyvhdi');
const d = ok ? describe : describe.skip;

// 4 KiB-aligned runs only: libvhdi mis-decodes VHD sector bitmaps for odd sectors (docs: interop-testing).
const CHILD: Change[] = [
  { offset: 64 << 10, length: 64 << 10, fill: 0x77 },
  { offset: 3 * MiB, length: 8192, fill: 0x78 },
  { offset: 42 * MiB, length: MiB, fill: 'zero' },
  { offset: 60 * MiB, length: 4096, fill: 0x79 },
  { offset: 33 * MiB - 4096, length: 8192, fill: 0x7a },
];

d('merge (end to end, against qemu and libvhdi)', () => {
  let tmp: ReturnType<typeof makeTempDir>;
  beforeEach(() => (tmp = makeTempDir()));
  afterEach(() => tmp.cleanup());

  it.each([
    ['vhdx', 'vhdx', 'subformat=dynamic,block_size=32M'],
    ['vhdx', 'vhdx', 'subformat=fixed,block_state_zero=off'],
    ['vhd', 'vpc', 'subformat=dynamic,force_size=on'],
    ['vhd', 'vpc', 'subformat=fixed,force_size=on'],
  ] as const)('%s parent (%s, %s): the parent then reads what the chain read', async (fmt, qfmt, opts) => {
    const parent = path.join(tmp.dir, `t.${fmt}`);
    const diff = path.join(tmp.dir, `t_diff.${fmt}`);
    qemuImage(parent, qfmt, 64 * MiB, [
      { offset: 0, length: 4 * MiB, fill: 0xa5 },
      { offset: 40 * MiB, length: 8 * MiB, fill: 0x33 },
    ], opts);
    await ourDiff(parent, diff, fmt, CHILD);
    const expected = path.join(tmp.dir, 'expected.raw');
    writeFileSync(expected, pyvhdiRead(diff, parent));
    const before = cli(['get', parent, 'uuid']).stdout.trim();

    const r = cli(['merge', diff, '--json']);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const summary = JSON.parse(r.stdout);
    expect(summary.bytesMerged).toBe(64 * 1024 + 8192 + MiB + 4096 + 8192);
    expect(summary.resumed).toBe(false);

    const cmp = qemuSame(parent, qfmt, expected, 'raw');
    expect(cmp.output).toContain('identical');
    if (fmt === 'vhdx') {
      run('qemu-img', ['check', '-q', '-f', 'vhdx', parent]);
      expect(cli(['get', parent, 'uuid']).stdout.trim()).not.toBe(before);
    }
    expect(pyvhdiRead(parent).equals(readFileSync(expected))).toBe(true);
    expect(readdirSync(tmp.dir).sort()).toEqual(['expected.raw', `t.${fmt}`]);
  });

  it('--keep-diff keeps the diff; a rerun on a finished merge refuses the now-mismatched parent', () => {
    const parent = path.join(tmp.dir, 't.vhdx');
    const diff = path.join(tmp.dir, 't_diff.vhdx');
    qemuImage(parent, 'vhdx', 16 * MiB, [{ offset: 0, length: MiB, fill: 1 }]);
    return ourDiff(parent, diff, 'vhdx', [{ offset: 4096, length: 4096, fill: 2 }]).then(() => {
      const r = cli(['merge', '--keep-diff', diff]);
      expect(r.status).toBe(0);
      expect(r.stdout).toMatch(/merged .*t_diff\.vhdx into .*t\.vhdx/);
      expect(existsSync(diff)).toBe(true);
      expectOneLineError(cli(['merge', diff]), 1, /does not match/);
    });
  });

  it('refuses with one line: missing parent, wrong parent, not a differencing image, missing diff', async () => {
    const parent = path.join(tmp.dir, 't.vhdx');
    const diff = path.join(tmp.dir, 't_diff.vhdx');
    qemuImage(parent, 'vhdx', 16 * MiB, []);
    await ourDiff(parent, diff, 'vhdx', [{ offset: 0, length: 4096, fill: 2 }]);
    expectOneLineError(cli(['merge', parent]), 2, /not a differencing image/);
    expectOneLineError(cli(['merge', path.join(tmp.dir, 'nope.vhdx')]), 1, /no such file/);
    const raw = path.join(tmp.dir, 'x.raw');
    writeFileSync(raw, Buffer.alloc(4096));
    expectOneLineError(cli(['merge', raw]), 2, /not a differencing image/);
    // A merge of another diff into this parent is pending: refused, the state is left alone.
    const state = { version: 1, diff: path.join(tmp.dir, 'other_diff.vhdx'), diffId: '{x}', parent, parentBefore: { contentId: '{y}', fileSize: 1, mtimeMs: 0 }, step: 'merging', doneOffset: 0, bytesMerged: 0, extentsMerged: 0, virtualSize: 16 * MiB, keepDiff: false, startedAt: 'now' };
    writeFileSync(parent + '.merge-state.json', JSON.stringify(state));
    expectOneLineError(cli(['merge', diff]), 1, /another merge into this parent is pending: the merge of .*other_diff\.vhdx into .* the diff is gone .*cannot be finished here; .*vhdsync merge --discard /);
    writeFileSync(parent + '.merge-state.json', '{"version": 1');
    expectOneLineError(cli(['merge', diff]), 1, /merge-state\.json: not a valid merge state file/);
    run('rm', [parent + '.merge-state.json']);
    // Another image under the parent's name: its DataWriteGuid differs from the diff's parent_linkage.
    run('qemu-img', ['create', '-q', '-f', 'vhdx', parent + '.new', '16M']);
    run('mv', ['-f', parent + '.new', parent]);
    expectOneLineError(cli(['merge', diff]), 1, /does not match/);
    run('rm', [parent]);
    expectOneLineError(cli(['merge', diff]), 1, /parent image not found/);
    expect(existsSync(parent + '.merge-state.json')).toBe(false);
  });

  it.each([
    ['vhdx', 'vhdx'],
    ['vhd', 'vpc'],
  ] as const)('into a differencing %s parent: the middle of a chain takes the child, the base is untouched', async (fmt, qfmt) => {
    const base = path.join(tmp.dir, `base.${fmt}`);
    const mid = path.join(tmp.dir, `mid.${fmt}`);
    const top = path.join(tmp.dir, `top.${fmt}`);
    qemuImage(base, qfmt, 32 * MiB, [{ offset: 0, length: 8 * MiB, fill: 0x01 }], fmt === 'vhd' ? 'subformat=dynamic,force_size=on' : '');
    await ourDiff(base, mid, fmt, [{ offset: MiB, length: MiB, fill: 0x02 }]);
    await ourDiff(mid, top, fmt, [
      { offset: MiB + 4096, length: 8192, fill: 0x03 },
      { offset: 20 * MiB, length: 65536, fill: 0x04 },
      { offset: 2 * MiB, length: 65536, fill: 'zero' },
    ]);
    const chain3 = pyChain([top, mid, base]);
    // The oracle really resolved all three layers.
    expect([chain3[0], chain3[MiB], chain3[MiB + 4096], chain3[2 * MiB], chain3[20 * MiB]]).toEqual([1, 2, 3, 0, 4]);
    const baseBefore = readFileSync(base);
    // VhdBlockBackup-style syntax maps onto the same command.
    expect(cli(['--merge', top]).status).toBe(0);
    // libvhdi reads the merged middle through the base exactly as it read the three-image chain.
    expect(pyChain([mid, base]).equals(chain3)).toBe(true);
    expect(readFileSync(base).equals(baseBefore)).toBe(true);
  });
});

/** Reads a chain [child, ..., base] through pyvhdi with each image's parent set explicitly. */
function pyChain(images: string[]): Buffer {
  const script = `
import pyvhdi, sys
files = []
for name in sys.argv[1:]:
    f = pyvhdi.file(); f.open(name); files.append(f)
for child, parent in reversed(list(zip(files, files[1:]))):
    child.set_parent(parent)
f = files[0]; size = f.media_size; off = 0; out = sys.stdout.buffer
while off < size:
    n = min(1 << 24, size - off); out.write(f.read_buffer_at_offset(n, off)); off += n
`;
  return run(PYTHON_VHDI!, ['-c', script, ...images]);
}
