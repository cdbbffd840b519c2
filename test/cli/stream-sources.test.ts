/**
 * `stream` from chains and with every delta method, checked by implementations nobody here wrote: VHDX chains
 * (base made by qemu-img, child by our writer) and qcow2 chains (both made by qemu-img/qemu-io) streamed full and
 * relative to their base; a digest-based delta between two images with fresh metafiles, read by libvhdi with its
 * base; differencing VHDX output read by libvhdi with its base; `null:` counting for every format; the progress bar; `--input-format` as the other name of `--source-format`.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { BIN, cli } from '../helpers/cli.js';
import { makeTempDir } from '../helpers/tmp.js';
import { HAVE_QEMU, PYTHON_VHDI, pyvhdiRead, requireTool, run } from '../helpers/tools.js';
import { applyFrames } from '../helpers/xapi-frames.js';
import { MiB, ourDiff, qemuImage, qemuWrite, type Change } from './sync-helpers.js';

/** Runs the CLI and returns its stdout as bytes (the stream on a pipe). */
function streamBytes(args: string[]): Buffer {
  const r = spawnSync(process.execPath, [BIN, 'stream', ...args, '--destination', '-'], { maxBuffer: 1 << 28 });
  if (r.status !== 0) throw new Error(`stream ${args.join(' ')} failed: ${r.stderr}`);
  return r.stdout;
}

