/**
 * `vhdsync stream` and `convert` from a pipe, checked by implementations nobody here wrote: qemu-img reads our VHD
 * streams, libvhdi (pyvhdi, vhdiinfo) reads our differencing streams with their base, and streams built byte for
 * byte as vhd-tool (`caml`, BAT at 2048) and Xen Orchestra (`xo  `, BAT at 1536) build them are read from a pipe.
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { BIN, cli, expectOneLineError } from '../helpers/cli.js';
import { makeTempDir } from '../helpers/tmp.js';
import { HAVE_QEMU, PYTHON_VHDI, pyvhdiRead, requireTool, run } from '../helpers/tools.js';

const MIB = 1 << 20;

/** Runs the CLI with `input` on stdin; returns status, stdout as bytes, stderr. */
function cliPipe(args: string[], input: Buffer): { status: number; stdout: Buffer; stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { input, maxBuffer: 1 << 28 });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr.toString() };
}

/** The VHD checksum: one's complement of the byte sum with the checksum field as zeros. */
function checksum(b: Buffer, at: number): number {
  let s = 0;
  for (let i = 0; i < b.length; i++) if (i < at || i >= at + 4) s += b[i];
  return ~s >>> 0;
}

/**
 * A VHD stream laid out as vhd-tool (`caml`: header at 512, BAT at 2048, timestamp 0, host OS 0) or Xen Orchestra
 * (`xo  `: BAT at 1536) writes it: ascending blocks of a 0xFF bitmap plus 2 MiB, then the same footer.
 */
function thirdPartyStream(creator: 'caml' | 'xo  ', size: number, blocks: Map<number, Buffer>): Buffer {
  const block = 2 * MIB;
  const entries = Math.ceil(size / block);
  const tableOffset = creator === 'caml' ? 2048 : 1536;
  const batLen = Math.ceil((entries * 4) / 512) * 512;
  const footer = Buffer.alloc(512);
  footer.write('conectix', 0, 'latin1');
  footer.writeUInt32BE(2, 8);
  footer.writeUInt32BE(0x10000, 12);
  footer.writeBigUInt64BE(512n, 16);
  footer.writeUInt32BE(creator === 'caml' ? 0 : 0x2a000000, 24);
  footer.write(creator, 28, 'latin1');
  footer.writeUInt32BE(creator === 'caml' ? 1 : 0x10000, 32);
  footer.writeUInt32BE(creator === 'caml' ? 0 : 0x5769326b, 36);
  footer.writeBigUInt64BE(BigInt(size), 40);
  footer.writeBigUInt64BE(BigInt(size), 48);
  // CHS of the spec's appendix for the 10 MiB + 1.5 KiB disk used here (20483 sectors: 301/4/17).
  if (size !== 10 * MIB + 1536) throw new Error('geometry below is for 10 MiB + 1536 bytes only');
  footer.writeUInt16BE(301, 56);
  footer[58] = 4;
  footer[59] = 17;
  footer.writeUInt32BE(3, 60);
  for (let i = 0; i < 16; i++) footer[68 + i] = (i * 37 + 11) & 0xff;
  footer.writeUInt32BE(checksum(footer, 64), 64);
  const header = Buffer.alloc(1024);
  header.write('cxsparse', 0, 'latin1');
  header.writeBigUInt64BE(0xffffffffffffffffn, 8);
  header.writeBigUInt64BE(BigInt(tableOffset), 16);
  header.writeUInt32BE(0x10000, 24);
  header.writeUInt32BE(entries, 28);
  header.writeUInt32BE(block, 32);
  header.writeUInt32BE(checksum(header, 36), 36);
  const bat = Buffer.alloc(batLen, 0xff);
  const indices = [...blocks.keys()].sort((a, b) => a - b);
  const first = tableOffset + batLen;
  indices.forEach((idx, j) => bat.writeUInt32BE((first + j * (512 + block)) / 512, idx * 4));
  const parts: Buffer[] = [footer, header, Buffer.alloc(tableOffset - 1536), bat];
  for (const idx of indices) parts.push(Buffer.alloc(512, 0xff), blocks.get(idx)!);
  parts.push(footer);
  return Buffer.concat(parts);
}

function randomBlock(): Buffer {
  return randomBytes(2 * MIB);
}