function json(args: string[]): Record<string, unknown> {
  const r = cli(['stream', ...args, '--json']);
  if (r.status !== 0) throw new Error(`stream ${args.join(' ')} failed: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

const go = HAVE_QEMU ? describe : describe.skip;
if (!HAVE_QEMU) requireTool(false, 'qemu-img');

go('stream sources and deltas', () => {
  let tmp: ReturnType<typeof makeTempDir>;
  const p = (n: string) => path.join(tmp.dir, n);
  const base: Change[] = [
    { offset: 0, length: 5 * MiB, fill: 0x31 },
    { offset: 9 * MiB, length: MiB, fill: 0x32 },
  ];
  // New data, zeros over base data (must come out as zeros), one sector, data across a block boundary.
  const changes: Change[] = [
    { offset: 6 * MiB, length: MiB, fill: 0x77 },
    { offset: MiB, length: MiB, fill: 'zero' },
    { offset: 9 * MiB, length: 512, fill: 0x78 },
    { offset: 3 * MiB + 4096, length: 2 * MiB, fill: 0x79 },
  ];
  beforeAll(() => {
    tmp = makeTempDir('stream-sources-');
    qemuImage(p('base.raw'), 'raw', 12 * MiB, base);
    fs.copyFileSync(p('base.raw'), p('changed.raw'));
    qemuWrite(p('changed.raw'), 'raw', changes);
  });
  afterAll(() => tmp.cleanup());

  /** Checks every full format of a source against the expected raw bytes, and the VHD stream's announced length. */
  function checkFullStreams(source: string, expected: string): void {
    const want = fs.readFileSync(expected);
    const raw = streamBytes(['--source', source]);
    expect(raw.equals(want)).toBe(true);
    const vhd = streamBytes(['--source', source, '--destination-format', 'vhd']);
    fs.writeFileSync(p('full.vhd'), vhd);
    expect(run('qemu-img', ['compare', '-f', 'vpc', '-F', 'raw', p('full.vhd'), expected]).toString()).toMatch(/identical/);
    const frames = streamBytes(['--source', source, '--destination-format', 'chunked']);
    expect(applyFrames(frames, Buffer.alloc(want.length)).equals(want)).toBe(true);
    expect(json(['--source', source, '--destination-format', 'vhd', '--destination', 'null:'])).toMatchObject({ format: 'vhd', bytes: vhd.length });
  }

  it('a VHDX chain (qemu-made base, our child) streamed full and relative to its base (allocation)', async () => {
    qemuImage(p('base.vhdx'), 'vhdx', 12 * MiB, base, 'subformat=dynamic,block_size=1M');
    await ourDiff(p('base.vhdx'), p('child.vhdx'), 'vhdx', changes);
    checkFullStreams(p('child.vhdx'), p('changed.raw'));
    const frames = streamBytes(['--source', p('child.vhdx'), '--relative-to', p('base.vhdx'), '--destination-format', 'chunked']);
    expect(applyFrames(frames, fs.readFileSync(p('base.raw'))).equals(fs.readFileSync(p('changed.raw')))).toBe(true);
    const delta = json(['--source', p('child.vhdx'), '--relative-to', p('base.vhdx'), '--destination-format', 'chunked', '--destination', 'null:']);
    expect(delta).toMatchObject({ method: 'allocation', bytes: frames.length });
    // Only the child's blocks travel: far less than the disk.
    expect(frames.length).toBeLessThan(7 * MiB);
    // A differencing VHDX: to a file (relative locator) and through a pipe (absolute path only); libvhdi reads both
    // with the base as parent, and our reader finds the base through the file's locator.
    expect(json(['--source', p('child.vhdx'), '--relative-to', p('base.vhdx'), '--destination-format', 'vhdx', '--destination', p('delta.vhdx')])).toMatchObject({
      method: 'allocation',
      bytes: fs.statSync(p('delta.vhdx')).size,
    });
    fs.writeFileSync(p('piped-delta.vhdx'), streamBytes(['--source', p('child.vhdx'), '--relative-to', p('base.vhdx'), '--destination-format', 'vhdx']));
    if (PYTHON_VHDI) {
      for (const f of ['delta.vhdx', 'piped-delta.vhdx']) expect(pyvhdiRead(p(f), p('base.vhdx')).equals(fs.readFileSync(p('changed.raw')))).toBe(true);
      expect(run('vhdiinfo', [p('delta.vhdx')]).toString()).toMatch(/Differential/);
    }
    expect(cli(['convert', p('delta.vhdx'), p('delta-flat.raw')]).status).toBe(0);
    expect(fs.readFileSync(p('delta-flat.raw')).equals(fs.readFileSync(p('changed.raw')))).toBe(true);
  });

  it('a qcow2 chain made by qemu streamed full and relative to its base (allocation; zero clusters over base data)', () => {
    run('qemu-img', ['create', '-q', '-f', 'qcow2', p('base.qcow2'), '12M']);
    qemuWrite(p('base.qcow2'), 'qcow2', base);
    run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', p('child.qcow2')]);
    qemuWrite(p('child.qcow2'), 'qcow2', changes);
    run('qemu-img', ['convert', '-O', 'raw', p('child.qcow2'), p('child-qemu.raw')]);
    expect(fs.readFileSync(p('child-qemu.raw')).equals(fs.readFileSync(p('changed.raw')))).toBe(true);
    checkFullStreams(p('child.qcow2'), p('changed.raw'));
    const frames = streamBytes(['--source', p('child.qcow2'), '--relative-to', p('base.qcow2'), '--destination-format', 'chunked']);
    expect(applyFrames(frames, fs.readFileSync(p('base.raw'))).equals(fs.readFileSync(p('changed.raw')))).toBe(true);
    expect(json(['--source', p('child.qcow2'), '--relative-to', p('base.qcow2'), '--destination-format', 'chunked', '--destination', 'null:'])).toMatchObject({
      method: 'allocation',
      bytes: frames.length,
    });
    expect(frames.length).toBeLessThan(5 * MiB);
  });

  it('digest-based when both images have fresh metafiles; content-based once one is stale; libvhdi applies the delta to its base', () => {
    if (!requireTool(Boolean(PYTHON_VHDI), 'pyvhdi')) return;
    expect(cli(['convert', p('base.raw'), p('dbase.vhd')]).status).toBe(0);
    expect(cli(['convert', p('changed.raw'), p('dchanged.vhd')]).status).toBe(0);
    expect(cli(['createmeta', '--block-size', '64K', p('dbase.vhd'), p('dchanged.vhd')]).status).toBe(0);
    const args = ['--source', p('dchanged.vhd'), '--relative-to', p('dbase.vhd'), '--destination-format', 'vhd'];
    const digest = json([...args, '--destination', p('digest.vhd')]);
    expect(digest).toMatchObject({ method: 'digest', bytes: fs.statSync(p('digest.vhd')).size });
    expect(pyvhdiRead(p('digest.vhd'), p('dbase.vhd')).equals(fs.readFileSync(p('changed.raw')))).toBe(true);
    const frames = streamBytes(['--source', p('dchanged.vhd'), '--relative-to', p('dbase.vhd'), '--destination-format', 'chunked']);
    expect(applyFrames(frames, fs.readFileSync(p('base.raw'))).equals(fs.readFileSync(p('changed.raw')))).toBe(true);
    // The source changes after its metafile was made: the digests no longer say what it holds.
    qemuWrite(p('dchanged.vhd'), 'vpc', [{ offset: 11 * MiB, length: 4096, fill: 0x7a }]);
    qemuWrite(p('changed.raw'), 'raw', [{ offset: 11 * MiB, length: 4096, fill: 0x7a }]);
    const content = json([...args, '--destination', p('content.vhd')]);
    expect(content.method).toBe('content');
    expect(pyvhdiRead(p('content.vhd'), p('dbase.vhd')).equals(fs.readFileSync(p('changed.raw')))).toBe(true);
  });

  it('blocks coarser than the stream\'s are scanned: 8 MiB VHDX blocks half zero give the VHD stream qemu-img gives', () => {
    // Four 8 MiB blocks each holding 4 MiB of data and 4 MiB never written: allocated, yet half zeros.
    const runs = [0, 1, 2, 3].map((i) => ({ offset: i * 8 * MiB + (i % 2) * 4 * MiB, length: 4 * MiB, fill: 0x40 + i }));
    qemuImage(p('coarse.raw'), 'raw', 32 * MiB, runs);
    run('qemu-img', ['convert', '-f', 'raw', '-O', 'vhdx', '-o', 'subformat=dynamic,block_size=8M', p('coarse.raw'), p('coarse.vhdx')]);
    const j = json(['--source', p('coarse.vhdx'), '--destination-format', 'vhd', '--destination', p('coarse.vhd')]);
    // 8 VHD blocks of data (2 per run), not the 16 the allocation alone would send.
    expect(j.bytes).toBe(2048 + 512 + 8 * (512 + 2 * MiB) + 512);
    expect(run('qemu-img', ['compare', '-f', 'vpc', '-F', 'raw', p('coarse.vhd'), p('coarse.raw')]).toString()).toMatch(/identical/);
    run('qemu-img', ['convert', '-f', 'vhdx', '-O', 'vpc', '-o', 'subformat=dynamic', p('coarse.vhdx'), p('coarse-qemu.vhd')]);
    // As many blocks as qemu's; ours is one sector longer (vhd-tool's layout keeps the sector at 1536 for a parent
    // locator, where qemu starts its BAT).
    expect(fs.statSync(p('coarse.vhd')).size).toBeLessThanOrEqual(fs.statSync(p('coarse-qemu.vhd')).size + 512);
  });

  it('null: counts without writing anything, for every format', () => {
    const before = fs.readdirSync(tmp.dir).sort();
    for (const format of ['raw', 'vhd', 'vhdx', 'qcow2', 'chunked']) {
      const r = cli(['stream', '--source', p('changed.raw'), '--destination-format', format, '--destination', 'null:', '--json'], { cwd: tmp.dir });
      expect(r.status).toBe(0);
      const j = JSON.parse(r.stdout);
      expect(j).toMatchObject({ format, destination: 'null:', virtualSize: 12 * MiB });
      expect(j.bytes).toBe(streamBytes(['--source', p('changed.raw'), '--destination-format', format]).length);
    }
    expect(fs.readdirSync(tmp.dir).sort()).toEqual(before);
  });

  it('--progress draws bytes done of bytes announced, rate and time; on a terminal by default', () => {
    const r = cli(['stream', '--source', p('changed.raw'), '--destination-format', 'vhd', '--destination', p('progress.vhd'), '--progress']);
    expect(r.status).toBe(0);
    const size = fs.statSync(p('progress.vhd')).size;
    const last = r.stderr.split('\r').filter(Boolean).pop()!;
    expect(last).toMatch(/^streaming \[#+\] 100\.0% /);
    const mib = (size / MiB).toFixed(1);
    expect(last).toContain(`${mib} MiB / ${mib} MiB`);
    expect(last).toMatch(/MiB\/s in \d+:\d\d\n$/);
    // On a pseudo-terminal (util-linux script) the bar appears without --progress; piped (above, without it) it does not.
    if (fs.existsSync('/usr/bin/script')) {
      const t = spawnSync('/usr/bin/script', ['-qec', `${process.execPath} ${BIN} stream --source ${p('changed.raw')} --destination null:`, '/dev/null'], { encoding: 'utf8' });
      expect(t.status).toBe(0);
      expect(t.stdout).toMatch(/streaming \[#+\] 100\.0% 12 MiB \/ 12 MiB/);
    }
    expect(cli(['stream', '--source', p('changed.raw'), '--destination', 'null:']).stderr).toBe('');
  });

  it('--input-format is --source-format: a VHD file taken as raw bytes either way; the base is always detected', () => {
    expect(cli(['convert', p('changed.raw'), p('named.vhd')]).status).toBe(0);
    const size = fs.statSync(p('named.vhd')).size;
    for (const opt of ['--source-format', '--input-format']) {
      expect(json(['--source', p('named.vhd'), opt, 'raw', '--destination', 'null:'])).toMatchObject({ bytes: size, virtualSize: size });
    }
    expect(json(['--source', p('named.vhd'), '--destination', 'null:'])).toMatchObject({ virtualSize: 12 * MiB });
    expect(json(['--source', p('named.vhd'), '--input-format', 'vhd', '--relative-to', p('base.raw'), '--destination-format', 'chunked', '--destination', 'null:'])).toMatchObject({
      method: 'content',
    });
  });
});