describe('stream', () => {
  let tmp: ReturnType<typeof makeTempDir>;
  const p = (n: string) => path.join(tmp.dir, n);
  beforeAll(() => (tmp = makeTempDir('stream-cli-')));
  afterAll(() => tmp.cleanup());

  it('a VHD image to a VHD stream file: qemu-img and vhdiinfo read it as the source; length as announced', () => {
    if (!requireTool(HAVE_QEMU, 'qemu-img')) return;
    run('qemu-img', ['create', '-q', '-f', 'raw', p('src.raw'), '21M']);
    run('qemu-io', ['-f', 'raw', '-c', 'write -P 0xab 1M 3M', '-c', 'write -P 0x11 17M 512', '-c', 'write -P 0x5a 20M 1M', p('src.raw')]);
    // The zero block (4-6 MiB written as zeros) must be left out.
    run('qemu-io', ['-f', 'raw', '-c', 'write -z 4M 2M', p('src.raw')]);
    const r = cli(['stream', '--source', p('src.raw'), '--destination-format', 'vhd', '--destination', p('out.vhd'), '--json']);
    expect(r.status).toBe(0);
    const j = JSON.parse(r.stdout);
    expect(j.format).toBe('vhd');
    expect(fs.statSync(p('out.vhd')).size).toBe(j.bytes);
    // Blocks 0, 1, 8, 10 hold data: 2048 + BAT(512) + 4 blocks + footer.
    expect(j.bytes).toBe(2048 + 512 + 4 * (512 + 2 * MIB) + 512);
    expect(run('qemu-img', ['compare', '-f', 'vpc', '-F', 'raw', p('out.vhd'), p('src.raw')]).toString()).toMatch(/identical/);
    if (PYTHON_VHDI) expect(pyvhdiRead(p('out.vhd')).equals(fs.readFileSync(p('src.raw')))).toBe(true);
    const n = cli(['stream', '--source', p('src.raw'), '--destination-format', 'vhd', '--destination', 'null:', '--json']);
    expect(JSON.parse(n.stdout).bytes).toBe(j.bytes);
    // Through a pipe, the same bytes but the footer's unique id and time stamp.
    const piped = spawnSync(process.execPath, [BIN, 'stream', '--source', p('src.raw'), '--destination-format', 'vhd', '--destination', '-'], { maxBuffer: 1 << 28 });
    expect(piped.stdout.length).toBe(j.bytes);
    const file = fs.readFileSync(p('out.vhd'));
    expect(piped.stdout.subarray(512, file.length - 512).equals(file.subarray(512, file.length - 512))).toBe(true);
  });

  it('a VHDX through a pipe (no seeks): qemu-img check finds no errors, qemu-img and libvhdi read the source; length as announced', () => {
    if (!requireTool(HAVE_QEMU, 'qemu-img')) return;
    run('sh', ['-c', `"$0" "$@" | cat > "${p('piped.vhdx')}"`, process.execPath, BIN, 'stream', '--source', p('src.raw'), '--destination-format', 'vhdx', '--destination', '-']);
    const j = JSON.parse(cli(['stream', '--source', p('src.raw'), '--destination-format', 'vhdx', '--destination', 'null:', '--json']).stdout);
    expect(j.format).toBe('vhdx');
    // Header section, log, metadata, BAT (1 MiB each), then the 4 blocks holding data, 2 MiB each.
    expect(j.bytes).toBe(4 * MIB + 4 * 2 * MIB);
    expect(fs.statSync(p('piped.vhdx')).size).toBe(j.bytes);
    expect(run('qemu-img', ['check', '-f', 'vhdx', p('piped.vhdx')]).toString()).toMatch(/No errors were found/);
    expect(run('qemu-img', ['compare', '-f', 'vhdx', '-F', 'raw', p('piped.vhdx'), p('src.raw')]).toString()).toMatch(/identical/);
    if (PYTHON_VHDI) expect(pyvhdiRead(p('piped.vhdx')).equals(fs.readFileSync(p('src.raw')))).toBe(true);
  });

  it('--progress=machine prints whole percentages, one per line, rising to 100', () => {
    if (!requireTool(HAVE_QEMU, 'qemu-img')) return;
    const r = cli(['stream', '--source', p('src.raw'), '--destination-format', 'vhd', '--destination', 'null:', '--progress=machine']);
    expect(r.status).toBe(0);
    const lines = r.stdout.trim().split('\n').map(Number);
    expect(lines.every((n, i) => Number.isInteger(n) && (i === 0 || n > lines[i - 1]))).toBe(true);
    expect(lines[0]).toBe(0);
    expect(lines[lines.length - 1]).toBe(100);
  });

  it('raw and chunked round trips through pipes, and convert from a pipe', () => {
    if (!requireTool(HAVE_QEMU, 'qemu-img')) return;
    const vhd = fs.readFileSync(p('out.vhd'));
    const raw = cliPipe(['stream', '--source', '-', '--destination', '-'], vhd);
    expect(raw.status).toBe(0);
    expect(raw.stdout.equals(fs.readFileSync(p('src.raw')))).toBe(true);
    const chunked = cliPipe(['stream', '--source', 'stdin:', '--destination-format', 'chunked', '--destination', 'stdout:'], vhd);
    expect(chunked.status).toBe(0);
    fs.writeFileSync(p('frames.bin'), chunked.stdout);
    const back = cli(['stream', '--source', p('frames.bin'), '--source-format', 'chunked', '--size', '21M', '--destination-format', 'vhdx', '--destination', `file://${p('back.vhdx')}`]);
    expect(back.status).toBe(0);
    expect(run('qemu-img', ['compare', '-f', 'vhdx', '-F', 'raw', p('back.vhdx'), p('src.raw')]).toString()).toMatch(/identical/);
    const conv = cliPipe(['convert', '-', p('conv.vhdx')], vhd);
    expect(conv.status).toBe(0);
    expect(run('qemu-img', ['compare', '-f', 'vhdx', '-F', 'raw', p('conv.vhdx'), p('src.raw')]).toString()).toMatch(/identical/);
  });

  it.each([['caml'], ['xo  ']] as const)('a VHD stream built as %s builds it is read from a pipe by convert and stream', (creator) => {
    if (!requireTool(HAVE_QEMU, 'qemu-img')) return;
    const size = 10 * MIB + 1536;
    const blocks = new Map([
      [0, randomBlock()],
      [3, randomBlock()],
      [5, randomBlock()],
    ]);
    const bytes = thirdPartyStream(creator, size, blocks);
    fs.writeFileSync(p('third.vhd'), bytes);
    const expected = Buffer.alloc(size);
    for (const [i, b] of blocks) b.copy(expected, i * 2 * MIB, 0, Math.min(2 * MIB, size - i * 2 * MIB));
    // qemu, told to trust current_size for these creators, agrees the file holds `expected`.
    fs.writeFileSync(p('expected.raw'), expected);
    expect(run('qemu-img', ['compare', '--image-opts', `driver=vpc,force_size_calc=current_size,file.filename=${p('third.vhd')}`, `driver=raw,file.filename=${p('expected.raw')}`]).toString()).toMatch(/identical/);
    const conv = cliPipe(['convert', '-', p(`third-${creator.trim()}.raw`)], bytes);
    expect(conv.stderr).toBe('');
    const got = fs.readFileSync(p(`third-${creator.trim()}.raw`));
    // current_size, tail included (decision 0005): not the CHS size qemu's default would give these creators.
    expect(got.length).toBe(size);
    expect(got.equals(expected)).toBe(true);
    const st = cliPipe(['stream', '--destination-format', 'vhd', '--destination', '-'], bytes);
    expect(st.status).toBe(0);
    fs.writeFileSync(p('restream.vhd'), st.stdout);
    expect(pyvhdiOrQemu(p('restream.vhd')).equals(expected)).toBe(true);
    // Into every other output format, from the pipe in one pass.
    const q = cliPipe(['stream', '--destination-format', 'qcow2', '--destination', '-'], bytes);
    expect(q.status).toBe(0);
    fs.writeFileSync(p('restream.qcow2'), q.stdout);
    expect(run('qemu-img', ['compare', '-f', 'qcow2', '-F', 'raw', p('restream.qcow2'), p('expected.raw')]).toString()).toMatch(/identical/);
    const x = cliPipe(['stream', '--destination-format', 'vhdx', '--destination', '-'], bytes);
    expect(x.status).toBe(0);
    fs.writeFileSync(p('restream.vhdx'), x.stdout);
    expect(run('qemu-img', ['compare', '-f', 'vhdx', '-F', 'raw', p('restream.vhdx'), p('expected.raw')]).toString()).toMatch(/identical/);
  });

  function pyvhdiOrQemu(file: string): Buffer {
    if (PYTHON_VHDI) return pyvhdiRead(file);
    run('qemu-img', ['convert', '-f', 'vpc', '-O', 'raw', file, file + '.raw']);
    return fs.readFileSync(file + '.raw');
  }

  it('--relative-to: a differencing VHD stream that libvhdi reads with its base as the source (allocation and content methods)', () => {
    if (!requireTool(HAVE_QEMU, 'qemu-img') || !requireTool(Boolean(PYTHON_VHDI), 'pyvhdi')) return;
    run('qemu-img', ['create', '-q', '-f', 'raw', p('base.raw'), '12M']);
    run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x31 0 5M', '-c', 'write -P 0x32 9M 1M', p('base.raw')]);
    expect(cli(['convert', p('base.raw'), p('base.vhd')]).status).toBe(0);
    expect(cli(['create', '--parent', p('base.vhd'), p('child.vhd')]).status).toBe(0);
    // Changes: new data, zeros over base data (must come out as zeros), one sector.
    run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x77 6M 1M', '-c', 'write -z 1M 1M', '-c', 'write -P 0x78 9M 512', p('base.raw')]);
    run('cp', [p('base.raw'), p('changed.raw')]);
    expect(cli(['convert', p('changed.raw'), p('changed.vhdx')]).status).toBe(0);
    const child = cli(['stream', '--source', p('changed.vhdx'), '--relative-to', p('base.vhd'), '--destination-format', 'vhd', '--destination', p('delta1.vhd'), '--json']);
    expect(child.status).toBe(0);
    expect(JSON.parse(child.stdout).method).toBe('content');
    expect(pyvhdiRead(p('delta1.vhd'), p('base.vhd')).equals(fs.readFileSync(p('changed.raw')))).toBe(true);
    // vhdsync's own reader finds the base through the stream's locator and flattens to the source.
    expect(cli(['convert', p('delta1.vhd'), p('flat.raw')]).status).toBe(0);
    expect(fs.readFileSync(p('flat.raw')).equals(fs.readFileSync(p('changed.raw')))).toBe(true);
    const info = run('vhdiinfo', [p('delta1.vhd')]).toString();
    expect(info).toMatch(/Differential/);
    // Allocation-based: the delta of a chain relative to its own base carries only the child's blocks.
    const alloc = cli(['stream', '--source', p('child.vhd'), '--relative-to', p('base.vhd'), '--destination-format', 'vhd', '--destination', 'null:', '--json']);
    expect(alloc.status).toBe(0);
    expect(JSON.parse(alloc.stdout)).toMatchObject({ method: 'allocation', format: 'vhd', bytes: 2048 + 512 + 512 });
  });

  it('bad input: one line, exit 1, nothing left under the final name', () => {
    const vhd = fs.readFileSync(p('out.vhd'));
    const cases: [Buffer, RegExp][] = [
      [vhd.subarray(0, vhd.length - 700), /truncated/],
      [Buffer.concat([vhd.subarray(0, vhd.length - 512), Buffer.alloc(512)]), /trailing VHD footer differs/],
    ];
    const swapped = Buffer.from(vhd);
    const e0 = swapped.readUInt32BE(2048);
    swapped.writeUInt32BE(swapped.readUInt32BE(2052), 2048);
    swapped.writeUInt32BE(e0, 2052);
    cases.push([swapped, /out of order/]);
    for (const [input, why] of cases) {
      for (const args of [['stream', '--destination-format', 'vhd', '--destination', p('bad.vhd')], ['convert', '-', p('bad.vhd')]]) {
        const r = cliPipe(args, input);
        expectOneLineError({ status: r.status, stdout: '', stderr: r.stderr }, 1, why);
        expect(fs.readdirSync(tmp.dir).filter((f) => f.includes('bad'))).toEqual([]);
      }
    }
    const past = Buffer.from(vhd);
    past.writeUInt32BE(0x7fff0, 2052);
    fs.writeFileSync(p('past.bin'), past);
    const r = cli(['stream', '--source', p('past.bin'), '--source-format', 'chunked', '--size', '1M', '--destination', p('bad.raw')]);
    expect(r.status).toBe(1);
    expectOneLineError(cliPipeText(['stream', '--destination', p('x.raw')], Buffer.from('hello world')), 2, /--source-format/);
  });

  function cliPipeText(args: string[], input: Buffer) {
    const r = cliPipe(args, input);
    return { status: r.status, stdout: r.stdout.toString(), stderr: r.stderr };
  }
});
